// Gas of every state-changing function of the four contracts, measured once in a realistic state and printed as
// a table. The test fails when a state-changing function of a deployable contract is not measured here.
const { expect } = require("chai");
const { ethers } = require("hardhat");
const { time } = require("@nomicfoundation/hardhat-network-helpers");
const H = require("./helpers");
const { ONE } = H;

describe("Gas of every external function", function () {
  it("measures each state-changing function once", async function () {
    const f = await H.deployAll();
    const { token, vault, registry, settlement, admin, stranger, clients, contributors } = f;
    const gas = {}; // "Contract.fn" -> { gas, note }
    const all = [
      ["ComputeToken", token],
      ["PaymentVault", vault],
      ["StakeRegistry", registry],
      ["EpochSettlement", settlement],
    ];
    async function measure(contract, fn, note, tx) {
      const receipt = await (await tx).wait();
      gas[`${contract}.${fn}`] = { gas: receipt.gasUsed, note };
    }
    const [c0, c1] = clients;
    const [k0] = contributors;

    // wiring
    await measure("PaymentVault", "setSettlement", "", vault.setSettlement(await settlement.getAddress()));
    await measure("EpochSettlement", "setVault", "", settlement.setVault(await vault.getAddress()));
    await measure("StakeRegistry", "setSettlement", "", registry.setSettlement(await settlement.getAddress()));

    // token
    await measure("ComputeToken", "mint", "to a holder", token.mint(c0.address, ONE));
    await measure("ComputeToken", "transfer", "to a holder", token.connect(c0).transfer(c1.address, ONE));
    await measure("ComputeToken", "approve", "new allowance", token.connect(c0).approve(stranger.address, ONE));
    await measure("ComputeToken", "transferFrom", "", token.connect(stranger).transferFrom(c0.address, c1.address, ONE));
    const deadline = (await H.latest()) + 3600n;
    const vaultAddr = await vault.getAddress();
    const permit = ethers.Signature.from(
      await stranger.signTypedData(await H.tokenDomain(await token.getAddress()), H.PERMIT_TYPES, {
        owner: stranger.address,
        spender: vaultAddr,
        value: ONE,
        nonce: 0n,
        deadline,
      })
    );
    await token.mint(stranger.address, 2n * ONE);
    await measure("ComputeToken", "permit", "", token.permit(stranger.address, vaultAddr, ONE, deadline, permit.v, permit.r, permit.s));
    for (const [name, c] of all) {
      const role = await c.DEFAULT_ADMIN_ROLE();
      await measure(name, "grantRole", "", c.grantRole(role, stranger.address));
      await measure(name, "revokeRole", "", c.revokeRole(role, stranger.address));
      await c.grantRole(role, stranger.address);
      await measure(name, "renounceRole", "", c.connect(stranger).renounceRole(role, stranger.address));
    }

    // vault
    await measure("PaymentVault", "deposit", "first deposit of the client", vault.connect(c0).deposit(100n * ONE));
    await measure("PaymentVault", "depositFor", "", vault.connect(c0).depositFor(c1.address, 100n * ONE));
    const d2 = (await H.latest()) + 3600n;
    const p2 = ethers.Signature.from(
      await stranger.signTypedData(await H.tokenDomain(await token.getAddress()), H.PERMIT_TYPES, {
        owner: stranger.address,
        spender: vaultAddr,
        value: 2n * ONE,
        nonce: 1n,
        deadline: d2,
      })
    );
    await measure("PaymentVault", "depositWithPermit", "", vault.connect(stranger).depositWithPermit(2n * ONE, d2, p2.v, p2.r, p2.s));
    await measure("PaymentVault", "redeem", "1 voucher, first for the client", vault.redeem([await H.redemption(vault, c0, 60n * ONE)]));
    await measure("PaymentVault", "requestWithdrawal", "", vault.connect(c1).requestWithdrawal(10n * ONE));
    await measure("PaymentVault", "cancelWithdrawal", "", vault.connect(c1).cancelWithdrawal());
    await vault.connect(c1).requestWithdrawal(10n * ONE);
    await time.increase(H.WITHDRAWAL_DELAY);
    await measure("PaymentVault", "withdraw", "partial", vault.connect(c1).withdraw());

    // registry
    await measure("StakeRegistry", "stake", "first stake", registry.connect(k0).stake(200n * ONE));
    const worker = ethers.Wallet.createRandom();
    await measure("StakeRegistry", "registerWorker", "", H.registerWorker(registry, k0, worker));
    const spare = ethers.Wallet.createRandom();
    await H.registerWorker(registry, k0, spare);
    await measure("StakeRegistry", "removeWorker", "", registry.connect(k0).removeWorker(spare.address));
    await measure("StakeRegistry", "requestUnbond", "first request", registry.connect(k0).requestUnbond(50n * ONE));

    // settlement
    const earnings = H.earningsTree(contributors.map((c, i) => [c.address, BigInt(i + 1) * 10n * ONE]));
    const job = ethers.id("job");
    const fp = ethers.id("fp");
    const [model, input] = [ethers.id("m"), ethers.id("i")];
    const results = H.resultsTree([
      [job, model, input, fp, ethers.id("consensus")],
      [ethers.id("job-2"), model, ethers.id("i-2"), fp, ethers.id("x")],
    ]);
    const post1 = settlement.postEpoch(1, earnings.root, results.root, ethers.id("f1"), 50n * ONE, 5n * ONE);
    await measure("EpochSettlement", "postEpoch", "first epoch", post1);
    await settlement.postEpoch(2, earnings.root, results.root, ethers.id("f2"), 50n * ONE, 5n * ONE);
    await measure("EpochSettlement", "veto", "", settlement.veto(2));
    await time.increase(H.CHALLENGE_WINDOW);
    const leaf = H.proofWhere(earnings, (v) => v[0] === k0.address);
    await measure("EpochSettlement", "claim", "4-leaf tree, first claim", settlement.claim(1, k0.address, leaf.value[1], leaf.proof));
    await measure("EpochSettlement", "claimFees", "first fees", settlement.claimFees(1));

    // slashing
    const att = { jobId: job, modelHash: model, inputHash: input, resultHash: ethers.id("wrong"), fingerprint: fp };
    const proof = H.proofWhere(results, (v) => v[0] === job).proof;
    await measure(
      "StakeRegistry",
      "slash",
      "bonded and unbonding stake, 2-leaf results tree",
      registry.slash(att, await H.signAttestation(worker, registry, att), 1, ethers.id("consensus"), proof)
    );
    await measure("StakeRegistry", "unjail", "", registry.unjail(worker.address));
    await time.increase(H.UNBONDING_DELAY);
    await measure("StakeRegistry", "withdrawUnbonded", "", registry.connect(k0).withdrawUnbonded());

    // every state-changing function of the four contracts is in the table
    for (const [name, c] of all) {
      for (const fr of c.interface.fragments) {
        if (fr.type === "function" && !fr.constant) expect(gas, `${name}.${fr.name} not measured`).to.have.property(`${name}.${fr.name}`);
      }
    }
    const rows = Object.entries(gas).map(([k, v]) => `      | ${k.padEnd(34)} | ${String(v.gas).padStart(7)} | ${v.note}`);
    console.log(["      | function                           |     gas | state", ...rows].join("\n"));
  });
});
