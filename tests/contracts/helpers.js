// Shared deployment fixture and EIP-712 helpers for the contract tests (no tests here).
const { ethers } = require("hardhat");
const { StandardMerkleTree } = require("@openzeppelin/merkle-tree");

const ONE = 10n ** 18n;
const SECP256K1_N = 0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141n;
const MIN_STAKE = 100n * ONE;
const CHALLENGE_WINDOW = 3600n;
const WITHDRAWAL_DELAY = 86400n;
const UNBONDING_DELAY = 7n * 86400n;
const SLASH_BPS = 1000n;
// results leaf: (jobId, modelHash, inputHash, fingerprint, resultHash)
const RESULT_TYPES = ["bytes32", "bytes32", "bytes32", "bytes32", "bytes32"];
const EARNING_TYPES = ["address", "uint256"];

const VOUCHER_TYPES = {
  Voucher: [
    { name: "client", type: "address" },
    { name: "cumulativeAmount", type: "uint256" },
    { name: "expiry", type: "uint256" },
  ],
};
const ATTESTATION_TYPES = {
  Attestation: [
    { name: "jobId", type: "bytes32" },
    { name: "modelHash", type: "bytes32" },
    { name: "inputHash", type: "bytes32" },
    { name: "resultHash", type: "bytes32" },
    { name: "fingerprint", type: "bytes32" },
  ],
};
const REGISTRATION_TYPES = {
  WorkerRegistration: [
    { name: "worker", type: "address" },
    { name: "contributor", type: "address" },
    { name: "deadline", type: "uint256" },
  ],
};
const PERMIT_TYPES = {
  Permit: [
    { name: "owner", type: "address" },
    { name: "spender", type: "address" },
    { name: "value", type: "uint256" },
    { name: "nonce", type: "uint256" },
    { name: "deadline", type: "uint256" },
  ],
};

async function chainId() {
  return (await ethers.provider.getNetwork()).chainId;
}

async function vaultDomain(vaultAddress, overrideChainId) {
  return {
    name: "inferledger PaymentVault",
    version: "1",
    chainId: overrideChainId ?? (await chainId()),
    verifyingContract: vaultAddress,
  };
}

async function registryDomain(registryAddress) {
  return { name: "inferledger StakeRegistry", version: "1", chainId: await chainId(), verifyingContract: registryAddress };
}

async function tokenDomain(tokenAddress) {
  return { name: "inferledger Compute Token", version: "1", chainId: await chainId(), verifyingContract: tokenAddress };
}

/** Signs a voucher with ethers signTypedData under the vault domain (optionally another chain id). */
async function signVoucher(signer, vaultAddress, voucher, overrideChainId) {
  return signer.signTypedData(await vaultDomain(vaultAddress, overrideChainId), VOUCHER_TYPES, voucher);
}

/** Turns a 65-byte signature into its malleable high-s twin (same signer, s' = n - s, v flipped). */
function toHighS(signature) {
  const sig = ethers.Signature.from(signature);
  const highS = SECP256K1_N - BigInt(sig.s);
  const v = sig.v === 27 ? 28 : 27;
  return {
    signature: ethers.concat([sig.r, ethers.toBeHex(highS, 32), ethers.toBeHex(v, 1)]),
    s: ethers.toBeHex(highS, 32),
  };
}

async function latest() {
  return BigInt((await ethers.provider.getBlock("latest")).timestamp);
}

/**
 * Deploys token, vault, registry and settlement (not wired), with balances and approvals for clients and
 * contributors. `opts.token` is "ComputeToken" (default) or "ReentrantToken"; `opts.slashBps` overrides SLASH_BPS.
 */
