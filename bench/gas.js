// Gas benchmark of the inferledger contracts on Hardhat's in-process network (prints figures; not a test).
//
//   ./node_modules/.bin/hardhat run bench/gas.js      (or: make bench-gas)
//
// Part 1: gas of every state-changing external function, each measured once in a representative state.
// Part 2: gas per settled request for one epoch of R requests from C clients served by K contributors.
// Requests never touch the chain one by one: a client signs cumulative vouchers and the operator redeems one
// per client per epoch, so the gas depends on C and K, not on R. Two figures per scenario:
//   (a) operator: voucher redemptions in batches of 64, postEpoch (no slashes);
//   (b) all-in:   (a) plus every contributor claiming once and the treasury claiming its fees once.
// Each scenario runs two epochs: the first pays the one-off cost of new storage slots (the first totalRedeemed and
// lastEpoch, the first claim of each contributor: its claimedOf and its token balance); the second is the steady
// state every later epoch pays. Results and how to read them: docs/performance.md.
// Writes bench/results/gas.json.
const fs = require("fs");
const path = require("path");
const hre = require("hardhat");
const { StandardMerkleTree } = require("@openzeppelin/merkle-tree");

const { ethers, network } = hre;
// One definition of the shared constants and EIP-712 types: the contract tests' helpers.
const {
  ONE,
  CHALLENGE_WINDOW,
  WITHDRAWAL_DELAY,
  UNBONDING_DELAY,
  MIN_STAKE,
  SLASH_BPS,
  RESULT_TYPES,
  EARNING_TYPES,
  VOUCHER_TYPES,
  PERMIT_TYPES,
  REGISTRATION_TYPES,
  ATTESTATION_TYPES,
} = require("../tests/contracts/helpers");
const PRICE_WEI = ONE / 1000n; // what one request costs the client
const FEE_BPS = 1000n; // treasury share of each request
const BATCH = 64; // PaymentVault.MAX_REDEEM_BATCH
const SCENARIOS = [
  { requests: 1_000, clients: 10, contributors: 100 },
  { requests: 1_000, clients: 100, contributors: 100 },
  { requests: 10_000, clients: 10, contributors: 100 },
  { requests: 10_000, clients: 100, contributors: 100 },
];
const GOALS = { requests: 10_000, clients: 100, contributors: 100, operatorPerRequest: 200, allInPerRequest: 1_200 };

const h = (s) => ethers.keccak256(ethers.toUtf8Bytes(s));

/** A deterministic stream of wallets, so every run signs the same bytes (and pays the same calldata gas). */
function wallets(n, tag) {
  return Array.from({ length: n }, (_, i) => new ethers.Wallet(h(`inferledger bench ${tag} ${i}`)));
}

async function now() {
  return BigInt((await ethers.provider.getBlock("latest")).timestamp);
}

async function gasOf(txPromise) {
  const receipt = await (await txPromise).wait();
  return receipt.gasUsed;
}

async function domain(name, contract) {
  const { chainId } = await ethers.provider.getNetwork();
  return { name, version: "1", chainId, verifyingContract: await contract.getAddress() };
}

/** Deploys and wires the four contracts; `admin` is admin, settler, guardian and minter. */
async function deploy(admin, treasury, pool) {
  const factory = (name) => ethers.getContractFactory(name, admin);
  const token = await (await factory("ComputeToken")).deploy(admin.address);
  const t = await token.getAddress();
  const vault = await (await factory("PaymentVault")).deploy(t, admin.address, WITHDRAWAL_DELAY);
  const registry = await (await factory("StakeRegistry")).deploy(
    t, admin.address, MIN_STAKE, UNBONDING_DELAY, SLASH_BPS, pool.address
  );
  const settlement = await (await factory("EpochSettlement")).deploy(t, admin.address, treasury.address, CHALLENGE_WINDOW);
  const deployGas = {};
  for (const [name, c] of Object.entries({ ComputeToken: token, PaymentVault: vault, StakeRegistry: registry, EpochSettlement: settlement })) {
    deployGas[name] = (await c.deploymentTransaction().wait()).gasUsed;
  }
  const wiring = {
    "PaymentVault.setSettlement": await gasOf(vault.setSettlement(await settlement.getAddress())),
    "EpochSettlement.setVault": await gasOf(settlement.setVault(await vault.getAddress())),
    "StakeRegistry.setSettlement": await gasOf(registry.setSettlement(await settlement.getAddress())),
  };
  return { token, vault, registry, settlement, deployGas, wiring };
}

