// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {ComputeToken} from "../../../contracts/ComputeToken.sol";
import {PaymentVault} from "../../../contracts/PaymentVault.sol";
import {StakeRegistry} from "../../../contracts/StakeRegistry.sol";
import {EpochSettlement} from "../../../contracts/EpochSettlement.sol";
import {vm} from "../utils/Vm.sol";
import {Eip712} from "../utils/Eip712.sol";

/// @title SystemSetup
/// @notice The four contracts wired as in production (this contract is admin, settler, guardian and minter),
/// and the actors: clients with signing keys, contributors each with two worker keys, a treasury and a slash pool.
abstract contract SystemSetup {
    uint256 internal constant ONE = 1e18;
    uint256 internal constant CLIENTS = 3;
    uint256 internal constant CONTRIBUTORS = 4;
    uint256 internal constant WORKERS_PER_CONTRIBUTOR = 2;
    uint256 internal constant MIN_STAKE = 100 * ONE;
    // Short delays against warps of up to MAX_WARP, so one run of a few dozen steps sees every phase.
    uint64 internal constant WITHDRAWAL_DELAY = 2 hours;
    uint64 internal constant UNBONDING_DELAY = 3 hours;
    uint64 internal constant CHALLENGE_WINDOW = 1 hours;
    uint256 internal constant MAX_WARP = 2 hours;
    uint16 internal constant SLASH_BPS = 1_000;

    ComputeToken public immutable token;
    PaymentVault public immutable vault;
    StakeRegistry public immutable registry;
    EpochSettlement public immutable settlement;
    address public immutable treasury = address(0x7EA5);
    address public immutable slashPool = address(0x51A5);
    /// @notice Pays deposits on behalf of clients (depositFor).
    address public immutable payer = address(0xFA7E5);

    /// @notice Tokens this contract minted (the whole supply).
    uint256 public minted;

    constructor() {
        token = new ComputeToken(address(this));
        vault = new PaymentVault(IERC20(address(token)), address(this), WITHDRAWAL_DELAY);
        registry = new StakeRegistry(IERC20(address(token)), address(this), MIN_STAKE, UNBONDING_DELAY, SLASH_BPS, slashPool);
        settlement = new EpochSettlement(IERC20(address(token)), address(this), treasury, CHALLENGE_WINDOW);
        vault.setSettlement(address(settlement));
        settlement.setVault(address(vault));
        registry.setSettlement(address(settlement));
        vm.label(address(token), "ComputeToken");
        vm.label(address(vault), "PaymentVault");
        vm.label(address(registry), "StakeRegistry");
        vm.label(address(settlement), "EpochSettlement");
    }

    /// @notice Signing key of client `i`.
    function clientKey(uint256 i) public pure returns (uint256) {
        return 0xC11E47000 + i;
    }

    /// @notice Address of client `i`.
    function client(uint256 i) public pure returns (address) {
        return vm.addr(clientKey(i));
    }

    /// @notice Address of contributor `i` (it never signs: it acts through prank).
    function contributor(uint256 i) public pure returns (address) {
        return address(uint160(0xC0B7000 + i));
    }

    /// @notice Key of worker `k` of contributor `i`.
    function workerKey(uint256 i, uint256 k) public pure returns (uint256) {
        return 0x3057E5000 + i * WORKERS_PER_CONTRIBUTOR + k;
    }

    function _mint(address to, uint256 amount) internal {
        token.mint(to, amount);
        minted += amount;
    }

    function _sign(uint256 key, bytes32 digest) internal pure returns (bytes memory) {
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(key, digest);
        return abi.encodePacked(r, s, v);
    }

    function _stake(address who, uint256 amount) internal {
        _mint(who, amount);
        vm.prank(who);
        token.approve(address(registry), amount);
        vm.prank(who);
        registry.stake(amount);
    }

    function _registerWorker(uint256 i, uint256 k) internal {
        address worker = vm.addr(workerKey(i, k));
        uint256 deadline = block.timestamp + 1 hours;
        bytes memory sig = _sign(workerKey(i, k), Eip712.registration(address(registry), worker, contributor(i), deadline));
        vm.prank(contributor(i));
        registry.registerWorker(worker, deadline, sig);
    }
}
