// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {Vm} from "../utils/Vm.sol";
import {SystemSetup} from "./SystemSetup.sol";

/// @title Ghosts
/// @notice Totals rebuilt from the contracts' events alone. Every action records logs and folds them in here,
/// so the invariants can compare token balances (which only transfers move) with what the events account for.
abstract contract Ghosts is SystemSetup {
    bytes32 private constant DEPOSITED = keccak256("Deposited(address,address,uint256,uint256)");
    bytes32 private constant VOUCHER_REDEEMED = keccak256("VoucherRedeemed(address,uint256,uint256)");
    bytes32 private constant WITHDRAWN = keccak256("Withdrawn(address,uint256,uint256)");
    bytes32 private constant CLAIMED = keccak256("Claimed(uint256,address,uint256,uint256)");
    bytes32 private constant FEES_CLAIMED = keccak256("FeesClaimed(uint256,address,uint256)");
    bytes32 private constant STAKED = keccak256("Staked(address,uint256,uint256)");
    bytes32 private constant UNBONDED = keccak256("Unbonded(address,uint256)");
    bytes32 private constant SLASHED = keccak256("Slashed(address,address,bytes32,uint256,uint256)");

    uint256 public ghostDeposited;
    uint256 public ghostRedeemed;
    uint256 public ghostWithdrawn;
    uint256 public ghostClaimed;
    uint256 public ghostFeesPaid;
    uint256 public ghostStaked;
    uint256 public ghostUnbonded;
    uint256 public ghostSlashed;
    mapping(address => uint256) public ghostDepositedOf;
    mapping(address => uint256) public ghostRedeemedOf;
    mapping(address => uint256) public ghostWithdrawnOf;
    mapping(address => uint256) public ghostClaimedOf;

    /// @dev Folds the logs recorded during one action into the totals.
    function _absorb(Vm.Log[] memory logs) internal {
        for (uint256 i; i < logs.length; ++i) {
            Vm.Log memory l = logs[i];
            if (l.topics.length == 0) continue;
            if (l.emitter == address(vault)) _absorbVault(l);
            else if (l.emitter == address(settlement)) _absorbSettlement(l);
            else if (l.emitter == address(registry)) _absorbRegistry(l);
        }
    }

    function _absorbVault(Vm.Log memory l) private {
        bytes32 t = l.topics[0];
        address who = l.topics.length > 1 ? address(uint160(uint256(l.topics[1]))) : address(0);
        if (t == DEPOSITED) {
            (uint256 amount,) = abi.decode(l.data, (uint256, uint256));
            ghostDeposited += amount;
            ghostDepositedOf[who] += amount;
        } else if (t == VOUCHER_REDEEMED) {
            (, uint256 increase) = abi.decode(l.data, (uint256, uint256));
            ghostRedeemed += increase;
            ghostRedeemedOf[who] += increase;
        } else if (t == WITHDRAWN) {
            (uint256 amount,) = abi.decode(l.data, (uint256, uint256));
            ghostWithdrawn += amount;
            ghostWithdrawnOf[who] += amount;
        }
    }

    function _absorbSettlement(Vm.Log memory l) private {
        bytes32 t = l.topics[0];
        if (t == CLAIMED) {
            (, uint256 amount) = abi.decode(l.data, (uint256, uint256));
            ghostClaimed += amount;
            ghostClaimedOf[address(uint160(uint256(l.topics[2])))] += amount;
        } else if (t == FEES_CLAIMED) {
            ghostFeesPaid += abi.decode(l.data, (uint256));
        }
    }

    function _absorbRegistry(Vm.Log memory l) private {
        bytes32 t = l.topics[0];
        if (t == STAKED) {
            (uint256 amount,) = abi.decode(l.data, (uint256, uint256));
            ghostStaked += amount;
        } else if (t == UNBONDED) {
            ghostUnbonded += abi.decode(l.data, (uint256));
        } else if (t == SLASHED) {
            (, uint256 amount) = abi.decode(l.data, (uint256, uint256));
            ghostSlashed += amount;
        }
    }
}
