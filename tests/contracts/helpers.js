// Shared deployment fixture and EIP-712 helpers for the contract tests (no tests here).
const { ethers } = require("hardhat");

const ONE = 10n ** 18n;
const SECP256K1_N = 0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141n;
const MIN_STAKE = 100n * ONE;
const CHALLENGE_WINDOW = 3600n;

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

/** Deploys token, vault, registry and settlement, wired together, with balances for clients. */
async function deployAll() {
  const [admin, stranger, treasury, ...rest] = await ethers.getSigners();
  const clients = rest.slice(0, 4);
  const contributors = rest.slice(4, 8);
  const Token = await ethers.getContractFactory("ComputeToken");
  const token = await Token.deploy(admin.address);
  const Vault = await ethers.getContractFactory("PaymentVault");
  const vault = await Vault.deploy(await token.getAddress(), admin.address);
  const Registry = await ethers.getContractFactory("StakeRegistry");
  const registry = await Registry.deploy(await token.getAddress(), admin.address, MIN_STAKE);
  const Settlement = await ethers.getContractFactory("EpochSettlement");
  const settlement = await Settlement.deploy(await token.getAddress(), admin.address, treasury.address, CHALLENGE_WINDOW);
  for (const a of [...clients, ...contributors]) {
    await token.mint(a.address, 1000n * ONE);
    await token.connect(a).approve(await vault.getAddress(), ethers.MaxUint256);
    await token.connect(a).approve(await registry.getAddress(), ethers.MaxUint256);
  }
  return { token, vault, registry, settlement, admin, stranger, treasury, clients, contributors };
}

/** deployAll plus vault <-> settlement wiring. */
async function deployWired() {
  const f = await deployAll();
  await f.vault.setSettlement(await f.settlement.getAddress());
  await f.settlement.setVault(await f.vault.getAddress());
  return f;
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
};
