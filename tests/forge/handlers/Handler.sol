// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {PaymentVault} from "../../../contracts/PaymentVault.sol";
import {StakeRegistry} from "../../../contracts/StakeRegistry.sol";
import {RegistrySignatures} from "../../../contracts/RegistrySignatures.sol";
import {EpochSettlement} from "../../../contracts/EpochSettlement.sol";
import {vm} from "../utils/Vm.sol";
import {Eip712} from "../utils/Eip712.sol";
import {EpochModel} from "./EpochModel.sol";

/// @title Handler
/// @notice The actions the invariant fuzzer strings together. Each turns its random arguments into a call that
/// must succeed (or into the revert the rules demand, asserted with expectRevert), so any other revert is a
/// finding (fail_on_revert). Clients sign vouchers and workers sign attestations with their own keys.
contract Handler is EpochModel {
    /// @notice Thrown when a call succeeded but moved a different amount than the rules say.
    error HandlerUnexpected(string what, uint256 actual, uint256 expected);

    /// @notice The fuzzer's clock: every action starts at it (forge may reset block.timestamp between calls).
    uint256 public clock;
    /// @notice Highest cumulative amount client `c` ever signed in a voucher.
    mapping(address client => uint256) public maxSigned;
    /// @notice Successful runs of each action, so a test can show that no action is dead.
    mapping(bytes32 action => uint256) public done;
    mapping(uint256 c => PaymentVault.Redemption) private _lastRedemption;

    constructor() {
        clock = block.timestamp;
        vm.recordLogs();
        for (uint256 i; i < CONTRIBUTORS; ++i) {
            _stake(contributor(i), MIN_STAKE);
            _registerWorker(i, 0);
        }
        _absorb(vm.getRecordedLogs());
    }

    modifier step() {
        vm.warp(clock);
        vm.recordLogs();
        _;
        _absorb(vm.getRecordedLogs());
    }

    // ---- clients and the vault ----

    /// @notice Client `c` (or a payer for it) deposits.
    function deposit(uint256 c, uint256 amount, bool viaPayer) external step {
        address who = client(c % CLIENTS);
        amount = _bound(amount, 1, 1_000 * ONE);
        address from = viaPayer ? payer : who;
        _mint(from, amount);
        vm.prank(from);
        token.approve(address(vault), amount);
        vm.prank(from);
        if (viaPayer) vault.depositFor(who, amount);
        else vault.deposit(amount);
        done["deposit"]++;
    }

    /// @notice The settler redeems a batch: fresh vouchers for some clients, plus a replay of an old item.
    function redeem(uint256 seed) external step {
        PaymentVault.Redemption[] memory items = new PaymentVault.Redemption[](CLIENTS + 1);
        uint256 n;
        for (uint256 c; c < CLIENTS; ++c) {
            uint256 s = uint256(keccak256(abi.encode(seed, c)));
            if (s % 4 == 0 || vault.depositOf(client(c)) == 0) continue;
            items[n++] = _voucher(c, s);
        }
        uint256 r = seed % CLIENTS;
        if (_lastRedemption[r].amount != 0 && (seed >> 128) % 2 == 0) items[n++] = _lastRedemption[r];
        for (uint256 k; k < n; ++k) _lastRedemption[_clientIndex(items[k].voucher.client)] = items[k];
        if (n == 0) return;
        assembly ("memory-safe") { mstore(items, n) }
        vault.redeem(items);
        done["redeem"]++;
    }

    /// @notice Client `c` asks to withdraw part of its deposit.
    function requestWithdrawal(uint256 c, uint256 amount) external step {
        address who = client(c % CLIENTS);
        uint256 available = vault.depositOf(who);
        if (available == 0) return;
        vm.prank(who);
        vault.requestWithdrawal(_bound(amount, 1, available));
        done["requestWithdrawal"]++;
    }

    /// @notice Client `c` cancels its pending withdrawal.
    function cancelWithdrawal(uint256 c) external step {
        address who = client(c % CLIENTS);
        (uint256 pending,) = vault.pendingWithdrawalOf(who);
        if (pending == 0) return;
        vm.prank(who);
        vault.cancelWithdrawal();
        done["cancelWithdrawal"]++;
    }

    /// @notice Client `c` withdraws after the notice: min(pending, deposit).
    function withdraw(uint256 c) external step {
        address who = client(c % CLIENTS);
        (uint256 pending, uint64 unlockAt) = vault.pendingWithdrawalOf(who);
        if (pending == 0 || block.timestamp < unlockAt) return;
        uint256 available = vault.depositOf(who);
        uint256 expected = pending < available ? pending : available;
        uint256 before = token.balanceOf(who);
        vm.prank(who);
        vault.withdraw();
        _expect("withdrawn", token.balanceOf(who) - before, expected);
        done["withdraw"]++;
    }

    // ---- contributors and the registry ----

    /// @notice Contributor `i` stakes more.
    function stake(uint256 i, uint256 amount) external step {
        _stake(contributor(i % CONTRIBUTORS), _bound(amount, 1, 1_000 * ONE));
        done["stake"]++;
    }

    /// @notice Contributor `i` starts unbonding part of its bonded stake.
    function requestUnbond(uint256 i, uint256 amount) external step {
        address who = contributor(i % CONTRIBUTORS);
        uint256 bonded = registry.stakeOf(who);
        if (bonded == 0) return;
        vm.prank(who);
        registry.requestUnbond(_bound(amount, 1, bonded));
        done["requestUnbond"]++;
    }

    /// @notice Contributor `i` withdraws its unbonded stake after the delay.
    function withdrawUnbonded(uint256 i) external step {
        address who = contributor(i % CONTRIBUTORS);
        (uint256 amount, uint64 unlockAt) = registry.unbondingOf(who);
        if (amount == 0 || block.timestamp < unlockAt) return;
        vm.prank(who);
        registry.withdrawUnbonded();
        done["withdrawUnbonded"]++;
    }

    /// @notice Contributor `i` registers its second worker key (once), if its stake allows.
    function registerWorker(uint256 i) external step {
        i %= CONTRIBUTORS;
        if (registry.workerOwner(vm.addr(workerKey(i, 1))) != address(0)) return;
        if (registry.stakeOf(contributor(i)) < MIN_STAKE) return;
        _registerWorker(i, 1);
        done["registerWorker"]++;
    }

    /// @notice Contributor `i` retires worker `k` (evidence against it stays valid).
    function removeWorker(uint256 i, uint256 k) external step {
        i %= CONTRIBUTORS;
        address worker = vm.addr(workerKey(i, k % WORKERS_PER_CONTRIBUTOR));
        if (!registry.workerActive(worker)) return;
        vm.prank(contributor(i));
        registry.removeWorker(worker);
        done["removeWorker"]++;
    }

    // ---- epochs ----

    /// @notice The settler posts the next epoch (or re-posts a vetoed one) within what the vault redeemed.
    function postEpoch(uint256 payoutSeed, uint256 feeSeed, uint256 splitSeed) external step {
        uint256 last = settlement.lastEpoch();
        uint256 epoch = _vetoed(last) ? last : last + 1;
        (,,, uint256 prevPayout, uint256 prevFees,,,) = settlement.epochs(epoch - 1);
        uint256 available = vault.totalRedeemed() - prevPayout - prevFees;
        uint256 payoutIncrease = _bound(payoutSeed, 0, available);
        uint256 feeIncrease = _bound(feeSeed, 0, available - payoutIncrease);
        (bytes32 root, bytes32 resultsRoot) = _modelEpoch(epoch, payoutIncrease, splitSeed);
        settlement.postEpoch(
            epoch, root, resultsRoot, keccak256(abi.encode(root, resultsRoot)), prevPayout + payoutIncrease, prevFees + feeIncrease
        );
        done["postEpoch"]++;
    }

    /// @notice The guardian vetoes an epoch still in its challenge window.
    function veto(uint256 seed) external step {
        uint256 last = settlement.lastEpoch();
        if (last == 0) return;
        uint256 epoch = _bound(seed, 1, last);
        (,,,,,, uint64 claimableAt, bool vetoed) = settlement.epochs(epoch);
        if (vetoed || block.timestamp >= claimableAt) return;
        settlement.veto(epoch);
        done["veto"]++;
    }

    /// @notice Anyone claims for the contributors in `mask` (all when 0) against a finalized epoch: mostly the
    /// latest, as contributors do, sometimes an older one (a stale proof), where the payout bound may refuse the
    /// claim; the handler predicts when and asserts that exact revert.
    function claim(uint256 mask, uint256 epochSeed) external step {
        uint256 epoch = epochSeed % 4 == 0 ? _finalizedEpoch(epochSeed >> 2) : latestFinalized();
        if (epoch == 0) return;
        mask %= 1 << CONTRIBUTORS;
        for (uint256 i; i < CONTRIBUTORS; ++i) {
            if (mask == 0 || (mask >> i) & 1 == 1) _claim(epoch, i);
        }
    }

    function _claim(uint256 epoch, uint256 i) private {
        address account = contributor(i);
        uint256 amount = earnings[epoch][i];
        uint256 claimed = settlement.claimedOf(account);
        if (amount <= claimed) return;
        (,,, uint256 payout,,,,) = settlement.epochs(epoch);
        uint256 total = settlement.totalClaimed() + amount - claimed;
        bytes32[] memory proof = _earningsProof(epoch, i);
        if (total > payout) {
            vm.expectRevert(abi.encodeWithSelector(EpochSettlement.EpochOverclaimed.selector, total, payout));
            settlement.claim(epoch, account, amount, proof);
            done["claimRefused"]++;
            return;
        }
        uint256 before = token.balanceOf(account);
        settlement.claim(epoch, account, amount, proof);
        _expect("claim paid", token.balanceOf(account) - before, amount - claimed);
        done["claim"]++;
    }

    /// @notice Anyone pays the treasury the fees of a finalized epoch.
    function claimFees(uint256 epochSeed) external step {
        uint256 epoch = _finalizedEpoch(epochSeed);
        if (epoch == 0) return;
        (,,,, uint256 fees,,,) = settlement.epochs(epoch);
        if (fees <= settlement.feesPaid()) return;
        settlement.claimFees(epoch);
        done["claimFees"]++;
    }

    /// @notice Anyone slashes worker (i, k) with real evidence: the worker signed a result hash that differs from
    /// the consensus leaf of a finalized epoch. First shows that neither an honest attestation nor one about
    /// another input (whose consensus the leaf does not hold) can be slashed.
    function slash(uint256 i, uint256 k, uint256 epochSeed, uint256 jobSeed) external step {
        uint256 key = workerKey(i % CONTRIBUTORS, k % WORKERS_PER_CONTRIBUTOR);
        address worker = vm.addr(key);
        address owner = registry.workerOwner(worker);
        uint256 epoch = _finalizedEpoch(epochSeed);
        if (owner == address(0) || epoch == 0) return;
        uint256 j = jobSeed % JOBS;
        Result memory r = _results[epoch][j];
        if (registry.slashedFor(worker, r.jobId)) return;
        bytes32[] memory proof = _resultProof(epoch, j);
        _refusedSlashes(key, epoch, r, proof);

        RegistrySignatures.Attestation memory wrong = _attestation(r, keccak256(abi.encode(r.consensus, "wrong")));
        bytes memory sig = _signAttestation(key, wrong);
        (uint256 unbonding,) = registry.unbondingOf(owner);
        uint256 expected = (registry.stakeOf(owner) + unbonding) * SLASH_BPS / 10_000;
        uint256 before = token.balanceOf(slashPool);
        registry.slash(wrong, sig, epoch, r.consensus, proof);
        _expect("slashed", token.balanceOf(slashPool) - before, expected);
        if (!registry.jailed(worker)) revert HandlerUnexpected("jailed", 0, 1);
        done["slash"]++;
    }

    /// @notice Time passes.
    function warp(uint256 secondsLater) external step {
        clock += _bound(secondsLater, 1, MAX_WARP);
        done["warp"]++;
    }

    // ---- views for the invariants ----

    /// @notice The highest epoch that is final at the handler's clock (0 if none).
    function latestFinalized() public view returns (uint256) {
        for (uint256 e = settlement.lastEpoch(); e > 0; --e) {
            (,,,,,, uint64 claimableAt, bool vetoed) = settlement.epochs(e);
            if (!vetoed && clock >= claimableAt) return e;
        }
        return 0;
    }

    // ---- helpers ----

    function _voucher(uint256 c, uint256 s) private returns (PaymentVault.Redemption memory) {
        address who = client(c);
        uint256 amount = vault.redeemedOf(who) + _bound(s >> 8, 1, vault.depositOf(who));
        uint256 cap = amount + _bound(s >> 128, 0, 10 * ONE);
        uint256 expiry = block.timestamp + 1 hours;
        if (cap > maxSigned[who]) maxSigned[who] = cap;
        bytes memory sig = _sign(clientKey(c), Eip712.voucher(address(vault), who, cap, expiry));
        return PaymentVault.Redemption(PaymentVault.Voucher(who, cap, expiry), sig, amount);
    }

    /// @dev Neither an honest attestation nor a wrong one about another input (whose consensus the leaf does not
    /// hold) can be slashed with the leaf of `r`.
    function _refusedSlashes(uint256 key, uint256 epoch, Result memory r, bytes32[] memory proof) private {
        RegistrySignatures.Attestation memory honest = _attestation(r, r.consensus);
        bytes memory sig = _signAttestation(key, honest);
        vm.expectRevert(abi.encodeWithSelector(StakeRegistry.StakeResultMatches.selector, r.jobId));
        registry.slash(honest, sig, epoch, r.consensus, proof);

        RegistrySignatures.Attestation memory otherInput = _attestation(r, keccak256(abi.encode(r.consensus, "wrong")));
        otherInput.inputHash = keccak256(abi.encode(r.inputHash, "other"));
        sig = _signAttestation(key, otherInput);
        vm.expectRevert(abi.encodeWithSelector(StakeRegistry.StakeInvalidEvidence.selector, r.jobId));
        registry.slash(otherInput, sig, epoch, r.consensus, proof);
    }

    function _attestation(Result memory r, bytes32 resultHash) private pure returns (RegistrySignatures.Attestation memory) {
        return RegistrySignatures.Attestation(r.jobId, r.modelHash, r.inputHash, resultHash, r.fingerprint);
    }

    function _signAttestation(uint256 key, RegistrySignatures.Attestation memory a) private view returns (bytes memory) {
        return _sign(key, Eip712.attestation(address(registry), a.jobId, a.modelHash, a.inputHash, a.resultHash, a.fingerprint));
    }

    /// @dev A finalized epoch picked by `seed` among 1..lastEpoch, or 0 when that one is not final.
    function _finalizedEpoch(uint256 seed) private view returns (uint256) {
        uint256 last = settlement.lastEpoch();
        if (last == 0) return 0;
        uint256 epoch = _bound(seed, 1, last);
        return settlement.isFinalized(epoch) ? epoch : 0;
    }

    function _vetoed(uint256 epoch) private view returns (bool vetoed) {
        (,,,,,,, vetoed) = settlement.epochs(epoch);
    }

    function _clientIndex(address who) private pure returns (uint256 c) {
        while (client(c) != who) ++c;
    }

    function _expect(string memory what, uint256 actual, uint256 expected) private pure {
        if (actual != expected) revert HandlerUnexpected(what, actual, expected);
    }

    function _bound(uint256 x, uint256 lo, uint256 hi) internal pure returns (uint256) {
        if (hi <= lo) return lo;
        return lo + x % (hi - lo + 1);
    }
}
