const { expect } = require("chai");
const { ethers } = require("hardhat");
const { loadFixture } = require("@nomicfoundation/hardhat-network-helpers");
const H = require("./helpers");
const { ONE, MIN_STAKE } = H;

describe("StakeRegistry", function () {
  async function deployed() {
    const f = await H.deployAll();
    f.worker = ethers.Wallet.createRandom();
    f.otherKey = ethers.Wallet.createRandom();
    return f;
  }

  async function staked() {
    const f = await deployed();
    await f.registry.connect(f.contributors[0]).stake(MIN_STAKE);
    return f;
  }

  async function signRegistration(registry, key, worker, contributor, deadline) {
    return key.signTypedData(await H.registryDomain(await registry.getAddress()), H.REGISTRATION_TYPES, {
      worker,
      contributor,
      deadline,
    });
  }

  const attestation = {
    jobId: ethers.id("job-1"),
    modelHash: ethers.id("model"),
    inputHash: ethers.id("input"),
    resultHash: ethers.id("result"),
    fingerprint: ethers.id("fingerprint"),
  };

  describe("deployment and views", function () {
    it("exposes token, minStake, roles, type hashes and an EIP-712 domain matching ethers", async function () {
      const { token, registry, admin } = await loadFixture(deployed);
      expect(await registry.token()).to.equal(await token.getAddress());
      expect(await registry.minStake()).to.equal(MIN_STAKE);
      expect(await registry.hasRole(await registry.DEFAULT_ADMIN_ROLE(), admin.address)).to.equal(true);
      expect(await registry.ATTESTATION_TYPEHASH()).to.equal(
        ethers.id("Attestation(bytes32 jobId,bytes32 modelHash,bytes32 inputHash,bytes32 resultHash,bytes32 fingerprint)")
      );
      expect(await registry.WORKER_REGISTRATION_TYPEHASH()).to.equal(
        ethers.id("WorkerRegistration(address worker,address contributor,uint256 deadline)")
      );
      const domain = await H.registryDomain(await registry.getAddress());
      expect(await registry.domainSeparator()).to.equal(ethers.TypedDataEncoder.hashDomain(domain));
    });

    it("constructor refuses zero addresses", async function () {
      const { token, admin, registry } = await loadFixture(deployed);
      const F = await ethers.getContractFactory("StakeRegistry");
      await expect(F.deploy(ethers.ZeroAddress, admin.address, 1n)).to.be.revertedWithCustomError(registry, "StakeZeroAddress");
      await expect(F.deploy(await token.getAddress(), ethers.ZeroAddress, 1n)).to.be.revertedWithCustomError(
        registry,
        "StakeZeroAddress"
      );
    });

    it("hashAttestation and recoverAttestationSigner match ethers signTypedData", async function () {
      const { registry, worker } = await loadFixture(deployed);
      const domain = await H.registryDomain(await registry.getAddress());
      expect(await registry.hashAttestation(attestation)).to.equal(
        ethers.TypedDataEncoder.hash(domain, H.ATTESTATION_TYPES, attestation)
      );
      const sig = await worker.signTypedData(domain, H.ATTESTATION_TYPES, attestation);
      expect(await registry.recoverAttestationSigner(attestation, sig)).to.equal(worker.address);
      const tampered = { ...attestation, resultHash: ethers.id("other result") };
      expect(await registry.recoverAttestationSigner(tampered, sig)).to.not.equal(worker.address);
    });

    it("recoverAttestationSigner rejects high-s and malformed signatures", async function () {
      const { registry, worker } = await loadFixture(deployed);
      const domain = await H.registryDomain(await registry.getAddress());
      const sig = await worker.signTypedData(domain, H.ATTESTATION_TYPES, attestation);
      const { signature, s } = H.toHighS(sig);
      await expect(registry.recoverAttestationSigner(attestation, signature))
        .to.be.revertedWithCustomError(registry, "ECDSAInvalidSignatureS")
        .withArgs(s);
      await expect(registry.recoverAttestationSigner(attestation, "0x1234"))
        .to.be.revertedWithCustomError(registry, "ECDSAInvalidSignatureLength")
        .withArgs(2n);
    });

    it("hashWorkerRegistration matches ethers", async function () {
      const { registry, worker, contributors } = await loadFixture(deployed);
      const domain = await H.registryDomain(await registry.getAddress());
      const value = { worker: worker.address, contributor: contributors[0].address, deadline: 99n };
      expect(await registry.hashWorkerRegistration(value.worker, value.contributor, value.deadline)).to.equal(
        ethers.TypedDataEncoder.hash(domain, H.REGISTRATION_TYPES, value)
      );
    });

    it("only the admin can grant roles", async function () {
      const { registry, stranger } = await loadFixture(deployed);
      const role = await registry.DEFAULT_ADMIN_ROLE();
      await expect(registry.connect(stranger).grantRole(role, stranger.address))
        .to.be.revertedWithCustomError(registry, "AccessControlUnauthorizedAccount")
        .withArgs(stranger.address, role);
    });
  });

  describe("stake", function () {
    it("pulls tokens and accumulates", async function () {
      const { token, registry, contributors } = await loadFixture(deployed);
      const [c] = contributors;
      const tx = registry.connect(c).stake(60n * ONE);
      await expect(tx).to.emit(registry, "Staked").withArgs(c.address, 60n * ONE, 60n * ONE);
      await expect(tx).to.changeTokenBalances(token, [c, registry], [-60n * ONE, 60n * ONE]);
      await expect(registry.connect(c).stake(40n * ONE)).to.emit(registry, "Staked").withArgs(c.address, 40n * ONE, MIN_STAKE);
      expect(await registry.stakeOf(c.address)).to.equal(MIN_STAKE);
    });

    it("refuses zero", async function () {
      const { registry, contributors } = await loadFixture(deployed);
      await expect(registry.connect(contributors[0]).stake(0)).to.be.revertedWithCustomError(registry, "StakeZeroAmount");
    });
  });

  describe("registerWorker", function () {
    it("registers a worker with the device's signature", async function () {
      const { registry, contributors, worker } = await loadFixture(staked);
      const [c] = contributors;
      const deadline = (await H.latest()) + 600n;
      const sig = await signRegistration(registry, worker, worker.address, c.address, deadline);
      expect(await registry.isEligible(worker.address)).to.equal(false);
      await expect(registry.connect(c).registerWorker(worker.address, deadline, sig))
        .to.emit(registry, "WorkerRegistered")
        .withArgs(c.address, worker.address);
      expect(await registry.workerOwner(worker.address)).to.equal(c.address);
      expect(await registry.isEligible(worker.address)).to.equal(true);
    });

    it("refuses a signature from another key", async function () {
      const { registry, contributors, worker, otherKey } = await loadFixture(staked);
      const [c] = contributors;
      const deadline = (await H.latest()) + 600n;
      const sig = await signRegistration(registry, otherKey, worker.address, c.address, deadline);
      await expect(registry.connect(c).registerWorker(worker.address, deadline, sig))
        .to.be.revertedWithCustomError(registry, "StakeBadWorkerSignature")
        .withArgs(worker.address, otherKey.address);
    });

    it("refuses a signature made out to another contributor", async function () {
      const { registry, contributors, worker } = await loadFixture(staked);
      const [c, thief] = contributors;
      await registry.connect(thief).stake(MIN_STAKE);
      const deadline = (await H.latest()) + 600n;
      const sig = await signRegistration(registry, worker, worker.address, c.address, deadline);
      const recovered = ethers.recoverAddress(
        await registry.hashWorkerRegistration(worker.address, thief.address, deadline),
        sig
      );
      await expect(registry.connect(thief).registerWorker(worker.address, deadline, sig))
        .to.be.revertedWithCustomError(registry, "StakeBadWorkerSignature")
        .withArgs(worker.address, recovered);
    });

    it("refuses an expired registration", async function () {
      const { registry, contributors, worker } = await loadFixture(staked);
      const [c] = contributors;
      const deadline = (await H.latest()) - 1n;
      const sig = await signRegistration(registry, worker, worker.address, c.address, deadline);
      await expect(registry.connect(c).registerWorker(worker.address, deadline, sig))
        .to.be.revertedWithCustomError(registry, "StakeRegistrationExpired")
        .withArgs(deadline);
    });

    it("refuses a duplicate registration", async function () {
      const { registry, contributors, worker } = await loadFixture(staked);
      const [c, other] = contributors;
      await registry.connect(other).stake(MIN_STAKE);
      const deadline = (await H.latest()) + 600n;
      const sig = await signRegistration(registry, worker, worker.address, c.address, deadline);
      await registry.connect(c).registerWorker(worker.address, deadline, sig);
      await expect(registry.connect(c).registerWorker(worker.address, deadline, sig))
        .to.be.revertedWithCustomError(registry, "StakeWorkerAlreadyRegistered")
        .withArgs(worker.address, c.address);
      const sig2 = await signRegistration(registry, worker, worker.address, other.address, deadline);
      await expect(registry.connect(other).registerWorker(worker.address, deadline, sig2))
        .to.be.revertedWithCustomError(registry, "StakeWorkerAlreadyRegistered")
        .withArgs(worker.address, c.address);
    });

    it("refuses a contributor below the minimum stake", async function () {
      const { registry, contributors, worker } = await loadFixture(deployed);
      const [c] = contributors;
      await registry.connect(c).stake(MIN_STAKE - 1n);
      const deadline = (await H.latest()) + 600n;
      const sig = await signRegistration(registry, worker, worker.address, c.address, deadline);
      await expect(registry.connect(c).registerWorker(worker.address, deadline, sig))
        .to.be.revertedWithCustomError(registry, "StakeBelowMinimum")
        .withArgs(c.address, MIN_STAKE - 1n, MIN_STAKE);
    });

    it("refuses the zero worker", async function () {
      const { registry, contributors } = await loadFixture(staked);
      await expect(registry.connect(contributors[0]).registerWorker(ethers.ZeroAddress, 0n, "0x")).to.be.revertedWithCustomError(
        registry,
        "StakeZeroAddress"
      );
    });

    it("isEligible is false for unknown workers", async function () {
      const { registry, otherKey } = await loadFixture(staked);
      expect(await registry.isEligible(otherKey.address)).to.equal(false);
      expect(await registry.isEligible(ethers.ZeroAddress)).to.equal(false);
    });
  });
});