async function signRedemption(vault, wallet, cumulativeAmount, amount = cumulativeAmount) {
  const voucher = { client: wallet.address, cumulativeAmount, expiry: (await now()) + 86400n };
  const signature = await wallet.signTypedData(await domain("inferledger PaymentVault", vault), VOUCHER_TYPES, voucher);
  return { voucher, signature, amount };
}

/** Funds each client's deposit through depositFor from `admin` (deposits are not part of the figures). */
async function fund(token, vault, admin, clients, amountEach) {
  await token.mint(admin.address, amountEach * BigInt(clients.length));
  await token.approve(await vault.getAddress(), ethers.MaxUint256);
  for (const c of clients) await vault.depositFor(c.address, amountEach);
}

// ---------------------------------------------------------------------------------------------------------
// Part 1: every external function

async function measureFunctions() {
  const [admin, treasury, pool, stranger, c0, c1, k0, k1] = await ethers.getSigners();
  const s = await deploy(admin, treasury, pool);
  const { token, vault, registry, settlement } = s;
  const rows = [];
  const add = (fn, note, gas) => rows.push({ fn, note, gas: Number(gas) });
  for (const [name, gas] of Object.entries(s.deployGas)) add(`${name} (deploy)`, "", gas);
  for (const [fn, gas] of Object.entries(s.wiring)) add(fn, "once", gas);
  const vaultAddr = await vault.getAddress();
  const regAddr = await registry.getAddress();

  add("ComputeToken.mint", "to a new holder", await gasOf(token.mint(c0.address, 1_000n * ONE)));
  await token.mint(c1.address, 1_000n * ONE);
  add("ComputeToken.transfer", "to a new holder", await gasOf(token.connect(c0).transfer(stranger.address, ONE)));
  add("ComputeToken.approve", "new allowance", await gasOf(token.connect(c0).approve(vaultAddr, ethers.MaxUint256)));
  await token.connect(stranger).approve(c1.address, ONE);
  add("ComputeToken.transferFrom", "", await gasOf(token.connect(c1).transferFrom(stranger.address, c1.address, ONE)));
  const deadline = (await now()) + 3600n;
  const permitSig = ethers.Signature.from(
    await c1.signTypedData(await domain("inferledger Compute Token", token), PERMIT_TYPES, {
      owner: c1.address, spender: vaultAddr, value: 100n * ONE, nonce: 0n, deadline,
    })
  );

  add("PaymentVault.deposit", "first deposit of the client", await gasOf(vault.connect(c0).deposit(100n * ONE)));
  add("PaymentVault.deposit", "later deposit", await gasOf(vault.connect(c0).deposit(100n * ONE)));
  add("PaymentVault.depositFor", "", await gasOf(vault.connect(c0).depositFor(c1.address, 10n * ONE)));
  add("PaymentVault.depositWithPermit", "", await gasOf(
    vault.connect(c1).depositWithPermit(100n * ONE, deadline, permitSig.v, permitSig.r, permitSig.s)
  ));
  const w0 = new ethers.Wallet(h("bench part1 client"));
  await vault.connect(c0).depositFor(w0.address, 100n * ONE);
  add("PaymentVault.redeem", "1 voucher, first for the client", await gasOf(vault.redeem([await signRedemption(vault, w0, 10n * ONE)])));
  add("PaymentVault.redeem", "1 voucher, later", await gasOf(vault.redeem([await signRedemption(vault, w0, 20n * ONE)])));
  add("PaymentVault.redeem", "1 voucher already redeemed (skipped)", await gasOf(vault.redeem([await signRedemption(vault, w0, 20n * ONE)])));
  add("PaymentVault.requestWithdrawal", "", await gasOf(vault.connect(c1).requestWithdrawal(10n * ONE)));
  add("PaymentVault.cancelWithdrawal", "", await gasOf(vault.connect(c1).cancelWithdrawal()));
  await vault.connect(c1).requestWithdrawal(10n * ONE);
  await network.provider.send("evm_increaseTime", [Number(WITHDRAWAL_DELAY)]);
  add("PaymentVault.withdraw", "", await gasOf(vault.connect(c1).withdraw()));

  for (const k of [k0, k1]) {
    await token.mint(k.address, 1_000n * ONE);
    await token.connect(k).approve(regAddr, ethers.MaxUint256);
  }
  add("StakeRegistry.stake", "first stake", await gasOf(registry.connect(k0).stake(200n * ONE)));
  add("StakeRegistry.stake", "more stake", await gasOf(registry.connect(k0).stake(100n * ONE)));
  await registry.connect(k1).stake(200n * ONE);
  const workers = wallets(3, "part1 worker");
  const register = async (k, w) => {
    const d = (await now()) + 600n;
    const sig = await w.signTypedData(await domain("inferledger StakeRegistry", registry), REGISTRATION_TYPES, {
      worker: w.address, contributor: k.address, deadline: d,
    });
    return registry.connect(k).registerWorker(w.address, d, sig);
  };
  add("StakeRegistry.registerWorker", "", await gasOf(register(k0, workers[0])));
  await register(k0, workers[1]);
  add("StakeRegistry.removeWorker", "", await gasOf(registry.connect(k0).removeWorker(workers[1].address)));
  add("StakeRegistry.requestUnbond", "", await gasOf(registry.connect(k0).requestUnbond(50n * ONE)));
  await network.provider.send("evm_increaseTime", [Number(UNBONDING_DELAY)]);
  add("StakeRegistry.withdrawUnbonded", "", await gasOf(registry.connect(k0).withdrawUnbonded()));

  // An epoch with 100 earnings leaves and 100 results leaves.
  const accounts = wallets(100, "part1 contributor").map((w) => w.address);
  const earnings = StandardMerkleTree.of(accounts.map((a, i) => [a, ONE / 100n + BigInt(i)]), EARNING_TYPES);
  const jobs = Array.from({ length: 100 }, (_, i) => [h(`job ${i}`), h("model"), h(`input ${i}`), h("fp"), h(`result ${i}`)]);
  const results = StandardMerkleTree.of(jobs, RESULT_TYPES);
  const payout = accounts.reduce((sum, _, i) => sum + ONE / 100n + BigInt(i), 0n);
  await vault.connect(c0).depositFor(w0.address, 50n * ONE);
  await vault.redeem([await signRedemption(vault, w0, 40n * ONE)]);
  add("EpochSettlement.postEpoch", "first epoch", await gasOf(settlement.postEpoch(1, earnings.root, results.root, h("file 1"), payout, ONE)));
  add("EpochSettlement.veto", "", await gasOf(settlement.veto(1)));
  add("EpochSettlement.postEpoch", "re-post of the vetoed epoch", await gasOf(settlement.postEpoch(1, earnings.root, results.root, h("file 1b"), payout, ONE)));
  await network.provider.send("evm_increaseTime", [Number(CHALLENGE_WINDOW)]);
  await network.provider.send("evm_mine", []);
  add("EpochSettlement.claim", "100-leaf tree, first claim", await gasOf(settlement.claim(1, accounts[0], ONE / 100n, earnings.getProof(0))));
  add("EpochSettlement.claimFees", "", await gasOf(settlement.claimFees(1)));
  const earnings2 = StandardMerkleTree.of(accounts.map((a, i) => [a, ONE / 50n + BigInt(i)]), EARNING_TYPES);
  add("EpochSettlement.postEpoch", "later epoch", await gasOf(settlement.postEpoch(2, earnings2.root, results.root, h("file 2"), 2n * payout, ONE)));
  await network.provider.send("evm_increaseTime", [Number(CHALLENGE_WINDOW)]);
  await network.provider.send("evm_mine", []);
  add("EpochSettlement.claim", "100-leaf tree, later claim", await gasOf(settlement.claim(2, accounts[0], ONE / 50n, earnings2.getProof(0))));

  // Slash worker 0 of k0: it attests a result that differs from job 0's consensus in finalized epoch 2.
  const [jobId, modelHash, inputHash, fingerprint, consensus] = jobs[0];
  const att = { jobId, modelHash, inputHash, resultHash: h("wrong"), fingerprint };
  const attSig = await workers[0].signTypedData(await domain("inferledger StakeRegistry", registry), ATTESTATION_TYPES, att);
  add("StakeRegistry.slash", "100-leaf results tree", await gasOf(registry.connect(stranger).slash(att, attSig, 2, consensus, results.getProof(0))));
  add("StakeRegistry.unjail", "", await gasOf(registry.unjail(workers[0].address)));

  const role = await vault.DEFAULT_ADMIN_ROLE();
  add("AccessControl.grantRole", "any of the four", await gasOf(vault.grantRole(role, stranger.address)));
  add("AccessControl.revokeRole", "any of the four", await gasOf(vault.revokeRole(role, stranger.address)));
  await vault.grantRole(role, stranger.address);
  add("AccessControl.renounceRole", "any of the four", await gasOf(vault.connect(stranger).renounceRole(role, stranger.address)));
  return rows;
}

