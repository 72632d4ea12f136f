// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ReentrancyLock} from "./ReentrancyLock.sol";

/// @title StakeBonds
/// @notice Contributor stake of StakeRegistry: bonded stake, unbonding with a delay, and the slashing arithmetic.
/// @dev Unbonding stake stays slashable until it is withdrawn, so leaving cannot outrun evidence.
abstract contract StakeBonds is ReentrancyLock {
    using SafeERC20 for IERC20;

    /// @notice Stake on its way out: `amount` withdrawable from `unlockAt`.
    struct Unbonding { uint256 amount; uint64 unlockAt; }

    /// @notice The staking token.
    IERC20 public immutable token;
    /// @notice Bonded stake a contributor needs to register workers and keep them eligible.
    uint256 public immutable minStake;
    /// @notice Seconds between an unbond request and the stake becoming withdrawable.
    uint64 public immutable unbondingDelay;
    /// @notice Share of a contributor's bonded plus unbonding stake taken per slash, in basis points.
    uint16 public immutable slashBps;
    /// @notice Receiver of slashed stake.
    address public immutable slashPool;
    /// @notice Bonded stake of each contributor.
    mapping(address contributor => uint256) public stakeOf;
    /// @notice Unbonding stake of each contributor.
    mapping(address contributor => Unbonding) public unbondingOf;

    /// @notice `contributor` staked `amount`; their bonded stake is now `total`.
    event Staked(address indexed contributor, uint256 amount, uint256 total);
    /// @notice `contributor` moved `amount` from bonded to unbonding; `unbonding` in all is withdrawable from `unlockAt`.
    event UnbondRequested(address indexed contributor, uint256 amount, uint256 unbonding, uint64 unlockAt);
    /// @notice `contributor` withdrew `amount` of unbonded stake.
    event Unbonded(address indexed contributor, uint256 amount);

    /// @notice An amount argument was zero.
    error StakeZeroAmount();
    /// @notice An address argument was zero.
    error StakeZeroAddress();
    /// @notice A constructor parameter is out of range (slashBps above 10000).
    error StakeBadParameter();
    /// @notice `contributor` asked to unbond `amount` but has only `bonded`.
    error StakeInsufficientStake(address contributor, uint256 amount, uint256 bonded);
    /// @notice `contributor` has nothing unbonding.
    error StakeNothingUnbonding(address contributor);
    /// @notice The unbonding stake of `contributor` is locked until `unlockAt`.
    error StakeUnbondingLocked(address contributor, uint64 unlockAt);

    /// @param token_ The staking token.
    /// @param minStake_ Minimum bonded stake per contributor.
    /// @param unbondingDelay_ Seconds before unbonding stake can be withdrawn.
    /// @param slashBps_ Share taken per slash, in basis points (at most 10000).
    /// @param slashPool_ Receiver of slashed stake.
    constructor(IERC20 token_, uint256 minStake_, uint64 unbondingDelay_, uint16 slashBps_, address slashPool_) {
        if (address(token_) == address(0) || slashPool_ == address(0)) revert StakeZeroAddress();
        if (slashBps_ > 10_000) revert StakeBadParameter();
        token = token_;
        minStake = minStake_;
        unbondingDelay = unbondingDelay_;
        slashBps = slashBps_;
        slashPool = slashPool_;
    }

    /// @notice Stakes `amount` from the caller (needs prior approval).
    /// @param amount Amount to stake.
    function stake(uint256 amount) external nonReentrant {
        if (amount == 0) revert StakeZeroAmount();
        uint256 total = stakeOf[msg.sender] + amount;
        stakeOf[msg.sender] = total;
        emit Staked(msg.sender, amount, total);
        token.safeTransferFrom(msg.sender, address(this), amount);
    }

    /// @notice Moves `amount` of the caller's bonded stake to unbonding; adds to any stake already unbonding and
    /// restarts its timer at now + unbondingDelay.
    /// @param amount Amount to unbond.
    function requestUnbond(uint256 amount) external {
        if (amount == 0) revert StakeZeroAmount();
        uint256 bonded = stakeOf[msg.sender];
        if (amount > bonded) revert StakeInsufficientStake(msg.sender, amount, bonded);
        stakeOf[msg.sender] = bonded - amount;
        Unbonding storage u = unbondingOf[msg.sender];
        uint256 unbonding = u.amount + amount;
        uint64 unlockAt = uint64(block.timestamp) + unbondingDelay;
        (u.amount, u.unlockAt) = (unbonding, unlockAt);
        emit UnbondRequested(msg.sender, amount, unbonding, unlockAt);
    }

    /// @notice Pays the caller all its unbonding stake once the delay is over.
    function withdrawUnbonded() external nonReentrant {
        Unbonding memory u = unbondingOf[msg.sender];
        if (u.amount == 0) revert StakeNothingUnbonding(msg.sender);
        if (block.timestamp < u.unlockAt) revert StakeUnbondingLocked(msg.sender, u.unlockAt);
        delete unbondingOf[msg.sender];
        emit Unbonded(msg.sender, u.amount);
        token.safeTransfer(msg.sender, u.amount);
    }

    /// @dev Takes slashBps of (bonded + unbonding) from `contributor`, bonded first, then unbonding.
    /// The split is determined by the balances before, so events suffice to rebuild both.
    function _takeStake(address contributor) internal returns (uint256 amount) {
        uint256 bonded = stakeOf[contributor];
        Unbonding storage u = unbondingOf[contributor];
        amount = (bonded + u.amount) * slashBps / 10_000;
        if (amount <= bonded) {
            stakeOf[contributor] = bonded - amount;
        } else {
            stakeOf[contributor] = 0;
            u.amount -= amount - bonded;
        }
    }
}
