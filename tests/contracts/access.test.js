// Access control, generated from the ABIs: every state-changing function of every deployable contract under
// contracts/ (test-only contracts in contracts/test/ excepted) is called by a stranger with dummy arguments
// derived from its input types. A function must either revert with AccessControlUnauthorizedAccount for that
// stranger, or be named in PERMISSIONLESS below, a decision someone made on purpose. A new function is thus
// covered automatically and fails this test until it is either role-gated or added to the allow-list.
const fs = require("fs");
const path = require("path");
const { expect } = require("chai");
const hre = require("hardhat");
const { ethers } = hre;
const { loadFixture } = require("@nomicfoundation/hardhat-network-helpers");
const H = require("./helpers");

/** Functions anyone may call, with the reason; everything else must be role-gated. */
const PERMISSIONLESS = {
  ComputeToken: {
    transfer: "ERC-20: moves the caller's own tokens",
    approve: "ERC-20: sets the caller's own allowance",
    transferFrom: "ERC-20: bounded by an allowance the owner granted",
    permit: "EIP-2612: bounded by the owner's signature",
    renounceRole: "AccessControl: a caller can only drop its own roles",
  },
  PaymentVault: {
    deposit: "the caller pays in for itself",
    depositFor: "the caller pays in for a client",
    depositWithPermit: "the caller pays in for itself with a permit",
    requestWithdrawal: "acts on the caller's own deposit",
    cancelWithdrawal: "acts on the caller's own request",
    withdraw: "pays the caller's own request after the notice",
    renounceRole: "AccessControl: a caller can only drop its own roles",
  },
  StakeRegistry: {
    stake: "the caller stakes its own tokens",
    requestUnbond: "acts on the caller's own stake",
    withdrawUnbonded: "pays the caller's own unbonded stake",
    registerWorker: "the caller registers a key that signed for it",
    removeWorker: "only the worker's own contributor (checked inside)",
    slash: "the evidence, checked on chain, is the authority",
    renounceRole: "AccessControl: a caller can only drop its own roles",
  },
  EpochSettlement: {
    claim: "pays a proven leaf to its own account, whoever calls",
    claimFees: "pays the fixed treasury, whoever calls",
    renounceRole: "AccessControl: a caller can only drop its own roles",
  },
};

/** How to get a deployed instance of each deployable contract from the wired fixture. */
const INSTANCES = {
  ComputeToken: (f) => f.token,
  PaymentVault: (f) => f.vault,
  StakeRegistry: (f) => f.registry,
  EpochSettlement: (f) => f.settlement,
};

/** Deployable and abstract contracts under contracts/ (not contracts/test/), with their state-changing functions. */
function sourceContracts() {
  // mocha needs the test list synchronously, so the artifact files (written by the compile that `hardhat test`
  // runs first) are read from disk: artifacts/contracts/<Source>.sol/<Name>.json
  const files = [];
  const walk = (dir) => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.name.endsWith(".json") && !e.name.endsWith(".dbg.json")) files.push(p);
    }
  };
  walk(path.join(hre.config.paths.artifacts, "contracts"));
  const out = [];
  for (const file of files) {
    const a = JSON.parse(fs.readFileSync(file, "utf8"));
    if (!a.sourceName.startsWith("contracts/") || a.sourceName.startsWith("contracts/test/")) continue;
    const iface = new ethers.Interface(a.abi);
    const functions = iface.fragments.filter((f) => f.type === "function" && !f.constant);
    out.push({ name: a.contractName, deployable: a.bytecode !== "0x", functions });
  }
  return out;
}

/** A plausible dummy value for an ABI parameter type. */
function dummy(param, stranger) {
  switch (param.baseType) {
    case "address":
      return stranger;
    case "bool":
      return true;
    case "string":
      return "";
    case "bytes":
      return "0x";
    case "tuple":
      return param.components.map((c) => dummy(c, stranger));
    case "array":
      return param.arrayLength > 0 ? Array.from({ length: param.arrayLength }, () => dummy(param.arrayChildren, stranger)) : [];
    default:
      if (/^u?int\d*$/.test(param.baseType)) return 1n;
      if (/^bytes\d+$/.test(param.baseType)) return "0x" + "01".repeat(Number(param.baseType.slice(5)));
      throw new Error(`no dummy value for ${param.type}`);
  }
}

describe("Access control (generated from the ABIs)", function () {
  const contracts = sourceContracts();
  const deployable = contracts.filter((c) => c.deployable && c.functions.length > 0);

  async function fixture() {
    const f = await H.deployWired();
    return f;
  }

  it("finds the four contracts, and each deployable contract with state-changing functions has an instance", function () {
    expect(deployable.map((c) => c.name).sort()).to.include.members(Object.keys(INSTANCES));
    for (const c of deployable) expect(INSTANCES, `add ${c.name} to INSTANCES`).to.have.property(c.name);
  });

  it("the allow-list names only functions that exist and change state", function () {
    for (const [name, fns] of Object.entries(PERMISSIONLESS)) {
      const c = deployable.find((x) => x.name === name);
      expect(c, `${name} is not a deployable contract`).to.not.equal(undefined);
      for (const fn of Object.keys(fns)) {
        expect(c.functions.map((f) => f.name), `${name}.${fn} does not exist`).to.include(fn);
      }
    }
  });

  it("every state-changing function of an abstract base is reached through a deployable contract", function () {
    const reachable = new Set(deployable.flatMap((c) => c.functions.map((f) => f.format())));
    for (const c of contracts.filter((x) => !x.deployable)) {
      for (const f of c.functions) expect(reachable.has(f.format()), `${c.name}.${f.format()}`).to.equal(true);
    }
  });

  for (const c of deployable) {
    describe(c.name, function () {
      for (const fragment of c.functions) {
        const sig = fragment.format();
        const allowed = PERMISSIONLESS[c.name]?.[fragment.name];
        const title = allowed ? `${sig} is permissionless (${allowed}): not role-gated` : `${sig} refuses a stranger`;
        it(title, async function () {
          const f = await loadFixture(fixture);
          const contract = INSTANCES[c.name](f).connect(f.stranger);
          const args = fragment.inputs.map((p) => dummy(p, f.stranger.address));
          const call = contract.getFunction(sig);
          if (allowed) {
            await expect(call.staticCall(...args)).not.to.be.revertedWithCustomError(contract, "AccessControlUnauthorizedAccount");
            return;
          }
          const roles = [];
          for (const r of contract.interface.fragments) {
            if (r.type === "function" && r.constant && r.inputs.length === 0 && r.name.endsWith("_ROLE")) {
              roles.push(await contract.getFunction(r.name)());
            }
          }
          await expect(call(...args))
            .to.be.revertedWithCustomError(contract, "AccessControlUnauthorizedAccount")
            .withArgs(f.stranger.address, (role) => roles.includes(role));
        });
      }
    });
  }
});