// ---------------------------------------------------------------------------------------------------------
// Part 2: gas per settled request

/** Spreads `requests` over clients and contributors round-robin; returns per-client charges and per-contributor earnings. */
function spread(requests, nClients, nContributors) {
  const charged = new Array(nClients).fill(0n);
  const earned = new Array(nContributors).fill(0n);
  const fee = (PRICE_WEI * FEE_BPS) / 10_000n;
  for (let i = 0; i < requests; i++) {
    charged[i % nClients] += PRICE_WEI;
    earned[i % nContributors] += PRICE_WEI - fee;
  }
  return { charged, earned, fees: fee * BigInt(requests) };
}

async function runEpoch(s, st, epoch, requests) {
  const { vault, settlement } = s;
  const { charged, earned, fees } = spread(requests, st.clients.length, st.contributors.length);
  let operator = 0n;
  let redeemTxs = 0;
  const items = [];
  for (let c = 0; c < st.clients.length; c++) {
    st.charged[c] += charged[c];
    items.push(await signRedemption(vault, st.clients[c], st.charged[c]));
  }
  for (let i = 0; i < items.length; i += BATCH) {
    operator += await gasOf(vault.redeem(items.slice(i, i + BATCH)));
    redeemTxs++;
  }
  for (let k = 0; k < st.contributors.length; k++) st.earned[k] += earned[k];
  st.payout += earned.reduce((a, b) => a + b, 0n);
  st.fees += fees;
  const tree = StandardMerkleTree.of(st.contributors.map((a, k) => [a, st.earned[k]]), EARNING_TYPES);
  // One results leaf per request (job): the root is one word on chain whatever the number of jobs.
  const jobs = Array.from({ length: requests }, (_, i) => {
    const jobId = h(`epoch ${epoch} job ${i}`);
    return [jobId, h("model"), jobId, h("fp"), jobId];
  });
  const results = StandardMerkleTree.of(jobs, RESULT_TYPES);
  const postGas = await gasOf(settlement.postEpoch(epoch, tree.root, results.root, h(`file ${epoch}`), st.payout, st.fees));
  operator += postGas;
  await network.provider.send("evm_increaseTime", [Number(CHALLENGE_WINDOW)]);
  await network.provider.send("evm_mine", []);
  let claims = 0n;
  for (const [i, [account, amount]] of tree.entries()) {
    claims += await gasOf(settlement.claim(epoch, account, amount, tree.getProof(i)));
  }
  const feesGas = await gasOf(settlement.claimFees(epoch));
  claims += feesGas;
  return { operator, redeemTxs, postGas, claims, feesGas, allIn: operator + claims };
}

