const { expect } = require("chai");
const { ethers } = require("hardhat");
const { loadFixture, time } = require("@nomicfoundation/hardhat-network-helpers");
const H = require("./helpers");
const { ONE } = H;

describe("PaymentVault", function () {
  async function wired() {
    return H.deployWired();
  }
  async function unwired() {
    return H.deployAll();
  }

  describe("deployment and views", function () {
    it("exposes token, roles, constants and an EIP-712 domain matching ethers", async function () {
      const { token, vault, admin } = await loadFixture(unwired);
      expect(await vault.token()).to.equal(await token.getAddress());
      expect(await vault.settlement()).to.equal(ethers.ZeroAddress);
      expect(await vault.MAX_REDEEM_BATCH()).to.equal(64n);
      expect(await vault.withdrawalDelay()).to.equal(H.WITHDRAWAL_DELAY);
      expect(await vault.SETTLER_ROLE()).to.equal(ethers.id("SETTLER_ROLE"));
      expect(await vault.hasRole(await vault.DEFAULT_ADMIN_ROLE(), admin.address)).to.equal(true);
      expect(await vault.hasRole(await vault.SETTLER_ROLE(), admin.address)).to.equal(true);
      expect(await vault.VOUCHER_TYPEHASH()).to.equal(
        ethers.id("Voucher(address client,uint256 cumulativeAmount,uint256 expiry)")
      );
      const domain = await H.vaultDomain(await vault.getAddress());
      expect(await vault.domainSeparator()).to.equal(ethers.TypedDataEncoder.hashDomain(domain));
      const v = { client: admin.address, cumulativeAmount: 123n, expiry: 456n };
      expect(await vault.hashVoucher(v)).to.equal(ethers.TypedDataEncoder.hash(domain, H.VOUCHER_TYPES, v));
    });

    it("constructor refuses zero addresses", async function () {
      const { token, admin, vault } = await loadFixture(unwired);
      const Vault = await ethers.getContractFactory("PaymentVault");
      await expect(Vault.deploy(ethers.ZeroAddress, admin.address, 1)).to.be.revertedWithCustomError(vault, "VaultZeroAddress");
      await expect(Vault.deploy(await token.getAddress(), ethers.ZeroAddress, 1)).to.be.revertedWithCustomError(
        vault,
        "VaultZeroAddress"
      );
    });
  });

  describe("setSettlement", function () {
    it("sets once and emits SettlementSet", async function () {
      const { vault, settlement } = await loadFixture(unwired);
      const addr = await settlement.getAddress();
      await expect(vault.setSettlement(addr)).to.emit(vault, "SettlementSet").withArgs(addr);
      expect(await vault.settlement()).to.equal(addr);
      await expect(vault.setSettlement(addr)).to.be.revertedWithCustomError(vault, "VaultSettlementAlreadySet").withArgs(addr);
    });

    it("refuses zero and strangers", async function () {
      const { vault, stranger } = await loadFixture(unwired);
      await expect(vault.setSettlement(ethers.ZeroAddress)).to.be.revertedWithCustomError(vault, "VaultZeroAddress");
      await expect(vault.connect(stranger).setSettlement(stranger.address))
        .to.be.revertedWithCustomError(vault, "AccessControlUnauthorizedAccount")
        .withArgs(stranger.address, await vault.DEFAULT_ADMIN_ROLE());
    });
  });

  describe("deposits", function () {
    it("deposit credits the caller", async function () {
      const { token, vault, clients } = await loadFixture(wired);
      const [c] = clients;
      const tx = vault.connect(c).deposit(10n * ONE);
      await expect(tx).to.emit(vault, "Deposited").withArgs(c.address, c.address, 10n * ONE, 10n * ONE);
      await expect(tx).to.changeTokenBalances(token, [c, vault], [-10n * ONE, 10n * ONE]);
      await expect(vault.connect(c).deposit(5n)).to.emit(vault, "Deposited").withArgs(c.address, c.address, 5n, 10n * ONE + 5n);
      expect(await vault.depositOf(c.address)).to.equal(10n * ONE + 5n);
      expect(await vault.totalDepositedOf(c.address)).to.equal(10n * ONE + 5n);
    });

    it("depositFor credits another client from the caller's tokens", async function () {
      const { token, vault, clients } = await loadFixture(wired);
      const [payer, client] = clients;
      const tx = vault.connect(payer).depositFor(client.address, 7n);
      await expect(tx).to.emit(vault, "Deposited").withArgs(client.address, payer.address, 7n, 7n);
      await expect(tx).to.changeTokenBalances(token, [payer, client], [-7n, 0n]);
      expect(await vault.depositOf(client.address)).to.equal(7n);
      expect(await vault.depositOf(payer.address)).to.equal(0n);
      await expect(vault.connect(payer).depositFor(ethers.ZeroAddress, 7n)).to.be.revertedWithCustomError(
        vault,
        "VaultZeroAddress"
      );
    });

    it("zero amounts are refused", async function () {
      const { vault, clients } = await loadFixture(wired);
      const [c] = clients;
      await expect(vault.connect(c).deposit(0)).to.be.revertedWithCustomError(vault, "VaultZeroAmount");
      await expect(vault.connect(c).depositFor(c.address, 0)).to.be.revertedWithCustomError(vault, "VaultZeroAmount");
      await expect(vault.connect(c).depositWithPermit(0, 0, 27, ethers.ZeroHash, ethers.ZeroHash)).to.be.revertedWithCustomError(
        vault,
        "VaultZeroAmount"
      );
    });

    async function permitSig(token, owner, spender, value, deadline) {
      const nonce = await token.nonces(owner.address);
      return ethers.Signature.from(
        await owner.signTypedData(await H.tokenDomain(await token.getAddress()), H.PERMIT_TYPES, {
          owner: owner.address,
          spender,
          value,
          nonce,
          deadline,
        })
      );
    }

    it("depositWithPermit deposits without a prior approval", async function () {
      const { token, vault, stranger, admin } = await loadFixture(wired);
      await token.connect(admin).mint(stranger.address, 50n);
      const vaultAddr = await vault.getAddress();
      const deadline = (await H.latest()) + 3600n;
      const sig = await permitSig(token, stranger, vaultAddr, 50n, deadline);
      const tx = vault.connect(stranger).depositWithPermit(50n, deadline, sig.v, sig.r, sig.s);
      await expect(tx).to.emit(vault, "Deposited").withArgs(stranger.address, stranger.address, 50n, 50n);
      await expect(tx).to.changeTokenBalances(token, [stranger, vault], [-50n, 50n]);
      expect(await token.allowance(stranger.address, vaultAddr)).to.equal(0n);
    });

    it("depositWithPermit tolerates a front-run permit", async function () {
      const { token, vault, stranger, admin } = await loadFixture(wired);
      await token.connect(admin).mint(stranger.address, 50n);
      const vaultAddr = await vault.getAddress();
      const deadline = (await H.latest()) + 3600n;
      const sig = await permitSig(token, stranger, vaultAddr, 50n, deadline);
      // someone else submits the permit first: the nonce is consumed, the allowance is set
      await token.connect(admin).permit(stranger.address, vaultAddr, 50n, deadline, sig.v, sig.r, sig.s);
      await expect(vault.connect(stranger).depositWithPermit(50n, deadline, sig.v, sig.r, sig.s))
        .to.emit(vault, "Deposited")
        .withArgs(stranger.address, stranger.address, 50n, 50n);
    });

    it("depositWithPermit with a bad permit and no allowance fails at the transfer", async function () {
      const { token, vault, stranger, admin } = await loadFixture(wired);
      await token.connect(admin).mint(stranger.address, 50n);
      const vaultAddr = await vault.getAddress();
      const deadline = (await H.latest()) + 3600n;
      const sig = await permitSig(token, admin, vaultAddr, 50n, deadline); // signed by the wrong owner
      await expect(vault.connect(stranger).depositWithPermit(50n, deadline, sig.v, sig.r, sig.s))
        .to.be.revertedWithCustomError(token, "ERC20InsufficientAllowance")
        .withArgs(vaultAddr, 0n, 50n);
    });
  });

  describe("redeem", function () {
    async function funded() {
      const f = await H.deployWired();
      for (const c of f.clients) await f.vault.connect(c).deposit(100n * ONE);
      return f;
    }

    it("redeems a voucher signed with signTypedData and forwards funds to settlement", async function () {
      const { token, vault, settlement, clients } = await loadFixture(funded);
      const [c] = clients;
      const item = await H.redemption(vault, c, 10n * ONE, 8n * ONE);
      const tx = vault.redeem([item]);
      await expect(tx).to.emit(vault, "VoucherRedeemed").withArgs(c.address, 8n * ONE, 8n * ONE);
      await expect(tx).to.changeTokenBalances(token, [vault, settlement], [-8n * ONE, 8n * ONE]);
      expect(await vault.redeemedOf(c.address)).to.equal(8n * ONE);
      expect(await vault.depositOf(c.address)).to.equal(92n * ONE);
      expect(await vault.totalRedeemed()).to.equal(8n * ONE);
    });

    it("replaying the same batch is a no-op with no second transfer", async function () {
      const { token, vault, settlement, clients } = await loadFixture(funded);
      const batch = [await H.redemption(vault, clients[0], 3n * ONE), await H.redemption(vault, clients[1], 4n * ONE)];
      await vault.redeem(batch);
      const tx = vault.redeem(batch);
      await expect(tx).not.to.emit(vault, "VoucherRedeemed");
      await expect(tx).not.to.emit(token, "Transfer");
      expect(await vault.totalRedeemed()).to.equal(7n * ONE);
      expect(await token.balanceOf(await settlement.getAddress())).to.equal(7n * ONE);
    });

    it("a higher cumulative voucher charges only the increase; a lower one is skipped", async function () {
      const { token, vault, settlement, clients } = await loadFixture(funded);
      const [c] = clients;
      await vault.redeem([await H.redemption(vault, c, 5n * ONE)]);
      const higher = await H.redemption(vault, c, 9n * ONE);
      const lower = await H.redemption(vault, c, 2n * ONE);
      const tx = vault.redeem([higher, lower]);
      await expect(tx).to.emit(vault, "VoucherRedeemed").withArgs(c.address, 9n * ONE, 4n * ONE);
      await expect(tx).to.changeTokenBalance(token, settlement, 4n * ONE);
      expect((await (await tx).wait()).logs.filter((l) => l.fragment?.name === "VoucherRedeemed").length).to.equal(1);
      expect(await vault.redeemedOf(c.address)).to.equal(9n * ONE);
      expect(await vault.depositOf(c.address)).to.equal(91n * ONE);
    });

    it("retrying a redeemed batch after its vouchers expired is still a no-op", async function () {
      const { token, vault, clients } = await loadFixture(funded);
      const [c] = clients;
      const now = await H.latest();
      const item = await H.redemption(vault, c, 3n * ONE, 3n * ONE, now + 100n);
      await vault.redeem([item]);
      await time.increaseTo(now + 1000n);
      const tx = vault.redeem([item]);
      await expect(tx).not.to.be.reverted;
      await expect(tx).not.to.emit(vault, "VoucherRedeemed");
      await expect(tx).not.to.emit(token, "Transfer");
      expect(await vault.redeemedOf(c.address)).to.equal(3n * ONE);
      // a new amount on the expired voucher is refused
      const more = await H.redemption(vault, c, 4n * ONE, 4n * ONE, now + 100n);
      await expect(vault.redeem([more])).to.be.revertedWithCustomError(vault, "VaultVoucherExpired");
    });

    it("a voucher expiring exactly now is accepted; one past expiry is refused", async function () {
      const { vault, clients } = await loadFixture(funded);
      const [c] = clients;
      const now = await H.latest();
      const ok = await H.redemption(vault, c, 1n, 1n, now + 100n);
      await time.setNextBlockTimestamp(now + 100n);
      await expect(vault.redeem([ok])).to.emit(vault, "VoucherRedeemed");
      const old = await H.redemption(vault, c, 2n, 2n, now + 50n);
      await expect(vault.redeem([old]))
        .to.be.revertedWithCustomError(vault, "VaultVoucherExpired")
        .withArgs(c.address, now + 50n);
    });

    it("refuses a voucher signed by someone else", async function () {
      const { vault, clients } = await loadFixture(funded);
      const [c, other] = clients;
      const voucher = { client: c.address, cumulativeAmount: ONE, expiry: (await H.latest()) + 1000n };
      const signature = await H.signVoucher(other, await vault.getAddress(), voucher);
      await expect(vault.redeem([{ voucher, signature, amount: ONE }]))
        .to.be.revertedWithCustomError(vault, "VaultVoucherSignerMismatch")
        .withArgs(c.address, other.address);
    });

    it("refuses a voucher signed for another chain id", async function () {
      const { vault, clients } = await loadFixture(funded);
      const [c] = clients;
      const voucher = { client: c.address, cumulativeAmount: ONE, expiry: (await H.latest()) + 1000n };
      const signature = await H.signVoucher(c, await vault.getAddress(), voucher, 1n);
      const recovered = ethers.recoverAddress(await vault.hashVoucher(voucher), signature);
      expect(recovered).to.not.equal(c.address);
      await expect(vault.redeem([{ voucher, signature, amount: ONE }]))
        .to.be.revertedWithCustomError(vault, "VaultVoucherSignerMismatch")
        .withArgs(c.address, recovered);
    });

    it("refuses a voucher signed for another vault address", async function () {
      const { token, vault, admin, clients } = await loadFixture(funded);
      const [c] = clients;
      const other = await (await ethers.getContractFactory("PaymentVault")).deploy(await token.getAddress(), admin.address, H.WITHDRAWAL_DELAY);
      const voucher = { client: c.address, cumulativeAmount: ONE, expiry: (await H.latest()) + 1000n };
      const signature = await H.signVoucher(c, await other.getAddress(), voucher);
      const recovered = ethers.recoverAddress(await vault.hashVoucher(voucher), signature);
      await expect(vault.redeem([{ voucher, signature, amount: ONE }]))
        .to.be.revertedWithCustomError(vault, "VaultVoucherSignerMismatch")
        .withArgs(c.address, recovered);
    });

    it("refuses a high-s (malleable) signature", async function () {
      const { vault, clients } = await loadFixture(funded);
      const item = await H.redemption(vault, clients[0], ONE);
      const { signature, s } = H.toHighS(item.signature);
      // same (r, key) on the curve, but OpenZeppelin ECDSA only accepts the lower-half s
      await expect(vault.redeem([{ ...item, signature }]))
        .to.be.revertedWithCustomError(vault, "ECDSAInvalidSignatureS")
        .withArgs(s);
    });

    it("refuses a malformed signature length", async function () {
      const { vault, clients } = await loadFixture(funded);
      const item = await H.redemption(vault, clients[0], ONE);
      await expect(vault.redeem([{ ...item, signature: ethers.dataSlice(item.signature, 0, 64) }]))
        .to.be.revertedWithCustomError(vault, "ECDSAInvalidSignatureLength")
        .withArgs(64n);
    });

    it("refuses an amount above the signed cumulative amount", async function () {
      const { vault, clients } = await loadFixture(funded);
      const [c] = clients;
      const item = await H.redemption(vault, c, ONE, ONE + 1n);
      await expect(vault.redeem([item]))
        .to.be.revertedWithCustomError(vault, "VaultAmountAboveVoucher")
        .withArgs(c.address, ONE + 1n, ONE);
    });

    it("refuses an increase above the client's deposit", async function () {
      const { vault, clients } = await loadFixture(funded);
      const [c] = clients;
      await vault.redeem([await H.redemption(vault, c, 60n * ONE)]);
      const item = await H.redemption(vault, c, 200n * ONE, 150n * ONE);
      await expect(vault.redeem([item]))
        .to.be.revertedWithCustomError(vault, "VaultInsufficientDeposit")
        .withArgs(c.address, 90n * ONE, 40n * ONE);
    });

    it("one bad item reverts the whole batch", async function () {
      const { vault, clients } = await loadFixture(funded);
      const good = await H.redemption(vault, clients[0], ONE);
      const bad = await H.redemption(vault, clients[1], ONE, 2n * ONE);
      await expect(vault.redeem([good, bad])).to.be.revertedWithCustomError(vault, "VaultAmountAboveVoucher");
      expect(await vault.redeemedOf(clients[0].address)).to.equal(0n);
    });

    it("refuses batches above MAX_REDEEM_BATCH", async function () {
      const { vault, clients } = await loadFixture(funded);
      const item = await H.redemption(vault, clients[0], ONE);
      await expect(vault.redeem(Array(65).fill(item)))
        .to.be.revertedWithCustomError(vault, "VaultBatchTooLarge")
        .withArgs(65n, 64n);
    });

    it("refuses to redeem before the settlement is set", async function () {
      const { vault, clients } = await loadFixture(unwired);
      await expect(vault.redeem([])).to.be.revertedWithCustomError(vault, "VaultSettlementNotSet");
      const item = await H.redemption(vault, clients[0], ONE);
      await expect(vault.redeem([item])).to.be.revertedWithCustomError(vault, "VaultSettlementNotSet");
    });

    it("refuses a stranger", async function () {
      const { vault, stranger } = await loadFixture(funded);
      await expect(vault.connect(stranger).redeem([]))
        .to.be.revertedWithCustomError(vault, "AccessControlUnauthorizedAccount")
        .withArgs(stranger.address, await vault.SETTLER_ROLE());
    });

    it("an empty batch transfers nothing", async function () {
      const { token, vault } = await loadFixture(funded);
      await expect(vault.redeem([])).not.to.emit(token, "Transfer");
    });

    it("gas: a full batch of 64 vouchers from 64 clients", async function () {
      const { token, vault, settlement, admin } = await loadFixture(wired);
      const vaultAddr = await vault.getAddress();
      const items = [];
      const wallets = [];
      for (let i = 0; i < 64; i++) {
        const w = ethers.Wallet.createRandom().connect(ethers.provider);
        wallets.push(w);
        await admin.sendTransaction({ to: w.address, value: ONE / 10n });
        await token.mint(w.address, 10n * ONE);
        await token.connect(w).approve(vaultAddr, ethers.MaxUint256);
        await vault.connect(w).deposit(10n * ONE);
        items.push(await H.redemption(vault, w, 5n * ONE, 4n * ONE));
      }
      const tx = await vault.redeem(items);
      const receipt = await tx.wait();
      console.log(`      gas redeem(64 vouchers): ${receipt.gasUsed}`);
      expect(await token.balanceOf(await settlement.getAddress())).to.equal(64n * 4n * ONE);
      expect(await vault.totalRedeemed()).to.equal(64n * 4n * ONE);
      const replay = await (await vault.redeem(items)).wait();
      console.log(`      gas redeem(64 vouchers, replayed no-op): ${replay.gasUsed}`);
      const next = [];
      for (let i = 0; i < 64; i++) next.push(await H.redemption(vault, wallets[i], 6n * ONE, 5n * ONE));
      const steady = await (await vault.redeem(next)).wait();
      console.log(`      gas redeem(64 vouchers, clients already redeemed before): ${steady.gasUsed}`);
      expect(await vault.totalRedeemed()).to.equal(64n * 5n * ONE);
    });
  });

  describe("packed client slot: deposit and redeemed are each at most 2^128 - 1", function () {
    const MAX = 2n ** 128n - 1n;

    async function rich() {
      const f = await H.deployWired();
      await f.token.mint(f.clients[0].address, 2n * MAX);
      await f.token.mint(f.clients[1].address, 2n * MAX);
      return f;
    }

    it("a deposit up to 2^128 - 1 is accepted; one wei more reverts with SafeCast's error", async function () {
      const { token, vault, clients } = await loadFixture(rich);
      const [c, payer] = clients;
      await expect(vault.connect(c).deposit(MAX)).to.emit(vault, "Deposited").withArgs(c.address, c.address, MAX, MAX);
      expect(await vault.depositOf(c.address)).to.equal(MAX);
      const vaultBalance = await token.balanceOf(await vault.getAddress());
      await expect(vault.connect(c).deposit(1n))
        .to.be.revertedWithCustomError(vault, "SafeCastOverflowedUintDowncast")
        .withArgs(128, MAX + 1n);
      await expect(vault.connect(payer).depositFor(c.address, MAX))
        .to.be.revertedWithCustomError(vault, "SafeCastOverflowedUintDowncast")
        .withArgs(128, 2n * MAX);
      // nothing moved, nothing was truncated
      expect(await vault.depositOf(c.address)).to.equal(MAX);
      expect(await vault.totalDepositedOf(c.address)).to.equal(MAX);
      expect(await token.balanceOf(await vault.getAddress())).to.equal(vaultBalance);
    });

    it("a single deposit above 2^128 - 1 reverts, it is not truncated", async function () {
      const { vault, clients } = await loadFixture(rich);
      const [c] = clients;
      await expect(vault.connect(c).deposit(MAX + 1n))
        .to.be.revertedWithCustomError(vault, "SafeCastOverflowedUintDowncast")
        .withArgs(128, MAX + 1n);
      expect(await vault.depositOf(c.address)).to.equal(0n);
    });

    it("a redemption that would take redeemedOf above 2^128 - 1 reverts with SafeCast's error", async function () {
      const { vault, clients } = await loadFixture(rich);
      const [c] = clients;
      await vault.connect(c).deposit(MAX);
      await expect(vault.redeem([await H.redemption(vault, c, MAX)]))
        .to.emit(vault, "VoucherRedeemed")
        .withArgs(c.address, MAX, MAX);
      expect(await vault.redeemedOf(c.address)).to.equal(MAX);
      expect(await vault.depositOf(c.address)).to.equal(0n);
      await vault.connect(c).deposit(1n);
      await expect(vault.redeem([await H.redemption(vault, c, MAX + 1n)]))
        .to.be.revertedWithCustomError(vault, "SafeCastOverflowedUintDowncast")
        .withArgs(128, MAX + 1n);
      expect(await vault.redeemedOf(c.address)).to.equal(MAX);
      expect(await vault.depositOf(c.address)).to.equal(1n);
    });

    it("deposit, redeem and withdraw each leave the other half of the slot intact", async function () {
      const { vault, clients } = await loadFixture(rich);
      const [c, other] = clients;
      await vault.connect(c).deposit(MAX);
      await vault.redeem([await H.redemption(vault, c, MAX - 5n)]);
      expect(await vault.depositOf(c.address)).to.equal(5n);
      expect(await vault.redeemedOf(c.address)).to.equal(MAX - 5n);
      await vault.connect(c).deposit(MAX - 5n);
      expect(await vault.depositOf(c.address)).to.equal(MAX);
      expect(await vault.redeemedOf(c.address)).to.equal(MAX - 5n);
      await vault.connect(c).requestWithdrawal(MAX - 1n);
      await time.increase(H.WITHDRAWAL_DELAY);
      await expect(vault.connect(c).withdraw()).to.emit(vault, "Withdrawn").withArgs(c.address, MAX - 1n, 1n);
      expect(await vault.depositOf(c.address)).to.equal(1n);
      expect(await vault.redeemedOf(c.address)).to.equal(MAX - 5n);
      // another client's slot is untouched
      expect(await vault.depositOf(other.address)).to.equal(0n);
      expect(await vault.redeemedOf(other.address)).to.equal(0n);
      expect(await vault.totalRedeemed()).to.equal(MAX - 5n);
    });

    it("totalRedeemed sums a whole batch (written once) beyond 2^128", async function () {
      const { token, vault, settlement, clients } = await loadFixture(rich);
      const [c0, c1] = clients;
      await vault.connect(c0).deposit(MAX);
      await vault.connect(c1).deposit(MAX);
      const tx = vault.redeem([await H.redemption(vault, c0, MAX), await H.redemption(vault, c1, MAX)]);
      await expect(tx).to.emit(vault, "VoucherRedeemed").withArgs(c0.address, MAX, MAX);
      await expect(tx).to.emit(vault, "VoucherRedeemed").withArgs(c1.address, MAX, MAX);
      expect(await vault.totalRedeemed()).to.equal(2n * MAX);
      expect(await token.balanceOf(await settlement.getAddress())).to.equal(2n * MAX);
    });
  });

  describe("withdrawal with notice", function () {
    // client 0 has 100 ONE deposited
    async function deposited() {
      const f = await H.deployWired();
      await f.vault.connect(f.clients[0]).deposit(100n * ONE);
      return f;
    }

    it("requestWithdrawal records (amount, now + withdrawalDelay) and emits WithdrawalRequested", async function () {
      const { vault, clients } = await loadFixture(deposited);
      const [c] = clients;
      const tx = vault.connect(c).requestWithdrawal(40n * ONE);
      const unlockAt = (await H.txTime(tx)) + H.WITHDRAWAL_DELAY;
      await expect(tx).to.emit(vault, "WithdrawalRequested").withArgs(c.address, 40n * ONE, unlockAt);
      const p = await vault.pendingWithdrawalOf(c.address);
      expect([p.amount, p.unlockAt]).to.deep.equal([40n * ONE, unlockAt]);
      expect(await vault.depositOf(c.address)).to.equal(100n * ONE); // nothing moves before the notice is over
    });

    it("a new request replaces the old one and restarts the notice", async function () {
      const { vault, clients } = await loadFixture(deposited);
      const [c] = clients;
      const first = (await H.txTime(vault.connect(c).requestWithdrawal(40n * ONE))) + H.WITHDRAWAL_DELAY;
      await time.increase(1000);
      const second = (await H.txTime(vault.connect(c).requestWithdrawal(60n * ONE))) + H.WITHDRAWAL_DELAY;
      expect(second).to.be.greaterThan(first);
      expect(await vault.pendingWithdrawalOf(c.address)).to.deep.equal([60n * ONE, second]);
      await time.setNextBlockTimestamp(first);
      await expect(vault.connect(c).withdraw())
        .to.be.revertedWithCustomError(vault, "VaultWithdrawalLocked")
        .withArgs(c.address, second);
    });

    it("requestWithdrawal refuses zero and more than the deposit", async function () {
      const { vault, clients } = await loadFixture(deposited);
      const [c, other] = clients;
      await expect(vault.connect(c).requestWithdrawal(0)).to.be.revertedWithCustomError(vault, "VaultZeroAmount");
      await expect(vault.connect(c).requestWithdrawal(100n * ONE + 1n))
        .to.be.revertedWithCustomError(vault, "VaultInsufficientDeposit")
        .withArgs(c.address, 100n * ONE + 1n, 100n * ONE);
      await expect(vault.connect(other).requestWithdrawal(1n))
        .to.be.revertedWithCustomError(vault, "VaultInsufficientDeposit")
        .withArgs(other.address, 1n, 0n);
    });

    it("cancelWithdrawal clears the request; without one it reverts", async function () {
      const { vault, clients } = await loadFixture(deposited);
      const [c] = clients;
      await expect(vault.connect(c).cancelWithdrawal()).to.be.revertedWithCustomError(vault, "VaultNoWithdrawal").withArgs(c.address);
      await vault.connect(c).requestWithdrawal(40n * ONE);
      await expect(vault.connect(c).cancelWithdrawal()).to.emit(vault, "WithdrawalCancelled").withArgs(c.address);
      expect(await vault.pendingWithdrawalOf(c.address)).to.deep.equal([0n, 0n]);
      await time.increase(H.WITHDRAWAL_DELAY);
      await expect(vault.connect(c).withdraw()).to.be.revertedWithCustomError(vault, "VaultNoWithdrawal").withArgs(c.address);
    });

    it("withdraw is locked until unlockAt, then pays the request once", async function () {
      const { token, vault, clients, stranger } = await loadFixture(deposited);
      const [c] = clients;
      await expect(vault.connect(c).withdraw()).to.be.revertedWithCustomError(vault, "VaultNoWithdrawal").withArgs(c.address);
      const unlockAt = (await H.txTime(vault.connect(c).requestWithdrawal(40n * ONE))) + H.WITHDRAWAL_DELAY;
      // nobody else can trigger or take it
      await expect(vault.connect(stranger).withdraw())
        .to.be.revertedWithCustomError(vault, "VaultNoWithdrawal")
        .withArgs(stranger.address);
      await time.setNextBlockTimestamp(unlockAt - 1n);
      await expect(vault.connect(c).withdraw())
        .to.be.revertedWithCustomError(vault, "VaultWithdrawalLocked")
        .withArgs(c.address, unlockAt);
      await time.setNextBlockTimestamp(unlockAt);
      const tx = vault.connect(c).withdraw();
      await expect(tx).to.emit(vault, "Withdrawn").withArgs(c.address, 40n * ONE, 60n * ONE);
      await expect(tx).to.changeTokenBalances(token, [c, vault, stranger], [40n * ONE, -40n * ONE, 0n]);
      expect(await vault.depositOf(c.address)).to.equal(60n * ONE);
      expect(await vault.pendingWithdrawalOf(c.address)).to.deep.equal([0n, 0n]);
      expect(await vault.totalDepositedOf(c.address)).to.equal(100n * ONE);
      await expect(vault.connect(c).withdraw()).to.be.revertedWithCustomError(vault, "VaultNoWithdrawal").withArgs(c.address);
    });

    it("vouchers signed before the request stay redeemable during the notice; withdraw pays only what is left", async function () {
      const { token, vault, settlement, clients } = await loadFixture(deposited);
      const [c] = clients;
      // signed before the request (valid for 10 days), charged in two steps during the notice
      const voucher = await H.redemption(vault, c, 90n * ONE, 30n * ONE, (await H.latest()) + 10n * 86400n);
      await vault.connect(c).requestWithdrawal(100n * ONE);
      await vault.redeem([voucher]);
      await vault.redeem([{ ...voucher, amount: 70n * ONE }]);
      expect(await vault.depositOf(c.address)).to.equal(30n * ONE);
      await time.increase(H.WITHDRAWAL_DELAY);
      const tx = vault.connect(c).withdraw();
      await expect(tx).to.emit(vault, "Withdrawn").withArgs(c.address, 30n * ONE, 0n);
      await expect(tx).to.changeTokenBalances(token, [c, vault, settlement], [30n * ONE, -30n * ONE, 0n]);
      // nothing is ever redeemable beyond the deposit
      await expect(vault.redeem([{ ...voucher, amount: 90n * ONE }]))
        .to.be.revertedWithCustomError(vault, "VaultInsufficientDeposit")
        .withArgs(c.address, 20n * ONE, 0n);
      expect(await token.balanceOf(await settlement.getAddress())).to.equal(70n * ONE);
      expect(await token.balanceOf(await vault.getAddress())).to.equal(0n);
    });

    it("withdraw after the whole deposit was redeemed pays nothing and clears the request", async function () {
      const { token, vault, clients } = await loadFixture(deposited);
      const [c] = clients;
      await vault.connect(c).requestWithdrawal(50n * ONE);
      await vault.redeem([await H.redemption(vault, c, 100n * ONE)]);
      await time.increase(H.WITHDRAWAL_DELAY);
      const tx = vault.connect(c).withdraw();
      await expect(tx).to.emit(vault, "Withdrawn").withArgs(c.address, 0n, 0n);
      await expect(tx).not.to.emit(token, "Transfer");
      expect(await vault.pendingWithdrawalOf(c.address)).to.deep.equal([0n, 0n]);
    });
  });

  describe("re-entry through a malicious token", function () {
    async function reentrant() {
      const f = await H.deployWired({ token: "ReentrantToken" });
      for (const c of f.clients) await f.vault.connect(c).deposit(100n * ONE);
      return f;
    }

    it("withdraw cannot be re-entered from the token transfer", async function () {
      const { token, vault, clients } = await loadFixture(reentrant);
      const [c] = clients;
      const vaultAddr = await vault.getAddress();
      await vault.connect(c).requestWithdrawal(40n * ONE);
      await time.increase(H.WITHDRAWAL_DELAY);
      await token.arm(vaultAddr, vault.interface.encodeFunctionData("withdraw"));
      const tx = vault.connect(c).withdraw();
      await expect(tx).to.emit(vault, "Withdrawn").withArgs(c.address, 40n * ONE, 60n * ONE);
      await expect(tx).to.changeTokenBalances(token, [c, vault], [40n * ONE, -40n * ONE]);
      expect(await token.attempts()).to.equal(1n);
      expect(await token.lastSuccess()).to.equal(false);
      expect(H.reentryError(vault, await token.lastReturnData())).to.equal("ReentrancyGuardReentrantCall");
      expect(await vault.depositOf(c.address)).to.equal(60n * ONE);
      expect(await token.balanceOf(vaultAddr)).to.equal(360n * ONE);
    });

    it("redeem cannot be re-entered, even by a token holding SETTLER_ROLE", async function () {
      const { token, vault, settlement, clients } = await loadFixture(reentrant);
      const [a, b] = clients;
      await vault.grantRole(await vault.SETTLER_ROLE(), await token.getAddress());
      const second = await H.redemption(vault, b, 5n * ONE);
      await token.arm(await vault.getAddress(), vault.interface.encodeFunctionData("redeem", [[second]]));
      const tx = vault.redeem([await H.redemption(vault, a, 7n * ONE)]);
      await expect(tx).to.changeTokenBalance(token, settlement, 7n * ONE);
      expect(await token.lastSuccess()).to.equal(false);
      expect(H.reentryError(vault, await token.lastReturnData())).to.equal("ReentrancyGuardReentrantCall");
      expect(await vault.redeemedOf(b.address)).to.equal(0n);
      expect(await vault.totalRedeemed()).to.equal(7n * ONE);
      expect(await vault.depositOf(b.address)).to.equal(100n * ONE);
    });

    it("a deposit cannot re-enter withdraw", async function () {
      const { token, vault, clients } = await loadFixture(reentrant);
      const [c] = clients;
      await vault.connect(c).requestWithdrawal(10n * ONE);
      await time.increase(H.WITHDRAWAL_DELAY);
      await token.arm(await vault.getAddress(), vault.interface.encodeFunctionData("withdraw"));
      await expect(vault.connect(c).deposit(ONE)).to.emit(vault, "Deposited");
      expect(H.reentryError(vault, await token.lastReturnData())).to.equal("ReentrancyGuardReentrantCall");
      expect((await vault.pendingWithdrawalOf(c.address)).amount).to.equal(10n * ONE); // still pending, not paid
      expect(await vault.depositOf(c.address)).to.equal(101n * ONE);
    });
  });
});
