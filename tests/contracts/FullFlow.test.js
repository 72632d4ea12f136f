const { expect } = require("chai");
const { ethers } = require("hardhat");
const { time } = require("@nomicfoundation/hardhat-network-helpers");
const { StandardMerkleTree } = require("@openzeppelin/merkle-tree");
const H = require("./helpers");
const { ONE, MIN_STAKE, CHALLENGE_WINDOW } = H;

const JOB = ethers.id("job-7");
const MODEL = ethers.id("model");
const INPUT = ethers.id("input-7");
const FP = ethers.id("fingerprint-class");
const CONSENSUS = ethers.id("consensus result");

describe("Full flow", function () {
  it("deposits, vouchers, registration, two epochs, claims, fees, withdrawal, unbonding and a slash conserve money", async function () {
    const { token, vault, registry, settlement, treasury, pool, clients, contributors } = await H.deployWired();
    const settlementAddr = await settlement.getAddress();
    const registryAddr = await registry.getAddress();
    const holders = [await vault.getAddress(), settlementAddr, registryAddr, treasury.address, pool.address];
    for (const s of [...clients, ...contributors]) holders.push(s.address);

    async function checkConservation() {
      let sum = 0n;
      for (const h of holders) sum += await token.balanceOf(h);
      expect(sum).to.equal(await token.totalSupply());
      // vault holds exactly the unspent deposits
      let deposits = 0n;
      for (const c of clients) deposits += await vault.depositOf(c.address);
      expect(await token.balanceOf(await vault.getAddress())).to.equal(deposits);
      // settlement holds redeemed minus paid out
      const held = (await vault.totalRedeemed()) - (await settlement.totalClaimed()) - (await settlement.feesPaid());
      expect(await token.balanceOf(settlementAddr)).to.equal(held);
      // registry holds exactly bonded plus unbonding stake
      let staked = 0n;
      for (const c of contributors) staked += (await registry.stakeOf(c.address)) + (await registry.unbondingOf(c.address)).amount;
      expect(await token.balanceOf(registryAddr)).to.equal(staked);
    }

    // contributors stake and register device keys
    const workers = [];
    for (const c of contributors.slice(0, 3)) {
      await registry.connect(c).stake(MIN_STAKE);
      const w = ethers.Wallet.createRandom();
      const deadline = (await H.latest()) + 600n;
      const sig = await w.signTypedData(await H.registryDomain(await registry.getAddress()), H.REGISTRATION_TYPES, {
        worker: w.address,
        contributor: c.address,
        deadline,
      });
      await registry.connect(c).registerWorker(w.address, deadline, sig);
      expect(await registry.isEligible(w.address)).to.equal(true);
      workers.push(w);
    }

    // clients deposit (one via permit-free approve, one paid for by another)
    await vault.connect(clients[0]).deposit(200n * ONE);
    await vault.connect(clients[1]).deposit(100n * ONE);
    await vault.connect(clients[2]).depositFor(clients[3].address, 50n * ONE);
    await checkConservation();

    // epoch 1: clients sign vouchers above what is charged
    const batch1 = [
      await H.redemption(vault, clients[0], 40n * ONE, 30n * ONE),
      await H.redemption(vault, clients[1], 20n * ONE, 20n * ONE),
      await H.redemption(vault, clients[3], 10n * ONE, 10n * ONE),
    ];
    await vault.redeem(batch1);
    await vault.redeem(batch1); // retry is a no-op
    expect(await vault.totalRedeemed()).to.equal(60n * ONE);
    await checkConservation();

    const earners = contributors.slice(0, 3).map((c) => c.address);
    const tree1 = StandardMerkleTree.of(
      [
        [earners[0], 27n * ONE],
        [earners[1], 18n * ONE],
        [earners[2], 9n * ONE],
      ],
      ["address", "uint256"]
    );
    const results1 = H.resultsTree([
      [JOB, MODEL, INPUT, FP, CONSENSUS],
      [ethers.id("job-8"), MODEL, ethers.id("input-8"), FP, ethers.id("other")],
    ]);
    await settlement.postEpoch(1, tree1.root, results1.root, ethers.id("epoch-1.json"), 54n * ONE, 6n * ONE);
    await time.increase(CHALLENGE_WINDOW);
    for (const [i, [a, amt]] of tree1.entries()) {
      await settlement.claim(1, a, amt, tree1.getProof(i));
    }
    await settlement.claimFees(1);
    await checkConservation();

    // epoch 2: more usage, higher cumulative vouchers
    await vault.redeem([
      await H.redemption(vault, clients[0], 80n * ONE, 70n * ONE),
      await H.redemption(vault, clients[3], 30n * ONE, 30n * ONE),
    ]);
    expect(await vault.totalRedeemed()).to.equal(120n * ONE);
    const tree2 = StandardMerkleTree.of(
      [
        [earners[0], 50n * ONE],
        [earners[1], 40n * ONE],
        [earners[2], 18n * ONE],
      ],
      ["address", "uint256"]
    );
    await settlement.postEpoch(2, tree2.root, ethers.id("results-2"), ethers.id("epoch-2.json"), 108n * ONE, 12n * ONE);
    await time.increase(CHALLENGE_WINDOW);
    for (const [i, [a, amt]] of tree2.entries()) {
      await settlement.claim(2, a, amt, tree2.getProof(i));
    }
    await settlement.claimFees(2);
    await checkConservation();

    // everything redeemed has been paid out: payout + fees == totalRedeemed
    expect(await token.balanceOf(settlementAddr)).to.equal(0n);
    expect(await settlement.totalClaimed()).to.equal(108n * ONE);
    expect(await token.balanceOf(treasury.address)).to.equal(12n * ONE);
    expect(await token.balanceOf(contributors[0].address)).to.equal(1000n * ONE - MIN_STAKE + 50n * ONE);
    expect(await vault.depositOf(clients[0].address)).to.equal(130n * ONE);
    expect(await vault.depositOf(clients[3].address)).to.equal(20n * ONE);
    expect(workers.length).to.equal(3);

    // client 1 (80 left) signs a voucher, asks to withdraw everything, and is charged 10 during the notice
    const late = await H.redemption(vault, clients[1], 30n * ONE, 30n * ONE, (await H.latest()) + 30n * 86400n);
    await vault.connect(clients[1]).requestWithdrawal(80n * ONE);
    await vault.redeem([late]);
    await checkConservation();
    await time.increase(H.WITHDRAWAL_DELAY);
    await expect(vault.connect(clients[1]).withdraw()).to.emit(vault, "Withdrawn").withArgs(clients[1].address, 70n * ONE, 0n);
    await checkConservation();

    // contributor 2 starts leaving; its worker signed a wrong result for JOB, which epoch 1 settled: slashed
    await registry.connect(contributors[1]).requestUnbond(60n * ONE);
    const wrong = { jobId: JOB, modelHash: MODEL, inputHash: INPUT, resultHash: ethers.id("wrong"), fingerprint: FP };
    const proof = H.proofWhere(results1, (v) => v[0] === JOB).proof;
    await registry.slash(wrong, await H.signAttestation(workers[1], registry, wrong), 1, CONSENSUS, proof);
    expect(await token.balanceOf(pool.address)).to.equal(10n * ONE); // 10% of 40 bonded + 60 unbonding
    expect(await registry.isEligible(workers[1].address)).to.equal(false);
    await checkConservation();
    await time.increase(H.UNBONDING_DELAY);
    await registry.connect(contributors[1]).withdrawUnbonded();
    expect(await registry.stakeOf(contributors[1].address)).to.equal(30n * ONE);
    await checkConservation();
  });
});