async function measureScenario(sc) {
  const [admin, treasury, pool] = await ethers.getSigners();
  const s = await deploy(admin, treasury, pool);
  const clients = wallets(sc.clients, "client");
  const contributors = wallets(sc.contributors, "contributor").map((w) => w.address);
  await fund(s.token, s.vault, admin, clients, 1_000_000n * ONE);
  const st = {
    clients, contributors, payout: 0n, fees: 0n,
    charged: new Array(sc.clients).fill(0n), earned: new Array(sc.contributors).fill(0n),
  };
  const first = await runEpoch(s, st, 1, sc.requests);
  const steady = await runEpoch(s, st, 2, sc.requests);
  const per = (gas) => Number(gas) / sc.requests;
  const row = (e) => ({
    operatorGas: Number(e.operator), redeemTxs: e.redeemTxs, postEpochGas: Number(e.postGas),
    redeemGasPerClient: Number(e.operator - e.postGas) / sc.clients,
    claimsGas: Number(e.claims), claimGasPerContributor: Number(e.claims - e.feesGas) / sc.contributors,
    claimFeesGas: Number(e.feesGas), allInGas: Number(e.allIn),
    operatorPerRequest: per(e.operator), allInPerRequest: per(e.allIn),
  });
  return { ...sc, firstEpoch: row(first), steadyEpoch: row(steady) };
}

// ---------------------------------------------------------------------------------------------------------

