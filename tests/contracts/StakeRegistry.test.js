const { expect } = require("chai");
const { ethers } = require("hardhat");
const { loadFixture, time } = require("@nomicfoundation/hardhat-network-helpers");
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

    it("exposes the unbonding, slashing and settlement parameters", async function () {
      const { registry, pool } = await loadFixture(deployed);
      expect(await registry.unbondingDelay()).to.equal(H.UNBONDING_DELAY);
      expect(await registry.slashBps()).to.equal(H.SLASH_BPS);
      expect(await registry.slashPool()).to.equal(pool.address);
      expect(await registry.settlement()).to.equal(ethers.ZeroAddress);
    });

    it("constructor refuses zero addresses and slashBps above 10000", async function () {
      const { token, admin, pool, registry } = await loadFixture(deployed);
      const F = await ethers.getContractFactory("StakeRegistry");
      const t = await token.getAddress();
      const Z = ethers.ZeroAddress;
      for (const [tok, adm, p] of [[Z, admin.address, pool.address], [t, Z, pool.address], [t, admin.address, Z]]) {
        await expect(F.deploy(tok, adm, 1n, 60, 100, p)).to.be.revertedWithCustomError(registry, "StakeZeroAddress");
      }
      await expect(F.deploy(t, admin.address, 1n, 60, 10001, pool.address)).to.be.revertedWithCustomError(
        registry,
        "StakeBadParameter"
      );
      const all = await F.deploy(t, admin.address, 1n, 60, 10000, pool.address);
      expect(await all.slashBps()).to.equal(10000n);
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
      expect(await registry.workerActive(worker.address)).to.equal(true);
      expect(await registry.jailed(worker.address)).to.equal(false);
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

  describe("setSettlement", function () {
    it("sets once, refuses zero and strangers", async function () {
      const { registry, settlement, stranger } = await loadFixture(deployed);
      const s = await settlement.getAddress();
      await expect(registry.connect(stranger).setSettlement(s))
        .to.be.revertedWithCustomError(registry, "AccessControlUnauthorizedAccount")
        .withArgs(stranger.address, await registry.DEFAULT_ADMIN_ROLE());
      await expect(registry.setSettlement(ethers.ZeroAddress)).to.be.revertedWithCustomError(registry, "StakeZeroAddress");
      await expect(registry.setSettlement(s)).to.emit(registry, "SettlementSet").withArgs(s);
      expect(await registry.settlement()).to.equal(s);
      await expect(registry.setSettlement(s)).to.be.revertedWithCustomError(registry, "StakeSettlementAlreadySet").withArgs(s);
    });
  });

  describe("unbonding", function () {
    // contributor 0 has 200 ONE bonded
    async function bonded() {
      const f = await deployed();
      await f.registry.connect(f.contributors[0]).stake(200n * ONE);
      return f;
    }

    it("requestUnbond moves stake from bonded to unbonding with a delay", async function () {
      const { registry, token, contributors } = await loadFixture(bonded);
      const [c] = contributors;
      const tx = registry.connect(c).requestUnbond(50n * ONE);
      const unlockAt = (await H.txTime(tx)) + H.UNBONDING_DELAY;
      await expect(tx).to.emit(registry, "UnbondRequested").withArgs(c.address, 50n * ONE, 50n * ONE, unlockAt);
      await expect(tx).not.to.emit(token, "Transfer");
      expect(await registry.stakeOf(c.address)).to.equal(150n * ONE);
      expect(await registry.unbondingOf(c.address)).to.deep.equal([50n * ONE, unlockAt]);
    });

    it("a second request adds to the unbonding stake and restarts the timer", async function () {
      const { registry, contributors } = await loadFixture(bonded);
      const [c] = contributors;
      const first = (await H.txTime(registry.connect(c).requestUnbond(50n * ONE))) + H.UNBONDING_DELAY;
      await time.increase(H.UNBONDING_DELAY - 10n);
      const tx = registry.connect(c).requestUnbond(30n * ONE);
      const second = (await H.txTime(tx)) + H.UNBONDING_DELAY;
      await expect(tx).to.emit(registry, "UnbondRequested").withArgs(c.address, 30n * ONE, 80n * ONE, second);
      expect(await registry.stakeOf(c.address)).to.equal(120n * ONE);
      await time.setNextBlockTimestamp(first + 10n);
      await expect(registry.connect(c).withdrawUnbonded())
        .to.be.revertedWithCustomError(registry, "StakeUnbondingLocked")
        .withArgs(c.address, second);
    });

    it("requestUnbond refuses zero and more than the bonded stake", async function () {
      const { registry, contributors } = await loadFixture(bonded);
      const [c, other] = contributors;
      await expect(registry.connect(c).requestUnbond(0)).to.be.revertedWithCustomError(registry, "StakeZeroAmount");
      await expect(registry.connect(c).requestUnbond(200n * ONE + 1n))
        .to.be.revertedWithCustomError(registry, "StakeInsufficientStake")
        .withArgs(c.address, 200n * ONE + 1n, 200n * ONE);
      await registry.connect(c).requestUnbond(150n * ONE);
      // unbonding stake cannot be unbonded twice
      await expect(registry.connect(c).requestUnbond(51n * ONE))
        .to.be.revertedWithCustomError(registry, "StakeInsufficientStake")
        .withArgs(c.address, 51n * ONE, 50n * ONE);
      await expect(registry.connect(other).requestUnbond(1n))
        .to.be.revertedWithCustomError(registry, "StakeInsufficientStake")
        .withArgs(other.address, 1n, 0n);
    });

    it("withdrawUnbonded is locked until unlockAt, then pays everything unbonding once", async function () {
      const { registry, token, contributors, stranger } = await loadFixture(bonded);
      const [c] = contributors;
      await expect(registry.connect(c).withdrawUnbonded())
        .to.be.revertedWithCustomError(registry, "StakeNothingUnbonding")
        .withArgs(c.address);
      const unlockAt = (await H.txTime(registry.connect(c).requestUnbond(80n * ONE))) + H.UNBONDING_DELAY;
      await expect(registry.connect(stranger).withdrawUnbonded())
        .to.be.revertedWithCustomError(registry, "StakeNothingUnbonding")
        .withArgs(stranger.address);
      await time.setNextBlockTimestamp(unlockAt - 1n);
      await expect(registry.connect(c).withdrawUnbonded())
        .to.be.revertedWithCustomError(registry, "StakeUnbondingLocked")
        .withArgs(c.address, unlockAt);
      await time.setNextBlockTimestamp(unlockAt);
      const tx = registry.connect(c).withdrawUnbonded();
      await expect(tx).to.emit(registry, "Unbonded").withArgs(c.address, 80n * ONE);
      await expect(tx).to.changeTokenBalances(token, [c, registry], [80n * ONE, -80n * ONE]);
      expect(await registry.unbondingOf(c.address)).to.deep.equal([0n, 0n]);
      expect(await registry.stakeOf(c.address)).to.equal(120n * ONE);
      await expect(registry.connect(c).withdrawUnbonded())
        .to.be.revertedWithCustomError(registry, "StakeNothingUnbonding")
        .withArgs(c.address);
    });

    it("isEligible reads the bonded stake only: unbonding below minStake makes workers ineligible at once", async function () {
      const { registry, contributors, worker } = await loadFixture(bonded);
      const [c] = contributors;
      await H.registerWorker(registry, c, worker);
      expect(await registry.isEligible(worker.address)).to.equal(true);
      await registry.connect(c).requestUnbond(100n * ONE);
      expect(await registry.isEligible(worker.address)).to.equal(true); // exactly minStake left
      await registry.connect(c).requestUnbond(1n);
      expect(await registry.isEligible(worker.address)).to.equal(false);
      await registry.connect(c).stake(1n);
      expect(await registry.isEligible(worker.address)).to.equal(true);
    });
  });

  describe("removeWorker", function () {
    async function registered() {
      const f = await staked();
      await H.registerWorker(f.registry, f.contributors[0], f.worker);
      return f;
    }

    it("its contributor retires it; the owner is kept and the key can never be registered again", async function () {
      const { registry, contributors, worker } = await loadFixture(registered);
      const [c, other] = contributors;
      await expect(registry.connect(c).removeWorker(worker.address))
        .to.emit(registry, "WorkerRemoved")
        .withArgs(c.address, worker.address);
      expect(await registry.workerActive(worker.address)).to.equal(false);
      expect(await registry.workerOwner(worker.address)).to.equal(c.address);
      expect(await registry.isEligible(worker.address)).to.equal(false);
      await expect(H.registerWorker(registry, c, worker))
        .to.be.revertedWithCustomError(registry, "StakeWorkerAlreadyRegistered")
        .withArgs(worker.address, c.address);
      await registry.connect(other).stake(MIN_STAKE);
      await expect(H.registerWorker(registry, other, worker))
        .to.be.revertedWithCustomError(registry, "StakeWorkerAlreadyRegistered")
        .withArgs(worker.address, c.address);
    });

    it("refuses another contributor, unknown workers and a second removal", async function () {
      const { registry, contributors, worker, otherKey, stranger } = await loadFixture(registered);
      const [c, other] = contributors;
      await expect(registry.connect(other).removeWorker(worker.address))
        .to.be.revertedWithCustomError(registry, "StakeNotWorkerOwner")
        .withArgs(worker.address, other.address);
      await expect(registry.connect(stranger).removeWorker(worker.address))
        .to.be.revertedWithCustomError(registry, "StakeNotWorkerOwner")
        .withArgs(worker.address, stranger.address);
      await expect(registry.connect(c).removeWorker(otherKey.address))
        .to.be.revertedWithCustomError(registry, "StakeNotWorkerOwner")
        .withArgs(otherKey.address, c.address);
      await registry.connect(c).removeWorker(worker.address);
      await expect(registry.connect(c).removeWorker(worker.address))
        .to.be.revertedWithCustomError(registry, "StakeWorkerInactive")
        .withArgs(worker.address);
    });
  });

  describe("slash", function () {
    const JOB = ethers.id("job-1");
    const JOB2 = ethers.id("job-2");
    const FP_A = ethers.id("fingerprint-class-A");
    const FP_B = ethers.id("fingerprint-class-B");
    const FP_C = ethers.id("fingerprint-class-C (no consensus)");
    const HASH_A = ethers.id("consensus-A");
    const HASH_B = ethers.id("consensus-B");
    const HASH_2 = ethers.id("consensus-2");
    const WRONG = ethers.id("a wrong result");
    const MODEL = ethers.id("model");
    const INPUT = ethers.id("input");
    const INPUT_2 = ethers.id("input-2");

    function att(over = {}) {
      return { jobId: JOB, modelHash: MODEL, inputHash: INPUT, resultHash: WRONG, fingerprint: FP_A, ...over };
    }

    // contributor 0: 200 ONE bonded, worker registered; epoch 1 finalized with results
    // (JOB, MODEL, INPUT, A, HASH_A), (JOB, MODEL, INPUT, B, HASH_B), (JOB2, MODEL, INPUT_2, A, HASH_2)
    async function evidenceWith(slashBps) {
      const f = await H.deployWired({ slashBps });
      const [c] = f.contributors;
      await f.registry.connect(c).stake(200n * ONE);
      f.worker = ethers.Wallet.createRandom();
      await H.registerWorker(f.registry, c, f.worker);
      f.results = H.resultsTree([
        [JOB, MODEL, INPUT, FP_A, HASH_A],
        [JOB, MODEL, INPUT, FP_B, HASH_B],
        [JOB2, MODEL, INPUT_2, FP_A, HASH_2],
      ]);
      f.earnings = H.earningsTree([[c.address, 0n]]);
      await f.settlement.postEpoch(1, f.earnings.root, f.results.root, ethers.id("file-1"), 0, 0);
      await time.increase(H.CHALLENGE_WINDOW);
      f.proof = (job, fp) => H.proofWhere(f.results, (v) => v[0] === job && v[3] === fp).proof;
      f.sign = (a, key = f.worker) => H.signAttestation(key, f.registry, a);
      return f;
    }
    const evidence = () => evidenceWith(H.SLASH_BPS);
    const evidenceHalf = () => evidenceWith(5000n);
    const evidenceAll = () => evidenceWith(10000n);

    it("anyone slashes a wrong result proven against the finalized consensus of its class", async function () {
      const { registry, token, worker, contributors, pool, stranger, proof, sign } = await loadFixture(evidence);
      const [c] = contributors;
      const a = att();
      const tx = registry.connect(stranger).slash(a, await sign(a), 1, HASH_A, proof(JOB, FP_A));
      await expect(tx).to.emit(registry, "Slashed").withArgs(c.address, worker.address, JOB, 1n, 20n * ONE);
      await expect(tx).to.emit(registry, "WorkerJailed").withArgs(worker.address);
      await expect(tx).to.changeTokenBalances(token, [registry, pool, stranger, c], [-20n * ONE, 20n * ONE, 0n, 0n]);
      expect(await registry.stakeOf(c.address)).to.equal(180n * ONE);
      expect(await registry.slashedFor(worker.address, JOB)).to.equal(true);
      expect(await registry.jailed(worker.address)).to.equal(true);
      expect(await registry.isEligible(worker.address)).to.equal(false);
    });

    it("once per (worker, job); another job slashes again (on the reduced stake) without a second jail event", async function () {
      const { registry, worker, contributors, proof, sign } = await loadFixture(evidence);
      const [c] = contributors;
      const a = att();
      const sig = await sign(a);
      await registry.slash(a, sig, 1, HASH_A, proof(JOB, FP_A));
      await expect(registry.slash(a, sig, 1, HASH_A, proof(JOB, FP_A)))
        .to.be.revertedWithCustomError(registry, "StakeAlreadySlashed")
        .withArgs(worker.address, JOB);
      // the same job attested again with yet another hash is still the same (worker, job)
      const again = att({ resultHash: ethers.id("another wrong result") });
      await expect(registry.slash(again, await sign(again), 1, HASH_A, proof(JOB, FP_A)))
        .to.be.revertedWithCustomError(registry, "StakeAlreadySlashed")
        .withArgs(worker.address, JOB);
      const b = att({ jobId: JOB2, inputHash: INPUT_2 });
      const tx = registry.slash(b, await sign(b), 1, HASH_2, proof(JOB2, FP_A));
      await expect(tx).to.emit(registry, "Slashed").withArgs(c.address, worker.address, JOB2, 1n, 18n * ONE);
      await expect(tx).not.to.emit(registry, "WorkerJailed");
      expect(await registry.stakeOf(c.address)).to.equal(162n * ONE);
    });

    it("refuses a forged attestation: signed by a key that is not a worker, or altered after signing", async function () {
      const { registry, proof, sign } = await loadFixture(evidence);
      const otherKey = ethers.Wallet.createRandom();
      const a = att();
      await expect(registry.slash(a, await sign(a, otherKey), 1, HASH_A, proof(JOB, FP_A)))
        .to.be.revertedWithCustomError(registry, "StakeUnknownWorker")
        .withArgs(otherKey.address);
      const honest = att({ resultHash: HASH_A });
      const sig = await sign(honest);
      const altered = att({ resultHash: WRONG });
      const recovered = ethers.recoverAddress(await registry.hashAttestation(altered), sig);
      await expect(registry.slash(altered, sig, 1, HASH_A, proof(JOB, FP_A)))
        .to.be.revertedWithCustomError(registry, "StakeUnknownWorker")
        .withArgs(recovered);
    });

    it("refuses a high-s or malformed attestation signature", async function () {
      const { registry, proof, sign } = await loadFixture(evidence);
      const a = att();
      const { signature, s } = H.toHighS(await sign(a));
      await expect(registry.slash(a, signature, 1, HASH_A, proof(JOB, FP_A)))
        .to.be.revertedWithCustomError(registry, "ECDSAInvalidSignatureS")
        .withArgs(s);
      await expect(registry.slash(a, "0x", 1, HASH_A, proof(JOB, FP_A)))
        .to.be.revertedWithCustomError(registry, "ECDSAInvalidSignatureLength")
        .withArgs(0n);
    });

    it("refuses an epoch that is not finalized: unknown, in its window, or vetoed", async function () {
      const { registry, settlement, earnings, results, proof, sign } = await loadFixture(evidence);
      const a = att();
      const sig = await sign(a);
      for (const epoch of [0n, 2n]) {
        await expect(registry.slash(a, sig, epoch, HASH_A, proof(JOB, FP_A)))
          .to.be.revertedWithCustomError(registry, "StakeEpochNotFinalized")
          .withArgs(epoch);
      }
      await settlement.postEpoch(2, earnings.root, results.root, ethers.id("file-2"), 0, 0);
      await expect(registry.slash(a, sig, 2, HASH_A, proof(JOB, FP_A)))
        .to.be.revertedWithCustomError(registry, "StakeEpochNotFinalized")
        .withArgs(2n);
      await settlement.veto(2);
      await time.increase(H.CHALLENGE_WINDOW);
      await expect(registry.slash(a, sig, 2, HASH_A, proof(JOB, FP_A)))
        .to.be.revertedWithCustomError(registry, "StakeEpochNotFinalized")
        .withArgs(2n);
      // the finalized epoch 1 still is evidence
      await expect(registry.slash(a, sig, 1, HASH_A, proof(JOB, FP_A))).to.emit(registry, "Slashed");
    });

    it("refuses evidence the results tree does not hold: a wrong proof, a made-up consensus hash", async function () {
      const { registry, proof, sign } = await loadFixture(evidence);
      const a = att();
      const sig = await sign(a);
      await expect(registry.slash(a, sig, 1, HASH_A, proof(JOB2, FP_A)))
        .to.be.revertedWithCustomError(registry, "StakeInvalidEvidence")
        .withArgs(JOB);
      await expect(registry.slash(a, sig, 1, ethers.id("made up"), proof(JOB, FP_A)))
        .to.be.revertedWithCustomError(registry, "StakeInvalidEvidence")
        .withArgs(JOB);
      await expect(registry.slash(a, sig, 1, HASH_A, []))
        .to.be.revertedWithCustomError(registry, "StakeInvalidEvidence")
        .withArgs(JOB);
    });

    it("refuses a result equal to the consensus", async function () {
      const { registry, proof, sign } = await loadFixture(evidence);
      const a = att({ resultHash: HASH_A });
      await expect(registry.slash(a, await sign(a), 1, HASH_A, proof(JOB, FP_A)))
        .to.be.revertedWithCustomError(registry, "StakeResultMatches")
        .withArgs(JOB);
    });

    it("compares only within the attested fingerprint class", async function () {
      const { registry, proof, sign } = await loadFixture(evidence);
      // a class-B worker that agrees with class B is not slashable with class A's consensus
      const b = att({ fingerprint: FP_B, resultHash: HASH_B });
      const sigB = await sign(b);
      await expect(registry.slash(b, sigB, 1, HASH_A, proof(JOB, FP_A)))
        .to.be.revertedWithCustomError(registry, "StakeInvalidEvidence")
        .withArgs(JOB);
      await expect(registry.slash(b, sigB, 1, HASH_B, proof(JOB, FP_B)))
        .to.be.revertedWithCustomError(registry, "StakeResultMatches")
        .withArgs(JOB);
      // a class without a consensus leaf can never be slashed by hash
      const c = att({ fingerprint: FP_C });
      const sigC = await sign(c);
      for (const [hash, fp] of [[HASH_A, FP_A], [HASH_B, FP_B]]) {
        await expect(registry.slash(c, sigC, 1, hash, proof(JOB, fp)))
          .to.be.revertedWithCustomError(registry, "StakeInvalidEvidence")
          .withArgs(JOB);
      }
      // relabelling the attestation's class breaks its signature instead
      const relabelled = { ...c, fingerprint: FP_A };
      await expect(registry.slash(relabelled, sigC, 1, HASH_A, proof(JOB, FP_A))).to.be.revertedWithCustomError(
        registry,
        "StakeUnknownWorker"
      );
    });

    describe("framing: the leaf binds the model and input the consensus was reached on", function () {
      const OTHER_INPUT = ethers.id("an input the operator swapped in");
      const OTHER_MODEL = ethers.id("a model the operator swapped in");
      const OTHER_RESULT = ethers.id("the honest result on what the worker was given");

      async function expectUnslashable(registry, a, sig, leaves) {
        for (const [hash, p] of leaves) {
          await expect(registry.slash(a, sig, 1, hash, p)).to.be.revertedWithCustomError(registry, "StakeInvalidEvidence").withArgs(JOB);
        }
      }

      it("a worker handed another input under the same job id cannot be slashed by that job's consensus", async function () {
        const { registry, worker, contributors, proof, sign } = await loadFixture(evidence);
        // same job id, same model, same class, another input, so another (honest) result
        const a = att({ inputHash: OTHER_INPUT, resultHash: OTHER_RESULT });
        const sig = await sign(a);
        // neither the consensus of its class nor any other leaf of the tree is evidence against it
        await expectUnslashable(registry, a, sig, [
          [HASH_A, proof(JOB, FP_A)],
          [HASH_B, proof(JOB, FP_B)],
          [HASH_2, proof(JOB2, FP_A)],
        ]);
        // and the attestation cannot be relabelled to the leaf's input: that breaks its signature
        const relabelled = { ...a, inputHash: INPUT };
        await expect(registry.slash(relabelled, sig, 1, HASH_A, proof(JOB, FP_A))).to.be.revertedWithCustomError(
          registry,
          "StakeUnknownWorker"
        );
        expect(await registry.slashedFor(worker.address, JOB)).to.equal(false);
        expect(await registry.jailed(worker.address)).to.equal(false);
        expect(await registry.stakeOf(contributors[0].address)).to.equal(200n * ONE);
      });

      it("a worker handed another model under the same job id cannot be slashed by that job's consensus", async function () {
        const { registry, worker, contributors, proof, sign } = await loadFixture(evidence);
        const a = att({ modelHash: OTHER_MODEL, resultHash: OTHER_RESULT });
        const sig = await sign(a);
        await expectUnslashable(registry, a, sig, [
          [HASH_A, proof(JOB, FP_A)],
          [HASH_B, proof(JOB, FP_B)],
          [HASH_2, proof(JOB2, FP_A)],
        ]);
        const relabelled = { ...a, modelHash: MODEL };
        await expect(registry.slash(relabelled, sig, 1, HASH_A, proof(JOB, FP_A))).to.be.revertedWithCustomError(
          registry,
          "StakeUnknownWorker"
        );
        // both swapped at once: still no evidence
        const both = att({ modelHash: OTHER_MODEL, inputHash: OTHER_INPUT, resultHash: OTHER_RESULT });
        await expectUnslashable(registry, both, await sign(both), [[HASH_A, proof(JOB, FP_A)]]);
        expect(await registry.slashedFor(worker.address, JOB)).to.equal(false);
        expect(await registry.stakeOf(contributors[0].address)).to.equal(200n * ONE);
      });

      it("honest dissent (same job, model, input and class, another result) is slashed", async function () {
        const { registry, worker, contributors, proof, sign } = await loadFixture(evidence);
        const [c] = contributors;
        const a = att({ modelHash: MODEL, inputHash: INPUT, fingerprint: FP_A, resultHash: OTHER_RESULT });
        const tx = registry.slash(a, await sign(a), 1, HASH_A, proof(JOB, FP_A));
        await expect(tx).to.emit(registry, "Slashed").withArgs(c.address, worker.address, JOB, 1n, 20n * ONE);
        expect(await registry.jailed(worker.address)).to.equal(true);
      });

      it("a consensus on the swapped input, under the same job id, judges only the workers that saw that input", async function () {
        const { registry, settlement, earnings, worker, contributors, sign } = await loadFixture(evidence);
        const OTHER_CONSENSUS = ethers.id("consensus on the swapped input");
        const results = H.resultsTree([
          [JOB, MODEL, INPUT, FP_A, HASH_A],
          [JOB, MODEL, OTHER_INPUT, FP_A, OTHER_CONSENSUS],
        ]);
        await settlement.postEpoch(2, earnings.root, results.root, ethers.id("file-2"), 0, 0);
        await time.increase(H.CHALLENGE_WINDOW);
        const on = (input) => H.proofWhere(results, (v) => v[2] === input).proof;
        // the worker that saw the swapped input and agreed with its consensus: not slashable by either leaf
        const agreed = att({ inputHash: OTHER_INPUT, resultHash: OTHER_CONSENSUS });
        const sigAgreed = await sign(agreed);
        await expect(registry.slash(agreed, sigAgreed, 2, HASH_A, on(INPUT)))
          .to.be.revertedWithCustomError(registry, "StakeInvalidEvidence")
          .withArgs(JOB);
        await expect(registry.slash(agreed, sigAgreed, 2, OTHER_CONSENSUS, on(OTHER_INPUT)))
          .to.be.revertedWithCustomError(registry, "StakeResultMatches")
          .withArgs(JOB);
        // the same worker dissenting on the input it saw is judged by that input's consensus only
        const dissent = att({ inputHash: OTHER_INPUT, resultHash: WRONG });
        const sigDissent = await sign(dissent);
        await expect(registry.slash(dissent, sigDissent, 2, HASH_A, on(INPUT)))
          .to.be.revertedWithCustomError(registry, "StakeInvalidEvidence")
          .withArgs(JOB);
        await expect(registry.slash(dissent, sigDissent, 2, OTHER_CONSENSUS, on(OTHER_INPUT)))
          .to.emit(registry, "Slashed")
          .withArgs(contributors[0].address, worker.address, JOB, 2n, 20n * ONE);
      });
    });

    it("refuses before the settlement is set", async function () {
      const f = await H.deployAll();
      const [c] = f.contributors;
      await f.registry.connect(c).stake(MIN_STAKE);
      const key = ethers.Wallet.createRandom();
      await H.registerWorker(f.registry, c, key);
      const a = att();
      await expect(f.registry.slash(a, await H.signAttestation(key, f.registry, a), 1, HASH_A, [])).to.be.revertedWithCustomError(
        f.registry,
        "StakeSettlementNotSet"
      );
    });

    it("unbonding stake stays slashable during the delay (bonded first, then unbonding)", async function () {
      const { registry, token, pool, contributors, proof, sign } = await loadFixture(evidenceHalf);
      const [c] = contributors;
      const unlockAt = (await H.txTime(registry.connect(c).requestUnbond(150n * ONE))) + H.UNBONDING_DELAY;
      // 50% of (50 bonded + 150 unbonding) = 100: 50 from bonded, 50 from unbonding
      const a = att();
      const tx = registry.slash(a, await sign(a), 1, HASH_A, proof(JOB, FP_A));
      await expect(tx).to.emit(registry, "Slashed");
      await expect(tx).to.changeTokenBalance(token, pool, 100n * ONE);
      expect(await registry.stakeOf(c.address)).to.equal(0n);
      expect(await registry.unbondingOf(c.address)).to.deep.equal([100n * ONE, unlockAt]);
      await time.increaseTo(unlockAt);
      await expect(registry.connect(c).withdrawUnbonded()).to.emit(registry, "Unbonded").withArgs(c.address, 100n * ONE);
      expect(await token.balanceOf(await registry.getAddress())).to.equal(0n);
    });

    it("a slash smaller than the bonded stake leaves the unbonding stake whole", async function () {
      const { registry, contributors, proof, sign } = await loadFixture(evidence);
      const [c] = contributors;
      await registry.connect(c).requestUnbond(150n * ONE);
      const a = att();
      await registry.slash(a, await sign(a), 1, HASH_A, proof(JOB, FP_A)); // 10% of 200 = 20 from bonded 50
      expect(await registry.stakeOf(c.address)).to.equal(30n * ONE);
      expect((await registry.unbondingOf(c.address)).amount).to.equal(150n * ONE);
    });

    it("slashBps = 10000 takes all bonded and unbonding stake", async function () {
      const { registry, token, pool, contributors, proof, sign } = await loadFixture(evidenceAll);
      const [c] = contributors;
      await registry.connect(c).requestUnbond(70n * ONE);
      const a = att();
      await expect(registry.slash(a, await sign(a), 1, HASH_A, proof(JOB, FP_A))).to.changeTokenBalance(token, pool, 200n * ONE);
      expect(await registry.stakeOf(c.address)).to.equal(0n);
      expect((await registry.unbondingOf(c.address)).amount).to.equal(0n);
    });

    it("a removed worker stays slashable; a contributor with no stake left is jailed with nothing taken", async function () {
      const { registry, token, worker, contributors, proof, sign } = await loadFixture(evidence);
      const [c] = contributors;
      await registry.connect(c).removeWorker(worker.address);
      await registry.connect(c).requestUnbond(200n * ONE);
      await time.increase(H.UNBONDING_DELAY);
      await registry.connect(c).withdrawUnbonded();
      const a = att();
      const tx = registry.slash(a, await sign(a), 1, HASH_A, proof(JOB, FP_A));
      await expect(tx).to.emit(registry, "Slashed").withArgs(c.address, worker.address, JOB, 1n, 0n);
      await expect(tx).to.emit(registry, "WorkerJailed").withArgs(worker.address);
      await expect(tx).not.to.emit(token, "Transfer");
    });

    it("missing a deadline is never slashable: there is no such path", async function () {
      const { registry } = await loadFixture(evidence);
      const names = registry.interface.fragments.filter((f) => f.type === "function").map((f) => f.name);
      expect(names.filter((n) => /slash/i.test(n))).to.deep.equal(["slash", "slashBps", "slashPool", "slashedFor"]);
      expect(registry.interface.getFunction("slash").inputs.map((i) => i.name)).to.deep.equal([
        "att",
        "signature",
        "epoch",
        "consensusResultHash",
        "proof",
      ]);
    });
  });

  describe("unjail", function () {
    async function jailedWorker() {
      const f = await H.deployWired();
      const [c] = f.contributors;
      await f.registry.connect(c).stake(200n * ONE);
      f.worker = ethers.Wallet.createRandom();
      await H.registerWorker(f.registry, c, f.worker);
      const job = ethers.id("job");
      const fp = ethers.id("fp");
      const Z = ethers.ZeroHash;
      const results = H.resultsTree([[job, Z, Z, fp, ethers.id("right")], [ethers.id("other"), Z, Z, fp, ethers.id("x")]]);
      await f.settlement.postEpoch(1, ethers.id("earnings"), results.root, ethers.ZeroHash, 0, 0);
      await time.increase(H.CHALLENGE_WINDOW);
      const a = { jobId: job, modelHash: Z, inputHash: Z, resultHash: ethers.id("wrong"), fingerprint: fp };
      const proof = H.proofWhere(results, (v) => v[0] === job).proof;
      await f.registry.slash(a, await H.signAttestation(f.worker, f.registry, a), 1, ethers.id("right"), proof);
      return f;
    }

    it("the admin lifts a jail (appeal); slashed stake is not returned", async function () {
      const { registry, worker, contributors } = await loadFixture(jailedWorker);
      expect(await registry.isEligible(worker.address)).to.equal(false);
      await expect(registry.unjail(worker.address)).to.emit(registry, "WorkerUnjailed").withArgs(worker.address);
      expect(await registry.jailed(worker.address)).to.equal(false);
      expect(await registry.isEligible(worker.address)).to.equal(true);
      expect(await registry.stakeOf(contributors[0].address)).to.equal(180n * ONE);
      await expect(registry.unjail(worker.address))
        .to.be.revertedWithCustomError(registry, "StakeWorkerNotJailed")
        .withArgs(worker.address);
    });

    it("refuses strangers", async function () {
      const { registry, worker, stranger, contributors } = await loadFixture(jailedWorker);
      for (const who of [stranger, contributors[0]]) {
        await expect(registry.connect(who).unjail(worker.address))
          .to.be.revertedWithCustomError(registry, "AccessControlUnauthorizedAccount")
          .withArgs(who.address, await registry.DEFAULT_ADMIN_ROLE());
      }
    });
  });

  describe("re-entry through a malicious token", function () {
    async function reentrant() {
      const f = await H.deployWired({ token: "ReentrantToken" });
      const [c] = f.contributors;
      await f.registry.connect(c).stake(200n * ONE);
      f.worker = ethers.Wallet.createRandom();
      await H.registerWorker(f.registry, c, f.worker);
      f.job = ethers.id("job");
      f.fp = ethers.id("fp");
      const Z = ethers.ZeroHash;
      f.results = H.resultsTree([[f.job, Z, Z, f.fp, ethers.id("right")], [ethers.id("other"), Z, Z, f.fp, ethers.id("x")]]);
      await f.settlement.postEpoch(1, ethers.id("earnings"), f.results.root, ethers.ZeroHash, 0, 0);
      await time.increase(H.CHALLENGE_WINDOW);
      f.att = { jobId: f.job, modelHash: Z, inputHash: Z, resultHash: ethers.id("wrong"), fingerprint: f.fp };
      f.sig = await H.signAttestation(f.worker, f.registry, f.att);
      f.proof = H.proofWhere(f.results, (v) => v[0] === f.job).proof;
      return f;
    }

    it("withdrawUnbonded cannot be re-entered from the token transfer", async function () {
      const { registry, token, contributors } = await loadFixture(reentrant);
      const [c] = contributors;
      await registry.connect(c).requestUnbond(50n * ONE);
      await time.increase(H.UNBONDING_DELAY);
      await token.arm(await registry.getAddress(), registry.interface.encodeFunctionData("withdrawUnbonded"));
      const tx = registry.connect(c).withdrawUnbonded();
      await expect(tx).to.emit(registry, "Unbonded").withArgs(c.address, 50n * ONE);
      await expect(tx).to.changeTokenBalances(token, [c, registry], [50n * ONE, -50n * ONE]);
      expect(await token.lastSuccess()).to.equal(false);
      expect(H.reentryError(registry, await token.lastReturnData())).to.equal("ReentrancyGuardReentrantCall");
      expect(await token.balanceOf(await registry.getAddress())).to.equal(150n * ONE);
    });

    it("slash cannot be re-entered from the transfer to the slash pool", async function () {
      const { registry, token, pool, contributors, att, sig, proof } = await loadFixture(reentrant);
      const [c] = contributors;
      const again = registry.interface.encodeFunctionData("slash", [att, sig, 1, ethers.id("right"), proof]);
      await token.arm(await registry.getAddress(), again);
      const tx = registry.slash(att, sig, 1, ethers.id("right"), proof);
      await expect(tx).to.changeTokenBalance(token, pool, 20n * ONE);
      expect(await token.lastSuccess()).to.equal(false);
      expect(H.reentryError(registry, await token.lastReturnData())).to.equal("ReentrancyGuardReentrantCall");
      expect(await registry.stakeOf(c.address)).to.equal(180n * ONE);
    });
  });
});
