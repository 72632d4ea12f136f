const { expect } = require("chai");
const { ethers } = require("hardhat");
const { time } = require("@nomicfoundation/hardhat-network-helpers");
const { StandardMerkleTree } = require("@openzeppelin/merkle-tree");
const H = require("./helpers");
const { ONE, MIN_STAKE, CHALLENGE_WINDOW } = H;

describe("Full flow", function () {
  it("deposits, vouchers, registration, two epochs, claims and fees conserve money", async function () {
    const { token, vault, registry, settlement, treasury, clients, contributors } = await H.deployWired();
    const settlementAddr = await settlement.getAddress();
    const holders = [await vault.getAddress(), settlementAddr, await registry.getAddress(), treasury.address];
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
    await settlement.postEpoch(1, tree1.root, ethers.id("epoch-1.json"), 54n * ONE, 6n * ONE);
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
    await settlement.postEpoch(2, tree2.root, ethers.id("epoch-2.json"), 108n * ONE, 12n * ONE);
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
  });
});