async function deployAll(opts = {}) {
  const [admin, stranger, treasury, ...rest] = await ethers.getSigners();
  const clients = rest.slice(0, 4);
  const contributors = rest.slice(4, 8);
  const pool = rest[8];
  const tokenName = opts.token ?? "ComputeToken";
  const Token = await ethers.getContractFactory(tokenName);
  const token = tokenName === "ComputeToken" ? await Token.deploy(admin.address) : await Token.deploy();
  const t = await token.getAddress();
  const vault = await (await ethers.getContractFactory("PaymentVault")).deploy(t, admin.address, WITHDRAWAL_DELAY);
  const registry = await (await ethers.getContractFactory("StakeRegistry")).deploy(
    t,
    admin.address,
    MIN_STAKE,
    UNBONDING_DELAY,
    opts.slashBps ?? SLASH_BPS,
    pool.address
  );
  const Settlement = await ethers.getContractFactory("EpochSettlement");
  const settlement = await Settlement.deploy(t, admin.address, treasury.address, CHALLENGE_WINDOW);
  for (const a of [...clients, ...contributors]) {
    await token.mint(a.address, 1000n * ONE);
    await token.connect(a).approve(await vault.getAddress(), ethers.MaxUint256);
    await token.connect(a).approve(await registry.getAddress(), ethers.MaxUint256);
  }
  return { token, vault, registry, settlement, admin, stranger, treasury, pool, clients, contributors };
}

/** deployAll plus vault <-> settlement and registry -> settlement wiring. */
async function deployWired(opts = {}) {
  const f = await deployAll(opts);
  await f.vault.setSettlement(await f.settlement.getAddress());
  await f.settlement.setVault(await f.vault.getAddress());
  await f.registry.setSettlement(await f.settlement.getAddress());
  return f;
}

/** Signs a worker registration of `key` to `contributor` and registers it from `contributor`. */
async function registerWorker(registry, contributor, key) {
  const deadline = (await latest()) + 600n;
  const signature = await key.signTypedData(await registryDomain(await registry.getAddress()), REGISTRATION_TYPES, {
    worker: key.address,
    contributor: contributor.address,
    deadline,
  });
  return registry.connect(contributor).registerWorker(key.address, deadline, signature);
}

/** Signs an attestation with a worker key under the registry domain. */
async function signAttestation(key, registry, attestation) {
  return key.signTypedData(await registryDomain(await registry.getAddress()), ATTESTATION_TYPES, attestation);
}

/** An OpenZeppelin StandardMerkleTree of (jobId, modelHash, inputHash, fingerprint, resultHash) results leaves. */
function resultsTree(entries) {
  return StandardMerkleTree.of(entries, RESULT_TYPES);
}

/** An OpenZeppelin StandardMerkleTree of (account, cumulativeAmount) earnings leaves. */
function earningsTree(entries) {
  return StandardMerkleTree.of(entries, EARNING_TYPES);
}

/** The proof of the first leaf of `tree` whose values satisfy `pred`. */
function proofWhere(tree, pred) {
  for (const [i, v] of tree.entries()) if (pred(v)) return { value: v, proof: tree.getProof(i) };
  throw new Error("no such leaf");
}

/** Block timestamp of a mined transaction. */
async function txTime(tx) {
  const receipt = await (await tx).wait();
  return BigInt((await ethers.provider.getBlock(receipt.blockNumber)).timestamp);
}

/** Decodes the revert data a ReentrantToken recorded and returns the error name. */
function reentryError(contract, data) {
  return contract.interface.parseError(data)?.name;
}

/** Builds a signed redemption for `client` charging `amount` of a voucher for `cumulativeAmount`. */
async function redemption(vault, client, cumulativeAmount, amount = cumulativeAmount, expiry) {
  const voucher = {
    client: client.address,
    cumulativeAmount,
    expiry: expiry ?? (await latest()) + 86400n,
  };
  const signature = await signVoucher(client, await vault.getAddress(), voucher);
  return { voucher, signature, amount };
}

module.exports = {
  ONE,
  SECP256K1_N,
  MIN_STAKE,
  CHALLENGE_WINDOW,
  WITHDRAWAL_DELAY,
  UNBONDING_DELAY,
  SLASH_BPS,
  RESULT_TYPES,
  EARNING_TYPES,
  VOUCHER_TYPES,
  ATTESTATION_TYPES,
  REGISTRATION_TYPES,
  PERMIT_TYPES,
  chainId,
  vaultDomain,
  registryDomain,
  tokenDomain,
  signVoucher,
  toHighS,
  latest,
  deployAll,
  deployWired,
  redemption,
  registerWorker,
  signAttestation,
  resultsTree,
  earningsTree,
  proofWhere,
  txTime,
  reentryError,
};