function pad(v, n, left = false) {
  const t = String(v);
  return left ? t.padEnd(n) : t.padStart(n);
}

async function main() {
  const started = Date.now();
  const snapshot = await network.provider.send("evm_snapshot", []);
  const functions = await measureFunctions();
  await network.provider.send("evm_revert", [snapshot]);

  console.log("Gas of each external function (Hardhat in-process network, receipt gasUsed incl. 21,000 base)");
  for (const r of functions) console.log(`  ${pad(r.fn, 34, true)} ${pad(r.gas.toLocaleString("en-US"), 10)}  ${r.note}`);

  const scenarios = [];
  for (const sc of SCENARIOS) {
    const snap = await network.provider.send("evm_snapshot", []);
    scenarios.push(await measureScenario(sc));
    await network.provider.send("evm_revert", [snap]);
  }
  console.log("\nGas per settled request, one epoch (a: operator = redeem batches of 64 + postEpoch; b: all-in = a + every contributor claims once + claimFees)");
  console.log(
    "  requests clients contrib | epoch  | redeem/client postEpoch claim/contrib |  operator gas  a/request |  all-in gas  b/request"
  );
  const n = (v) => Math.round(v).toLocaleString("en-US");
  for (const r of scenarios) {
    for (const [label, e] of [["first", r.firstEpoch], ["steady", r.steadyEpoch]]) {
      console.log(
        `  ${pad(r.requests, 8)} ${pad(r.clients, 7)} ${pad(r.contributors, 7)} | ${pad(label, 6, true)} | ` +
        `${pad(n(e.redeemGasPerClient), 13)} ${pad(n(e.postEpochGas), 9)} ${pad(n(e.claimGasPerContributor), 13)} | ` +
        `${pad(n(e.operatorGas), 13)} ${pad(e.operatorPerRequest.toFixed(1), 10)} | ` +
        `${pad(n(e.allInGas), 11)} ${pad(e.allInPerRequest.toFixed(1), 10)}`
      );
    }
  }
  const goal = scenarios.find((r) => r.requests === GOALS.requests && r.clients === GOALS.clients && r.contributors === GOALS.contributors);
  const verdict = (v, limit) => (v <= limit ? "met" : "MISSED");
  const goals = {};
  for (const label of ["firstEpoch", "steadyEpoch"]) {
    const e = goal[label];
    goals[label] = {
      operatorPerRequest: e.operatorPerRequest, operatorGoal: GOALS.operatorPerRequest,
      operatorVerdict: verdict(e.operatorPerRequest, GOALS.operatorPerRequest),
      allInPerRequest: e.allInPerRequest, allInGoal: GOALS.allInPerRequest,
      allInVerdict: verdict(e.allInPerRequest, GOALS.allInPerRequest),
    };
  }
  console.log(
    `\nGoals at ${GOALS.requests.toLocaleString("en-US")} requests, ${GOALS.clients} clients, ${GOALS.contributors} contributors:` +
    ` (a) <= ${GOALS.operatorPerRequest}, (b) <= ${GOALS.allInPerRequest} gas/request`
  );
  for (const [label, g] of Object.entries(goals)) {
    console.log(
      `  ${pad(label, 12, true)} (a) ${g.operatorPerRequest.toFixed(1)} ${g.operatorVerdict}   (b) ${g.allInPerRequest.toFixed(1)} ${g.allInVerdict}`
    );
  }

  const out = {
    generated_by: "bench/gas.js",
    network: { name: network.name, hardfork: network.config.hardfork, evmVersion: hre.config.solidity.compilers[0].settings.evmVersion },
    solc: hre.config.solidity.compilers[0].version,
    optimizer: hre.config.solidity.compilers[0].settings.optimizer,
    assumptions: {
      priceWeiPerRequest: PRICE_WEI.toString(), feeBps: Number(FEE_BPS), redeemBatch: BATCH, slashes: 0,
      gas: "receipt gasUsed, including the 21,000 base cost and calldata of each transaction",
      deposits: "not counted (client transactions, independent of requests)",
    },
    functions,
    scenarios,
    goals,
    wallSeconds: (Date.now() - started) / 1000,
  };
  const file = path.join(__dirname, "results", "gas.json");
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, JSON.stringify(out, null, 2) + "\n");
  console.log(`\nwrote ${path.relative(process.cwd(), file)} in ${out.wallSeconds.toFixed(1)} s`);
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
