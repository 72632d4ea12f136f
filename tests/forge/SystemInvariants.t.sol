// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {TestBase} from "./utils/TestBase.sol";
import {Console} from "./utils/Console.sol";
import {Handler} from "./handlers/Handler.sol";

/// @title SystemInvariants
/// @notice Money invariants of PaymentVault, EpochSettlement and StakeRegistry, checked by forge after every step
/// of random action sequences driven through Handler. Token balances move only by transfers, the ghost totals
/// only by events; the checks say the two agree and that nobody is paid beyond what was signed or posted.
/// One campaign runs all checks (a failure names the check), so the fuzzing budget is spent once, not per check.
contract SystemInvariants is TestBase {
    uint256 private constant CLIENTS = 3;
    uint256 private constant CONTRIBUTORS = 4;

    Handler internal h;

    function setUp() public {
        h = new Handler();
        bytes4[] memory s = new bytes4[](16);
        s[0] = Handler.deposit.selector;
        s[1] = Handler.redeem.selector;
        s[2] = Handler.requestWithdrawal.selector;
        s[3] = Handler.cancelWithdrawal.selector;
        s[4] = Handler.withdraw.selector;
        s[5] = Handler.stake.selector;
        s[6] = Handler.requestUnbond.selector;
        s[7] = Handler.withdrawUnbonded.selector;
        s[8] = Handler.registerWorker.selector;
        s[9] = Handler.removeWorker.selector;
        s[10] = Handler.postEpoch.selector;
        s[11] = Handler.veto.selector;
        s[12] = Handler.claim.selector;
        s[13] = Handler.claimFees.selector;
        s[14] = Handler.slash.selector;
        s[15] = Handler.warp.selector;
        _target(address(h), s);
    }

    /// @notice Every invariant, after every step.
    function invariant_moneyIsConserved() public view {
        checkVaultHoldsExactlyUnspentDeposits();
        checkSettlementHoldsRedeemedMinusPaid();
        checkRegistryHoldsExactlyStake();
        checkClaimsWithinLeaves();
        checkClientsPayAtMostWhatTheySigned();
        checkPaidWithinRedeemed();
        checkSupplyConserved();
    }

    /// @notice A scripted sequence in which every handler action does real work once, so none is dead code
    /// that the random campaign would silently skip; the invariants hold at the end.
    function test_everyActionDoesWork() public {
        h.deposit(0, 50e18, false);
        h.deposit(1, 30e18, true);
        h.redeem(1); // clients 0 and 1 (seed picks), then a replay of an old item on the next redeem
        h.redeem(2);
        h.requestWithdrawal(0, 1e18);
        h.cancelWithdrawal(0);
        h.requestWithdrawal(0, 1e18);
        h.stake(0, 10e18);
        h.requestUnbond(0, 5e18);
        h.registerWorker(1);
        h.removeWorker(1, 1);
        h.postEpoch(type(uint256).max, 3, 7);
        h.veto(1);
        h.postEpoch(type(uint256).max, 3, 7);
        h.warp(2 hours - 1); // the handler warps by 1 + seed % 2 hours
        h.warp(2 hours - 1);
        h.withdraw(0);
        h.withdrawUnbonded(0);
        h.claim(0, 1);
        h.claimFees(1);
        h.slash(1, 1, 1, 0);
        bytes32[15] memory actions = [
            bytes32("deposit"), "redeem", "requestWithdrawal", "cancelWithdrawal", "withdraw", "stake", "requestUnbond",
            "withdrawUnbonded", "registerWorker", "removeWorker", "postEpoch", "veto", "claimFees", "slash", "warp"
        ];
        for (uint256 k; k < actions.length; ++k) _true(_name(actions[k]), h.done(actions[k]) > 0);
        _true("claim", h.done("claim") > 0);
        invariant_moneyIsConserved();
    }

    /// @notice Prints how often each action did work in the last run (forge test -vv).
    function afterInvariant() public view {
        bytes32[17] memory actions = [
            bytes32("deposit"), "redeem", "requestWithdrawal", "cancelWithdrawal", "withdraw", "stake", "requestUnbond",
            "withdrawUnbonded", "registerWorker", "removeWorker", "postEpoch", "veto", "claim", "claimRefused",
            "claimFees", "slash", "warp"
        ];
        for (uint256 k; k < actions.length; ++k) Console.log(_name(actions[k]), h.done(actions[k]));
    }

    /// @notice Vault: balance = deposits - redemptions - withdrawals = the sum of unspent deposits.
    function checkVaultHoldsExactlyUnspentDeposits() public view {
        uint256 balance = h.token().balanceOf(address(h.vault()));
        _eq("vault balance vs events", balance, h.ghostDeposited() - h.ghostRedeemed() - h.ghostWithdrawn());
        uint256 unspent;
        for (uint256 c; c < CLIENTS; ++c) unspent += h.vault().depositOf(h.client(c));
        _eq("vault balance vs depositOf", balance, unspent);
    }

    /// @notice Settlement: balance = redeemed in - claims - fees, and its counters match the events.
    function checkSettlementHoldsRedeemedMinusPaid() public view {
        uint256 balance = h.token().balanceOf(address(h.settlement()));
        _eq("settlement balance vs events", balance, h.ghostRedeemed() - h.ghostClaimed() - h.ghostFeesPaid());
        _eq("totalRedeemed vs events", h.vault().totalRedeemed(), h.ghostRedeemed());
        _eq("totalClaimed vs events", h.settlement().totalClaimed(), h.ghostClaimed());
        _eq("feesPaid vs events", h.settlement().feesPaid(), h.ghostFeesPaid());
        _eq("treasury balance", h.token().balanceOf(h.treasury()), h.ghostFeesPaid());
    }

    /// @notice Registry: balance = stakes - unbonded withdrawals - slashes = bonded + unbonding.
    function checkRegistryHoldsExactlyStake() public view {
        uint256 balance = h.token().balanceOf(address(h.registry()));
        _eq("registry balance vs events", balance, h.ghostStaked() - h.ghostUnbonded() - h.ghostSlashed());
        uint256 held;
        for (uint256 i; i < CONTRIBUTORS; ++i) {
            (uint256 unbonding,) = h.registry().unbondingOf(h.contributor(i));
            held += h.registry().stakeOf(h.contributor(i)) + unbonding;
        }
        _eq("registry balance vs stakes", balance, held);
        _eq("slash pool balance", h.token().balanceOf(h.slashPool()), h.ghostSlashed());
    }

    /// @notice No account is paid beyond its leaf in the latest finalized epoch; claimedOf matches the events.
    function checkClaimsWithinLeaves() public view {
        uint256 epoch = h.latestFinalized();
        for (uint256 i; i < CONTRIBUTORS; ++i) {
            address account = h.contributor(i);
            uint256 claimed = h.settlement().claimedOf(account);
            _eq("claimedOf vs Claimed events", claimed, h.ghostClaimedOf(account));
            _le("claimedOf vs latest final leaf", claimed, h.earnings(epoch, i));
        }
    }

    /// @notice No client pays beyond the most it signed; each client's deposits are all accounted for.
    function checkClientsPayAtMostWhatTheySigned() public view {
        for (uint256 c; c < CLIENTS; ++c) {
            address client = h.client(c);
            uint256 redeemed = h.vault().redeemedOf(client);
            uint256 deposited = h.vault().totalDepositedOf(client);
            _le("redeemedOf vs signed", redeemed, h.maxSigned(client));
            _eq("redeemedOf vs VoucherRedeemed events", redeemed, h.ghostRedeemedOf(client));
            _eq("totalDepositedOf vs events", deposited, h.ghostDepositedOf(client));
            _eq("deposits = unspent + redeemed + withdrawn", deposited, h.vault().depositOf(client) + redeemed + h.ghostWithdrawnOf(client));
        }
    }

    /// @notice Settlement never pays out more than the vault redeemed, nor promises more in its latest epoch.
    function checkPaidWithinRedeemed() public view {
        uint256 redeemed = h.vault().totalRedeemed();
        _le("claims + fees vs redeemed", h.settlement().totalClaimed() + h.settlement().feesPaid(), redeemed);
        (,,, uint256 payout, uint256 fees,,,) = h.settlement().epochs(h.settlement().lastEpoch());
        _le("latest epoch totals vs redeemed", payout + fees, redeemed);
        _le("claims vs latest payout", h.settlement().totalClaimed(), payout);
        _le("fees paid vs latest fees", h.settlement().feesPaid(), fees);
    }

    /// @notice Tokens are minted only by the handler, and every minted token sits with a known holder.
    function checkSupplyConserved() public view {
        _eq("totalSupply", h.token().totalSupply(), h.minted());
        uint256 sum = h.token().balanceOf(address(h.vault())) + h.token().balanceOf(address(h.settlement()))
            + h.token().balanceOf(address(h.registry())) + h.token().balanceOf(h.treasury())
            + h.token().balanceOf(h.slashPool()) + h.token().balanceOf(h.payer());
        for (uint256 c; c < CLIENTS; ++c) sum += h.token().balanceOf(h.client(c));
        for (uint256 i; i < CONTRIBUTORS; ++i) sum += h.token().balanceOf(h.contributor(i));
        _eq("sum of holders", sum, h.minted());
    }

    function _name(bytes32 action) private pure returns (string memory name) {
        uint256 n;
        while (n < 32 && action[n] != 0) ++n;
        name = new string(n);
        for (uint256 k; k < n; ++k) bytes(name)[k] = action[k];
    }
}
