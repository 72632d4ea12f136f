const { expect } = require("chai");
const { ethers } = require("hardhat");
const { loadFixture, time } = require("@nomicfoundation/hardhat-network-helpers");
const { StandardMerkleTree } = require("@openzeppelin/merkle-tree");
const H = require("./helpers");
const { ONE, CHALLENGE_WINDOW } = H;

// A results root for epochs whose results do not matter to the test.
const RESULTS_ROOT = ethers.id("results-root");

describe("EpochSettlement", function () {
  // 100 ONE redeemed from one client into the settlement contract.
  async function funded() {
    const f = await H.deployWired();
    const [client] = f.clients;
    await f.vault.connect(client).deposit(100n * ONE);
    await f.vault.redeem([await H.redemption(f.vault, client, 100n * ONE)]);
    f.earners = f.contributors.map((c) => c.address);
    return f;
  }

  function treeOf(entries) {
    return StandardMerkleTree.of(entries, ["address", "uint256"]);
  }

  // epoch 1: 4 earners (10, 20, 30, 5), payout 65, fees 5, and already past its challenge window
  async function posted() {
    const f = await funded();
    f.values1 = f.earners.map((a, i) => [a, [10n, 20n, 30n, 5n][i] * ONE]);
    f.tree1 = treeOf(f.values1);
    await f.settlement.postEpoch(1, f.tree1.root, RESULTS_ROOT, ethers.id("file-1"), 65n * ONE, 5n * ONE);
    await time.increase(CHALLENGE_WINDOW);
    return f;
  }

  function proofOf(tree, account) {
    for (const [i, v] of tree.entries()) if (v[0] === account) return { amount: v[1], proof: tree.getProof(i) };
    throw new Error("not in tree");
  }

  describe("deployment and setVault", function () {
    it("exposes its parameters", async function () {
      const { token, settlement, admin, treasury } = await loadFixture(H.deployAll);
      expect(await settlement.token()).to.equal(await token.getAddress());
      expect(await settlement.treasury()).to.equal(treasury.address);
      expect(await settlement.challengeWindow()).to.equal(CHALLENGE_WINDOW);
      expect(await settlement.vault()).to.equal(ethers.ZeroAddress);
      expect(await settlement.lastEpoch()).to.equal(0n);
      expect(await settlement.totalClaimed()).to.equal(0n);
      expect(await settlement.feesPaid()).to.equal(0n);
      expect(await settlement.SETTLER_ROLE()).to.equal(ethers.id("SETTLER_ROLE"));
      expect(await settlement.GUARDIAN_ROLE()).to.equal(ethers.id("GUARDIAN_ROLE"));
      expect(await settlement.hasRole(await settlement.GUARDIAN_ROLE(), admin.address)).to.equal(true);
      expect(await settlement.hasRole(await settlement.DEFAULT_ADMIN_ROLE(), admin.address)).to.equal(true);
      expect(await settlement.hasRole(await settlement.SETTLER_ROLE(), admin.address)).to.equal(true);
    });

    it("constructor refuses zero addresses", async function () {
      const { token, settlement, admin, treasury } = await loadFixture(H.deployAll);
      const F = await ethers.getContractFactory("EpochSettlement");
      const t = await token.getAddress();
      const Z = ethers.ZeroAddress;
      for (const args of [[Z, admin.address, treasury.address], [t, Z, treasury.address], [t, admin.address, Z]]) {
        await expect(F.deploy(...args, 60)).to.be.revertedWithCustomError(settlement, "EpochZeroAddress");
      }
    });

    it("setVault sets once, refuses zero and strangers", async function () {
      const { vault, settlement, stranger } = await loadFixture(H.deployAll);
      const v = await vault.getAddress();
      await expect(settlement.connect(stranger).setVault(v))
        .to.be.revertedWithCustomError(settlement, "AccessControlUnauthorizedAccount")
        .withArgs(stranger.address, await settlement.DEFAULT_ADMIN_ROLE());
      await expect(settlement.setVault(ethers.ZeroAddress)).to.be.revertedWithCustomError(settlement, "EpochZeroAddress");
      await expect(settlement.setVault(v)).to.emit(settlement, "VaultSet").withArgs(v);
      expect(await settlement.vault()).to.equal(v);
      await expect(settlement.setVault(v)).to.be.revertedWithCustomError(settlement, "EpochVaultAlreadySet").withArgs(v);
    });
  });

  describe("postEpoch", function () {
    it("posts epoch 1 with the challenge window and records it", async function () {
      const { settlement } = await loadFixture(funded);
      const root = ethers.id("root");
      const tx = await settlement.postEpoch(1, root, RESULTS_ROOT, ethers.id("file"), 60n * ONE, 40n * ONE);
      const now = BigInt((await ethers.provider.getBlock(tx.blockNumber)).timestamp);
      await expect(tx)
        .to.emit(settlement, "EpochPosted")
        .withArgs(1n, root, RESULTS_ROOT, ethers.id("file"), 60n * ONE, 40n * ONE, now + CHALLENGE_WINDOW);
      expect(await settlement.lastEpoch()).to.equal(1n);
      const e = await settlement.epochs(1);
      // the getter's order is part of the interface
      expect([...e]).to.deep.equal([root, RESULTS_ROOT, ethers.id("file"), 60n * ONE, 40n * ONE, now, now + CHALLENGE_WINDOW, false]);
      expect(e.root).to.equal(root);
      expect(e.resultsRoot).to.equal(RESULTS_ROOT);
      expect(e.vetoed).to.equal(false);
      expect(e.fileHash).to.equal(ethers.id("file"));
      expect(e.cumulativePayout).to.equal(60n * ONE);
      expect(e.cumulativeFees).to.equal(40n * ONE);
      expect(e.postedAt).to.equal(now);
      expect(e.claimableAt).to.equal(now + CHALLENGE_WINDOW);
    });

    it("a cumulative payout above 2^128 - 1 wei reverts with SafeCast's error; 2^128 - 1 is stored whole", async function () {
      const MAX = 2n ** 128n - 1n;
      const f = await H.deployWired();
      const { token, vault, settlement, clients } = f;
      for (const c of clients.slice(0, 2)) {
        await token.mint(c.address, MAX);
        await vault.connect(c).deposit(MAX);
        await vault.redeem([await H.redemption(vault, c, MAX)]);
      }
      expect(await vault.totalRedeemed()).to.equal(2n * MAX);
      const root = ethers.id("root");
      await expect(settlement.postEpoch(1, root, RESULTS_ROOT, ethers.ZeroHash, MAX + 1n, 0n))
        .to.be.revertedWithCustomError(settlement, "SafeCastOverflowedUintDowncast")
        .withArgs(128, MAX + 1n);
      // the fees have no such bound; payout plus fees is still capped by what the vault redeemed
      await expect(settlement.postEpoch(1, root, RESULTS_ROOT, ethers.ZeroHash, MAX, MAX)).to.emit(settlement, "EpochPosted");
      const e = await settlement.epochs(1);
      expect(e.cumulativePayout).to.equal(MAX);
      expect(e.cumulativeFees).to.equal(MAX);
      expect(e.vetoed).to.equal(false);
      expect(e.claimableAt - e.postedAt).to.equal(CHALLENGE_WINDOW);
    });

    it("an epoch never posted reads as all zero", async function () {
      const { settlement } = await loadFixture(funded);
      expect([...(await settlement.epochs(7))]).to.deep.equal([
        ethers.ZeroHash, ethers.ZeroHash, ethers.ZeroHash, 0n, 0n, 0n, 0n, false,
      ]);
    });

    it("enforces order", async function () {
      const { settlement } = await loadFixture(funded);
      const root = ethers.id("root");
      await expect(settlement.postEpoch(0, root, RESULTS_ROOT, ethers.ZeroHash, 0, 0))
        .to.be.revertedWithCustomError(settlement, "EpochOutOfOrder")
        .withArgs(1n, 0n);
      await expect(settlement.postEpoch(2, root, RESULTS_ROOT, ethers.ZeroHash, 0, 0))
        .to.be.revertedWithCustomError(settlement, "EpochOutOfOrder")
        .withArgs(1n, 2n);
      await settlement.postEpoch(1, root, RESULTS_ROOT, ethers.ZeroHash, 0, 0);
      await expect(settlement.postEpoch(1, root, RESULTS_ROOT, ethers.ZeroHash, 0, 0))
        .to.be.revertedWithCustomError(settlement, "EpochOutOfOrder")
        .withArgs(2n, 1n);
      await expect(settlement.postEpoch(2, root, RESULTS_ROOT, ethers.ZeroHash, 0, 0)).to.emit(settlement, "EpochPosted");
    });

    it("refuses an empty earnings or results root", async function () {
      const { settlement } = await loadFixture(funded);
      await expect(settlement.postEpoch(1, ethers.ZeroHash, RESULTS_ROOT, ethers.ZeroHash, 0, 0)).to.be.revertedWithCustomError(
        settlement,
        "EpochEmptyRoot"
      );
      await expect(settlement.postEpoch(1, ethers.id("root"), ethers.ZeroHash, ethers.ZeroHash, 0, 0)).to.be.revertedWithCustomError(
        settlement,
        "EpochEmptyRoot"
      );
    });

    it("refuses decreasing totals", async function () {
      const { settlement } = await loadFixture(funded);
      const root = ethers.id("root");
      await settlement.postEpoch(1, root, RESULTS_ROOT, ethers.ZeroHash, 50n, 10n);
      await expect(settlement.postEpoch(2, root, RESULTS_ROOT, ethers.ZeroHash, 49n, 10n))
        .to.be.revertedWithCustomError(settlement, "EpochTotalsDecreased")
        .withArgs(2n);
      await expect(settlement.postEpoch(2, root, RESULTS_ROOT, ethers.ZeroHash, 50n, 9n))
        .to.be.revertedWithCustomError(settlement, "EpochTotalsDecreased")
        .withArgs(2n);
      await expect(settlement.postEpoch(2, root, RESULTS_ROOT, ethers.ZeroHash, 50n, 10n)).to.emit(settlement, "EpochPosted");
    });

    it("refuses a root that needs more than the vault redeemed", async function () {
      const { settlement } = await loadFixture(funded);
      await expect(settlement.postEpoch(1, ethers.id("root"), RESULTS_ROOT, ethers.ZeroHash, 90n * ONE, 10n * ONE + 1n))
        .to.be.revertedWithCustomError(settlement, "EpochUnderfunded")
        .withArgs(100n * ONE + 1n, 100n * ONE);
      await expect(settlement.postEpoch(1, ethers.id("root"), RESULTS_ROOT, ethers.ZeroHash, 90n * ONE, 10n * ONE)).to.emit(
        settlement,
        "EpochPosted"
      );
    });

    it("refuses to post before the vault is set", async function () {
      const { settlement } = await loadFixture(H.deployAll);
      await expect(settlement.postEpoch(1, ethers.id("root"), RESULTS_ROOT, ethers.ZeroHash, 0, 0)).to.be.revertedWithCustomError(
        settlement,
        "EpochVaultNotSet"
      );
    });

    it("refuses a stranger", async function () {
      const { settlement, stranger } = await loadFixture(funded);
      await expect(settlement.connect(stranger).postEpoch(1, ethers.id("root"), RESULTS_ROOT, ethers.ZeroHash, 0, 0))
        .to.be.revertedWithCustomError(settlement, "AccessControlUnauthorizedAccount")
        .withArgs(stranger.address, await settlement.SETTLER_ROLE());
    });
  });

  describe("claim", function () {
    it("pays a proven cumulative amount to the account, called by anyone", async function () {
      const { token, settlement, stranger, tree1, earners, contributors } = await loadFixture(posted);
      const { amount, proof } = proofOf(tree1, earners[1]);
      const tx = settlement.connect(stranger).claim(1, earners[1], amount, proof);
      await expect(tx).to.emit(settlement, "Claimed").withArgs(1n, earners[1], amount, amount);
      await expect(tx).to.changeTokenBalances(token, [contributors[1], settlement, stranger], [amount, -amount, 0n]);
      expect(await settlement.claimedOf(earners[1])).to.equal(amount);
      expect(await settlement.totalClaimed()).to.equal(amount);
    });

    it("respects the challenge window", async function () {
      const { settlement, earners } = await loadFixture(funded);
      const tree = treeOf([[earners[0], ONE]]);
      const tx = await settlement.postEpoch(1, tree.root, RESULTS_ROOT, ethers.ZeroHash, ONE, 0);
      const claimableAt = BigInt((await ethers.provider.getBlock(tx.blockNumber)).timestamp) + CHALLENGE_WINDOW;
      await expect(settlement.claim(1, earners[0], ONE, tree.getProof(0)))
        .to.be.revertedWithCustomError(settlement, "EpochNotClaimable")
        .withArgs(1n, claimableAt);
      await time.setNextBlockTimestamp(claimableAt - 1n);
      await expect(settlement.claim(1, earners[0], ONE, tree.getProof(0)))
        .to.be.revertedWithCustomError(settlement, "EpochNotClaimable")
        .withArgs(1n, claimableAt);
      await time.setNextBlockTimestamp(claimableAt);
      await expect(settlement.claim(1, earners[0], ONE, tree.getProof(0))).to.emit(settlement, "Claimed");
    });

    it("refuses unknown epochs", async function () {
      const { settlement, tree1, earners } = await loadFixture(posted);
      const { amount, proof } = proofOf(tree1, earners[0]);
      for (const epoch of [0n, 2n]) {
        await expect(settlement.claim(epoch, earners[0], amount, proof))
          .to.be.revertedWithCustomError(settlement, "EpochUnknown")
          .withArgs(epoch);
      }
    });

    it("refuses a double claim", async function () {
      const { settlement, tree1, earners } = await loadFixture(posted);
      const { amount, proof } = proofOf(tree1, earners[0]);
      await settlement.claim(1, earners[0], amount, proof);
      await expect(settlement.claim(1, earners[0], amount, proof))
        .to.be.revertedWithCustomError(settlement, "EpochNothingToClaim")
        .withArgs(earners[0], amount, amount);
    });

    it("refuses a tampered amount or another account with a valid proof", async function () {
      const { settlement, tree1, earners } = await loadFixture(posted);
      const { amount, proof } = proofOf(tree1, earners[0]);
      await expect(settlement.claim(1, earners[0], amount + 1n, proof))
        .to.be.revertedWithCustomError(settlement, "EpochInvalidProof")
        .withArgs(earners[0], amount + 1n);
      await expect(settlement.claim(1, earners[1], amount, proof))
        .to.be.revertedWithCustomError(settlement, "EpochInvalidProof")
        .withArgs(earners[1], amount);
    });

    it("refuses an internal node presented as a leaf", async function () {
      const { settlement, tree1, earners } = await loadFixture(posted);
      const i = [...tree1.entries()].find(([, v]) => v[0] === earners[0])[0];
      const leaf = tree1.leafHash(tree1.at(i));
      const proof = tree1.getProof(i);
      expect(proof.length).to.equal(2);
      // the parent of (leaf, proof[0]) is an internal node whose proof to the root is proof.slice(1)
      const [a, b] = [leaf, proof[0]].sort((x, y) => (BigInt(x) < BigInt(y) ? -1 : 1));
      const node = ethers.keccak256(ethers.concat([a, b]));
      expect(tree1.root).to.equal(
        ethers.keccak256(ethers.concat([node, proof[1]].sort((x, y) => (BigInt(x) < BigInt(y) ? -1 : 1))))
      );
      // 1) the real leaf values with the internal node's proof
      const { amount } = proofOf(tree1, earners[0]);
      await expect(settlement.claim(1, earners[0], amount, proof.slice(1)))
        .to.be.revertedWithCustomError(settlement, "EpochInvalidProof")
        .withArgs(earners[0], amount);
      // 2) the node's 64-byte preimage reinterpreted as (address, uint256): a single-hashed leaf would be
      //    keccak256(abi.encode(account, amount)); the double-hashed leaf is not
      const account = ethers.getAddress(ethers.dataSlice(a, 12));
      await expect(settlement.claim(1, account, BigInt(b), proof.slice(1)))
        .to.be.revertedWithCustomError(settlement, "EpochInvalidProof")
        .withArgs(account, BigInt(b));
      // 3) the node itself as the claimed amount
      await expect(settlement.claim(1, earners[0], BigInt(node), proof.slice(1)))
        .to.be.revertedWithCustomError(settlement, "EpochInvalidProof")
        .withArgs(earners[0], BigInt(node));
    });

    it("a second epoch with a higher cumulative pays only the increase", async function () {
      const { token, settlement, vault, clients, tree1, earners, contributors } = await loadFixture(posted);
      const first = proofOf(tree1, earners[0]);
      await settlement.claim(1, earners[0], first.amount, first.proof);
      // more money comes in, epoch 2 raises earner 0 from 10 to 25
      await vault.connect(clients[1]).deposit(50n * ONE);
      await vault.redeem([await H.redemption(vault, clients[1], 50n * ONE)]);
      const tree2 = treeOf([
        [earners[0], 25n * ONE],
        [earners[1], 20n * ONE],
        [earners[2], 30n * ONE],
        [earners[3], 5n * ONE],
      ]);
      await settlement.postEpoch(2, tree2.root, RESULTS_ROOT, ethers.id("file-2"), 80n * ONE, 10n * ONE);
      await time.increase(CHALLENGE_WINDOW);
      const second = proofOf(tree2, earners[0]);
      const tx = settlement.claim(2, earners[0], second.amount, second.proof);
      await expect(tx).to.emit(settlement, "Claimed").withArgs(2n, earners[0], 25n * ONE, 15n * ONE);
      await expect(tx).to.changeTokenBalance(token, contributors[0], 15n * ONE);
      // the old epoch's proof is now worthless for this account
      await expect(settlement.claim(1, earners[0], first.amount, first.proof))
        .to.be.revertedWithCustomError(settlement, "EpochNothingToClaim")
        .withArgs(earners[0], 10n * ONE, 25n * ONE);
      // another account can still claim via the older epoch
      const old = proofOf(tree1, earners[1]);
      await expect(settlement.claim(1, earners[1], old.amount, old.proof)).to.emit(settlement, "Claimed");
    });

    it("refuses to pay more than the claimed epoch's cumulative payout (defense in depth)", async function () {
      const { settlement, earners } = await loadFixture(funded);
      // a faulty tree whose leaves sum to 60 while the posted payout is 50
      const tree = treeOf([
        [earners[0], 30n * ONE],
        [earners[1], 30n * ONE],
      ]);
      await settlement.postEpoch(1, tree.root, RESULTS_ROOT, ethers.ZeroHash, 50n * ONE, 0);
      await time.increase(CHALLENGE_WINDOW);
      await settlement.claim(1, earners[0], 30n * ONE, proofOf(tree, earners[0]).proof);
      await expect(settlement.claim(1, earners[1], 30n * ONE, proofOf(tree, earners[1]).proof))
        .to.be.revertedWithCustomError(settlement, "EpochOverclaimed")
        .withArgs(60n * ONE, 50n * ONE);
      // a later epoch in its window (not final) claiming a higher payout does not loosen the bound
      await settlement.postEpoch(2, ethers.id("root-2"), RESULTS_ROOT, ethers.ZeroHash, 100n * ONE, 0);
      await expect(settlement.claim(1, earners[1], 30n * ONE, proofOf(tree, earners[1]).proof))
        .to.be.revertedWithCustomError(settlement, "EpochOverclaimed")
        .withArgs(60n * ONE, 50n * ONE);
      expect(await settlement.totalClaimed()).to.equal(30n * ONE);
    });

    it("a stale epoch cannot push totalClaimed past its own payout; the newer epoch's proof pays", async function () {
      const { settlement, vault, clients, tree1, earners } = await loadFixture(posted);
      // epoch 1: payout 65 (10, 20, 30, 5); epoch 2: payout 80 (25, 20, 30, 5)
      await vault.connect(clients[1]).deposit(50n * ONE);
      await vault.redeem([await H.redemption(vault, clients[1], 50n * ONE)]);
      const tree2 = treeOf([
        [earners[0], 25n * ONE],
        [earners[1], 20n * ONE],
        [earners[2], 30n * ONE],
        [earners[3], 5n * ONE],
      ]);
      await settlement.postEpoch(2, tree2.root, RESULTS_ROOT, ethers.id("file-2"), 80n * ONE, 10n * ONE);
      await time.increase(CHALLENGE_WINDOW);
      for (const i of [0, 2]) {
        const p = proofOf(tree2, earners[i]);
        await settlement.claim(2, earners[i], p.amount, p.proof);
      }
      expect(await settlement.totalClaimed()).to.equal(55n * ONE);
      const stale = proofOf(tree1, earners[1]);
      await expect(settlement.claim(1, earners[1], stale.amount, stale.proof))
        .to.be.revertedWithCustomError(settlement, "EpochOverclaimed")
        .withArgs(75n * ONE, 65n * ONE);
      const fresh = proofOf(tree2, earners[1]);
      await expect(settlement.claim(2, earners[1], fresh.amount, fresh.proof))
        .to.emit(settlement, "Claimed")
        .withArgs(2n, earners[1], 20n * ONE, 20n * ONE);
      expect(await settlement.totalClaimed()).to.equal(75n * ONE);
    });

    it("gas: postEpoch and claim", async function () {
      const { settlement, earners } = await loadFixture(funded);
      // a realistic tree: 1000 leaves
      const values = [];
      for (let i = 0; i < 996; i++) values.push([ethers.getAddress(ethers.toBeHex(i + 1, 20)), 1n]);
      earners.forEach((a) => values.push([a, 10n * ONE]));
      const tree = treeOf(values);
      const post = await (await settlement.postEpoch(1, tree.root, RESULTS_ROOT, ethers.id("f"), 60n * ONE, 10n * ONE)).wait();
      await time.increase(CHALLENGE_WINDOW);
      const { amount, proof } = proofOf(tree, earners[0]);
      const claim = await (await settlement.claim(1, earners[0], amount, proof)).wait();
      const fees = await (await settlement.claimFees(1)).wait();
      console.log(`      gas postEpoch: ${post.gasUsed}`);
      console.log(`      gas claim (1000-leaf tree, proof length ${proof.length}, first claim): ${claim.gasUsed}`);
      console.log(`      gas claimFees: ${fees.gasUsed}`);
      expect(await settlement.feesPaid()).to.equal(10n * ONE);
      expect(await settlement.claimedOf(earners[0])).to.equal(10n * ONE);
    });
  });

  describe("claimFees", function () {
    it("pays the treasury the unpaid fees, once per increase", async function () {
      const { token, settlement, treasury, stranger } = await loadFixture(posted);
      const tx = settlement.connect(stranger).claimFees(1);
      await expect(tx).to.emit(settlement, "FeesClaimed").withArgs(1n, treasury.address, 5n * ONE);
      await expect(tx).to.changeTokenBalances(token, [treasury, settlement], [5n * ONE, -5n * ONE]);
      expect(await settlement.feesPaid()).to.equal(5n * ONE);
      await expect(settlement.claimFees(1))
        .to.be.revertedWithCustomError(settlement, "EpochNothingToClaim")
        .withArgs(treasury.address, 5n * ONE, 5n * ONE);
      // epoch 2 raises fees to 8: only 3 more
      await settlement.postEpoch(2, ethers.id("root-2"), RESULTS_ROOT, ethers.ZeroHash, 65n * ONE, 8n * ONE);
      await expect(settlement.claimFees(2))
        .to.be.revertedWithCustomError(settlement, "EpochNotClaimable")
        .withArgs(2n, (await settlement.epochs(2)).claimableAt);
      await time.increase(CHALLENGE_WINDOW);
      await expect(settlement.claimFees(2)).to.emit(settlement, "FeesClaimed").withArgs(2n, treasury.address, 3n * ONE);
      await expect(settlement.claimFees(1))
        .to.be.revertedWithCustomError(settlement, "EpochNothingToClaim")
        .withArgs(treasury.address, 5n * ONE, 8n * ONE);
    });

    it("refuses unknown epochs", async function () {
      const { settlement } = await loadFixture(posted);
      for (const epoch of [0n, 2n]) {
        await expect(settlement.claimFees(epoch)).to.be.revertedWithCustomError(settlement, "EpochUnknown").withArgs(epoch);
      }
    });

    it("refuses an epoch with zero fees", async function () {
      const { settlement, treasury } = await loadFixture(funded);
      await settlement.postEpoch(1, ethers.id("root"), RESULTS_ROOT, ethers.ZeroHash, 0, 0);
      await time.increase(CHALLENGE_WINDOW);
      await expect(settlement.claimFees(1))
        .to.be.revertedWithCustomError(settlement, "EpochNothingToClaim")
        .withArgs(treasury.address, 0n, 0n);
    });
  });

  describe("veto and re-post", function () {
    // epoch 1 posted (tree1: 10, 20, 30, 5; payout 65, fees 5) and still in its challenge window
    async function inWindow() {
      const f = await funded();
      f.values1 = f.earners.map((a, i) => [a, [10n, 20n, 30n, 5n][i] * ONE]);
      f.tree1 = treeOf(f.values1);
      const tx = f.settlement.postEpoch(1, f.tree1.root, RESULTS_ROOT, ethers.id("file-1"), 65n * ONE, 5n * ONE);
      f.claimableAt = (await H.txTime(tx)) + CHALLENGE_WINDOW;
      return f;
    }

    it("the guardian vetoes in the window; nothing is ever paid against a vetoed epoch", async function () {
      const { settlement, admin, tree1, earners, claimableAt } = await loadFixture(inWindow);
      await expect(settlement.veto(1)).to.emit(settlement, "EpochVetoed").withArgs(1n, admin.address);
      expect((await settlement.epochs(1)).vetoed).to.equal(true);
      expect(await settlement.lastEpoch()).to.equal(1n);
      const { amount, proof } = proofOf(tree1, earners[0]);
      for (const when of ["in window", "after window"]) {
        if (when === "after window") await time.increaseTo(claimableAt + 10n);
        await expect(settlement.claim(1, earners[0], amount, proof))
          .to.be.revertedWithCustomError(settlement, "EpochVetoedError")
          .withArgs(1n);
        await expect(settlement.claimFees(1)).to.be.revertedWithCustomError(settlement, "EpochVetoedError").withArgs(1n);
        expect(await settlement.isFinalized(1)).to.equal(false);
      }
    });

    it("veto refuses strangers, the settler without the guardian role, unknown epochs, a closed window, a second veto", async function () {
      const { settlement, stranger, treasury, claimableAt } = await loadFixture(inWindow);
      const GUARDIAN = await settlement.GUARDIAN_ROLE();
      await settlement.grantRole(await settlement.SETTLER_ROLE(), treasury.address);
      for (const who of [stranger, treasury]) {
        await expect(settlement.connect(who).veto(1))
          .to.be.revertedWithCustomError(settlement, "AccessControlUnauthorizedAccount")
          .withArgs(who.address, GUARDIAN);
      }
      for (const epoch of [0n, 2n]) {
        await expect(settlement.veto(epoch)).to.be.revertedWithCustomError(settlement, "EpochUnknown").withArgs(epoch);
      }
      // a separately granted guardian may veto
      await settlement.grantRole(GUARDIAN, stranger.address);
      await expect(settlement.connect(stranger).veto(1)).to.emit(settlement, "EpochVetoed").withArgs(1n, stranger.address);
      await expect(settlement.veto(1)).to.be.revertedWithCustomError(settlement, "EpochAlreadyVetoed").withArgs(1n);
      // re-post: the window of the new record closes at its own claimableAt, exactly
      const fresh = (await H.txTime(settlement.postEpoch(1, ethers.id("root"), RESULTS_ROOT, ethers.ZeroHash, 0, 0))) + CHALLENGE_WINDOW;
      expect(fresh).to.be.greaterThan(claimableAt); // a fresh window, not the vetoed record's
      await time.setNextBlockTimestamp(fresh);
      await expect(settlement.veto(1)).to.be.revertedWithCustomError(settlement, "EpochWindowOver").withArgs(1n, fresh);
    });

    it("veto, re-post with a fresh window, then claim from the new tree only", async function () {
      const { token, settlement, tree1, earners, contributors } = await loadFixture(inWindow);
      await settlement.veto(1);
      // the vetoed number must be re-posted before the next one
      await expect(settlement.postEpoch(2, ethers.id("r"), RESULTS_ROOT, ethers.ZeroHash, 0, 0))
        .to.be.revertedWithCustomError(settlement, "EpochOutOfOrder")
        .withArgs(1n, 2n);
      const fixed = treeOf([
        [earners[0], 12n * ONE],
        [earners[1], 18n * ONE],
      ]);
      const tx = settlement.postEpoch(1, fixed.root, RESULTS_ROOT, ethers.id("file-1b"), 30n * ONE, 3n * ONE);
      const claimableAt = (await H.txTime(tx)) + CHALLENGE_WINDOW;
      await expect(tx)
        .to.emit(settlement, "EpochPosted")
        .withArgs(1n, fixed.root, RESULTS_ROOT, ethers.id("file-1b"), 30n * ONE, 3n * ONE, claimableAt);
      const e = await settlement.epochs(1);
      expect([e.root, e.vetoed, e.claimableAt]).to.deep.equal([fixed.root, false, claimableAt]);
      // once replaced, a non-vetoed epoch cannot be posted again
      await expect(settlement.postEpoch(1, fixed.root, RESULTS_ROOT, ethers.ZeroHash, 30n * ONE, 3n * ONE))
        .to.be.revertedWithCustomError(settlement, "EpochOutOfOrder")
        .withArgs(2n, 1n);
      const good = proofOf(fixed, earners[0]);
      await expect(settlement.claim(1, earners[0], good.amount, good.proof))
        .to.be.revertedWithCustomError(settlement, "EpochNotClaimable")
        .withArgs(1n, claimableAt);
      await time.increaseTo(claimableAt);
      const old = proofOf(tree1, earners[0]);
      await expect(settlement.claim(1, earners[0], old.amount, old.proof))
        .to.be.revertedWithCustomError(settlement, "EpochInvalidProof")
        .withArgs(earners[0], old.amount);
      await expect(settlement.claim(1, earners[0], good.amount, good.proof)).to.changeTokenBalance(token, contributors[0], 12n * ONE);
      await expect(settlement.claimFees(1)).to.emit(settlement, "FeesClaimed").withArgs(1n, await settlement.treasury(), 3n * ONE);
    });

    it("a re-post is compared with the previous (final) epoch's totals", async function () {
      const { settlement } = await loadFixture(posted); // epoch 1 final: payout 65, fees 5
      await settlement.postEpoch(2, ethers.id("r2"), RESULTS_ROOT, ethers.ZeroHash, 90n * ONE, 10n * ONE);
      await settlement.veto(2);
      await expect(settlement.postEpoch(2, ethers.id("r2b"), RESULTS_ROOT, ethers.ZeroHash, 64n * ONE, 5n * ONE))
        .to.be.revertedWithCustomError(settlement, "EpochTotalsDecreased")
        .withArgs(2n);
      await expect(settlement.postEpoch(2, ethers.id("r2b"), RESULTS_ROOT, ethers.ZeroHash, 65n * ONE, 5n * ONE)).to.emit(
        settlement,
        "EpochPosted"
      );
    });

    it("vetoing an earlier epoch voids the later ones still in their windows", async function () {
      const { settlement, tree1, earners } = await loadFixture(inWindow);
      const [m, i] = [ethers.id("model"), ethers.id("input")];
      const results = H.resultsTree([
        [ethers.id("job"), m, i, ethers.id("fp"), ethers.id("hash")],
        [ethers.id("j2"), m, ethers.id("i2"), ethers.id("fp"), ethers.id("h2")],
      ]);
      await settlement.postEpoch(2, tree1.root, results.root, ethers.id("file-2"), 65n * ONE, 5n * ONE);
      await settlement.veto(1);
      expect(await settlement.lastEpoch()).to.equal(1n);
      await time.increase(CHALLENGE_WINDOW);
      const { amount, proof } = proofOf(tree1, earners[0]);
      await expect(settlement.claim(2, earners[0], amount, proof)).to.be.revertedWithCustomError(settlement, "EpochUnknown").withArgs(2n);
      await expect(settlement.claimFees(2)).to.be.revertedWithCustomError(settlement, "EpochUnknown").withArgs(2n);
      await expect(settlement.veto(2)).to.be.revertedWithCustomError(settlement, "EpochUnknown").withArgs(2n);
      expect(await settlement.isFinalized(2)).to.equal(false);
      expect(await settlement.verifyResult(2, ...results.at(0), results.getProof(0))).to.equal(false);
      await expect(settlement.postEpoch(2, tree1.root, RESULTS_ROOT, ethers.ZeroHash, 65n * ONE, 5n * ONE))
        .to.be.revertedWithCustomError(settlement, "EpochOutOfOrder")
        .withArgs(1n, 2n);
      await settlement.postEpoch(1, tree1.root, RESULTS_ROOT, ethers.id("file-1b"), 65n * ONE, 5n * ONE);
      await expect(settlement.postEpoch(2, tree1.root, results.root, ethers.id("file-2b"), 65n * ONE, 5n * ONE)).to.emit(
        settlement,
        "EpochPosted"
      );
    });
  });

  describe("isFinalized and verifyResult", function () {
    const JOB = ethers.id("job-1");
    const MODEL = ethers.id("model-1");
    const INPUT = ethers.id("input-1");
    const FP_A = ethers.id("class-A");
    const FP_B = ethers.id("class-B");
    async function withResults() {
      const f = await funded();
      f.results = H.resultsTree([
        [JOB, MODEL, INPUT, FP_A, ethers.id("hash-A")],
        [JOB, MODEL, INPUT, FP_B, ethers.id("hash-B")],
        [ethers.id("job-2"), MODEL, ethers.id("input-2"), FP_A, ethers.id("hash-2")],
        [ethers.id("job-3"), ethers.id("model-3"), ethers.id("input-3"), FP_A, ethers.id("hash-3")],
      ]);
      const tx = f.settlement.postEpoch(1, ethers.id("root"), f.results.root, ethers.ZeroHash, 0, 0);
      f.claimableAt = (await H.txTime(tx)) + CHALLENGE_WINDOW;
      return f;
    }

    it("isFinalized: posted, not vetoed, and from claimableAt on", async function () {
      const { settlement, claimableAt } = await loadFixture(withResults);
      expect(await settlement.isFinalized(0)).to.equal(false);
      expect(await settlement.isFinalized(1)).to.equal(false);
      expect(await settlement.isFinalized(2)).to.equal(false);
      await time.increaseTo(claimableAt - 1n);
      expect(await settlement.isFinalized(1)).to.equal(false);
      await time.increaseTo(claimableAt);
      expect(await settlement.isFinalized(1)).to.equal(true);
      await settlement.postEpoch(2, ethers.id("root"), RESULTS_ROOT, ethers.ZeroHash, 0, 0);
      await settlement.veto(2);
      await time.increase(CHALLENGE_WINDOW);
      expect(await settlement.isFinalized(2)).to.equal(false);
      expect(await settlement.isFinalized(1)).to.equal(true);
    });

    it("verifyResult holds exactly the (job, model, input, fingerprint class, consensus hash) leaves", async function () {
      const { settlement, results } = await loadFixture(withResults);
      for (const [i, leaf] of results.entries()) {
        expect(await settlement.verifyResult(1, ...leaf, results.getProof(i))).to.equal(true);
      }
      const i = [...results.entries()].find(([, v]) => v[0] === JOB && v[3] === FP_A)[0];
      const proof = results.getProof(i);
      // another fingerprint class, a tampered hash, another job, an unposted epoch
      expect(await settlement.verifyResult(1, JOB, MODEL, INPUT, FP_B, ethers.id("hash-A"), proof)).to.equal(false);
      expect(await settlement.verifyResult(1, JOB, MODEL, INPUT, FP_A, ethers.id("hash-B"), proof)).to.equal(false);
      expect(await settlement.verifyResult(1, ethers.id("job-2"), MODEL, INPUT, FP_A, ethers.id("hash-A"), proof)).to.equal(false);
      for (const epoch of [0n, 2n]) {
        expect(await settlement.verifyResult(epoch, JOB, MODEL, INPUT, FP_A, ethers.id("hash-A"), proof)).to.equal(false);
      }
    });

    it("verifyResult: each of the five leaf fields matters", async function () {
      const { settlement, results } = await loadFixture(withResults);
      const i = [...results.entries()].find(([, v]) => v[0] === JOB && v[3] === FP_A)[0];
      const leaf = results.at(i);
      const proof = results.getProof(i);
      expect(leaf).to.deep.equal([JOB, MODEL, INPUT, FP_A, ethers.id("hash-A")]);
      expect(await settlement.verifyResult(1, ...leaf, proof)).to.equal(true);
      const other = ethers.id("something else");
      for (const [k, name] of ["jobId", "modelHash", "inputHash", "fingerprint", "resultHash"].entries()) {
        const changed = [...leaf];
        changed[k] = other;
        expect(await settlement.verifyResult(1, ...changed, proof), `${name} changed`).to.equal(false);
        // and the field's value taken from another leaf of the tree (a real value, not a made-up one)
        const real = [...results.entries()].map(([, v]) => v[k]).find((x) => x !== leaf[k]);
        expect(real, name).to.not.equal(undefined);
        const swapped = [...leaf];
        swapped[k] = real;
        expect(await settlement.verifyResult(1, ...swapped, proof), `${name} from another leaf`).to.equal(false);
      }
      // the fields are positional: swapping the model and the input is another leaf
      expect(await settlement.verifyResult(1, JOB, INPUT, MODEL, FP_A, ethers.id("hash-A"), proof)).to.equal(false);
    });

    it("verifyResult refuses an internal node presented as a leaf", async function () {
      const { settlement, results } = await loadFixture(withResults);
      const sortPair = (x, y) => [x, y].sort((p, q) => (BigInt(p) < BigInt(q) ? -1 : 1));
      const leaf = results.leafHash(results.at(0));
      const proof = results.getProof(0);
      expect(proof.length).to.equal(2);
      const [a, b] = sortPair(leaf, proof[0]);
      const node = ethers.keccak256(ethers.concat([a, b]));
      expect(results.root).to.equal(ethers.keccak256(ethers.concat(sortPair(node, proof[1]))));
      // the node's 64-byte preimage spread over the leaf fields, and the node itself as each field
      const Z = ethers.ZeroHash;
      const forged = [[a, b, Z, Z, Z], [Z, Z, Z, a, b]];
      for (let k = 0; k < 5; k++) forged.push([Z, Z, Z, Z, Z].map((z, j) => (j === k ? node : z)));
      for (const fields of forged) {
        expect(await settlement.verifyResult(1, ...fields, proof.slice(1))).to.equal(false);
      }
    });
  });

  describe("re-entry through a malicious token", function () {
    async function reentrant() {
      const f = await H.deployWired({ token: "ReentrantToken" });
      await f.vault.connect(f.clients[0]).deposit(100n * ONE);
      await f.vault.redeem([await H.redemption(f.vault, f.clients[0], 100n * ONE)]);
      f.earners = f.contributors.map((c) => c.address);
      f.tree = treeOf(f.earners.map((a, i) => [a, [10n, 20n, 30n, 5n][i] * ONE]));
      await f.settlement.postEpoch(1, f.tree.root, RESULTS_ROOT, ethers.id("file-1"), 65n * ONE, 5n * ONE);
      await time.increase(CHALLENGE_WINDOW);
      return f;
    }

    it("claim cannot be re-entered (another claim, or claimFees) from the token transfer", async function () {
      const { token, settlement, tree, earners, contributors } = await loadFixture(reentrant);
      const addr = await settlement.getAddress();
      const b = proofOf(tree, earners[1]);
      // earner 0's claim tries to re-enter a claim for earner 1; earner 2's tries to re-enter claimFees
      for (const [who, data] of [
        [0, settlement.interface.encodeFunctionData("claim", [1, earners[1], b.amount, b.proof])],
        [2, settlement.interface.encodeFunctionData("claimFees", [1])],
      ]) {
        await token.arm(addr, data);
        const p = proofOf(tree, earners[who]);
        const tx = settlement.claim(1, earners[who], p.amount, p.proof);
        await expect(tx).to.changeTokenBalances(token, [contributors[who], settlement], [p.amount, -p.amount]);
        expect(await token.lastSuccess()).to.equal(false);
        expect(H.reentryError(settlement, await token.lastReturnData())).to.equal("ReentrancyGuardReentrantCall");
      }
      expect(await settlement.claimedOf(earners[1])).to.equal(0n);
      expect(await settlement.feesPaid()).to.equal(0n);
      expect(await settlement.totalClaimed()).to.equal(40n * ONE);
      expect(await token.balanceOf(addr)).to.equal(60n * ONE);
      // the blocked claims still work on their own
      await expect(settlement.claim(1, earners[1], b.amount, b.proof)).to.emit(settlement, "Claimed");
      await expect(settlement.claimFees(1)).to.emit(settlement, "FeesClaimed");
    });
  });
});
