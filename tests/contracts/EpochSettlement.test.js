const { expect } = require("chai");
const { ethers } = require("hardhat");
const { loadFixture, time } = require("@nomicfoundation/hardhat-network-helpers");
const { StandardMerkleTree } = require("@openzeppelin/merkle-tree");
const H = require("./helpers");
const { ONE, CHALLENGE_WINDOW } = H;

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
    await f.settlement.postEpoch(1, f.tree1.root, ethers.id("file-1"), 65n * ONE, 5n * ONE);
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
      const tx = await settlement.postEpoch(1, root, ethers.id("file"), 60n * ONE, 40n * ONE);
      const now = BigInt((await ethers.provider.getBlock(tx.blockNumber)).timestamp);
      await expect(tx)
        .to.emit(settlement, "EpochPosted")
        .withArgs(1n, root, ethers.id("file"), 60n * ONE, 40n * ONE, now + CHALLENGE_WINDOW);
      expect(await settlement.lastEpoch()).to.equal(1n);
      const e = await settlement.epochs(1);
      expect(e.root).to.equal(root);
      expect(e.fileHash).to.equal(ethers.id("file"));
      expect(e.cumulativePayout).to.equal(60n * ONE);
      expect(e.cumulativeFees).to.equal(40n * ONE);
      expect(e.postedAt).to.equal(now);
      expect(e.claimableAt).to.equal(now + CHALLENGE_WINDOW);
    });

    it("enforces order", async function () {
      const { settlement } = await loadFixture(funded);
      const root = ethers.id("root");
      await expect(settlement.postEpoch(0, root, ethers.ZeroHash, 0, 0))
        .to.be.revertedWithCustomError(settlement, "EpochOutOfOrder")
        .withArgs(1n, 0n);
      await expect(settlement.postEpoch(2, root, ethers.ZeroHash, 0, 0))
        .to.be.revertedWithCustomError(settlement, "EpochOutOfOrder")
        .withArgs(1n, 2n);
      await settlement.postEpoch(1, root, ethers.ZeroHash, 0, 0);
      await expect(settlement.postEpoch(1, root, ethers.ZeroHash, 0, 0))
        .to.be.revertedWithCustomError(settlement, "EpochOutOfOrder")
        .withArgs(2n, 1n);
      await expect(settlement.postEpoch(2, root, ethers.ZeroHash, 0, 0)).to.emit(settlement, "EpochPosted");
    });

    it("refuses an empty root", async function () {
      const { settlement } = await loadFixture(funded);
      await expect(settlement.postEpoch(1, ethers.ZeroHash, ethers.ZeroHash, 0, 0)).to.be.revertedWithCustomError(
        settlement,
        "EpochEmptyRoot"
      );
    });

    it("refuses decreasing totals", async function () {
      const { settlement } = await loadFixture(funded);
      const root = ethers.id("root");
      await settlement.postEpoch(1, root, ethers.ZeroHash, 50n, 10n);
      await expect(settlement.postEpoch(2, root, ethers.ZeroHash, 49n, 10n))
        .to.be.revertedWithCustomError(settlement, "EpochTotalsDecreased")
        .withArgs(2n);
      await expect(settlement.postEpoch(2, root, ethers.ZeroHash, 50n, 9n))
        .to.be.revertedWithCustomError(settlement, "EpochTotalsDecreased")
        .withArgs(2n);
      await expect(settlement.postEpoch(2, root, ethers.ZeroHash, 50n, 10n)).to.emit(settlement, "EpochPosted");
    });

    it("refuses a root that needs more than the vault redeemed", async function () {
      const { settlement } = await loadFixture(funded);
      await expect(settlement.postEpoch(1, ethers.id("root"), ethers.ZeroHash, 90n * ONE, 10n * ONE + 1n))
        .to.be.revertedWithCustomError(settlement, "EpochUnderfunded")
        .withArgs(100n * ONE + 1n, 100n * ONE);
      await expect(settlement.postEpoch(1, ethers.id("root"), ethers.ZeroHash, 90n * ONE, 10n * ONE)).to.emit(
        settlement,
        "EpochPosted"
      );
    });

    it("refuses to post before the vault is set", async function () {
      const { settlement } = await loadFixture(H.deployAll);
      await expect(settlement.postEpoch(1, ethers.id("root"), ethers.ZeroHash, 0, 0)).to.be.revertedWithCustomError(
        settlement,
        "EpochVaultNotSet"
      );
    });

    it("refuses a stranger", async function () {
      const { settlement, stranger } = await loadFixture(funded);
      await expect(settlement.connect(stranger).postEpoch(1, ethers.id("root"), ethers.ZeroHash, 0, 0))
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
      const tx = await settlement.postEpoch(1, tree.root, ethers.ZeroHash, ONE, 0);
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
      await settlement.postEpoch(2, tree2.root, ethers.id("file-2"), 80n * ONE, 10n * ONE);
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

    it("refuses to pay more than the latest cumulative payout (defense in depth)", async function () {
      const { settlement, earners } = await loadFixture(funded);
      // a faulty tree whose leaves sum to 60 while the posted payout is 50
      const tree = treeOf([
        [earners[0], 30n * ONE],
        [earners[1], 30n * ONE],
      ]);
      await settlement.postEpoch(1, tree.root, ethers.ZeroHash, 50n * ONE, 0);
      await time.increase(CHALLENGE_WINDOW);
      await settlement.claim(1, earners[0], 30n * ONE, proofOf(tree, earners[0]).proof);
      await expect(settlement.claim(1, earners[1], 30n * ONE, proofOf(tree, earners[1]).proof))
        .to.be.revertedWithCustomError(settlement, "EpochOverclaimed")
        .withArgs(60n * ONE, 50n * ONE);
    });

    it("gas: postEpoch and claim", async function () {
      const { settlement, earners } = await loadFixture(funded);
      // a realistic tree: 1000 leaves
      const values = [];
      for (let i = 0; i < 996; i++) values.push([ethers.getAddress(ethers.toBeHex(i + 1, 20)), 1n]);
      earners.forEach((a) => values.push([a, 10n * ONE]));
      const tree = treeOf(values);
      const post = await (await settlement.postEpoch(1, tree.root, ethers.id("f"), 60n * ONE, 10n * ONE)).wait();
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
      await settlement.postEpoch(2, ethers.id("root-2"), ethers.ZeroHash, 65n * ONE, 8n * ONE);
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
      await settlement.postEpoch(1, ethers.id("root"), ethers.ZeroHash, 0, 0);
      await time.increase(CHALLENGE_WINDOW);
      await expect(settlement.claimFees(1))
        .to.be.revertedWithCustomError(settlement, "EpochNothingToClaim")
        .withArgs(treasury.address, 0n, 0n);
    });
  });
});
