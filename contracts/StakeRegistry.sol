// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";

/// @title StakeRegistry
/// @notice Contributors stake tokens and register the device keys (workers) that sign result attestations.
/// @dev Unbonding and slashing come later; they only need to lower `stakeOf`, which `isEligible` reads live.
contract StakeRegistry is AccessControl, EIP712, ReentrancyGuard {
    using SafeERC20 for IERC20;

    /// @notice What a worker signs about a job result (verified on chain by slashing, later).
    struct Attestation { bytes32 jobId; bytes32 modelHash; bytes32 inputHash; bytes32 resultHash; bytes32 fingerprint; }

    /// @notice EIP-712 type hash of Attestation.
    bytes32 public constant ATTESTATION_TYPEHASH =
        keccak256("Attestation(bytes32 jobId,bytes32 modelHash,bytes32 inputHash,bytes32 resultHash,bytes32 fingerprint)");
    /// @notice EIP-712 type hash of WorkerRegistration.
    bytes32 public constant WORKER_REGISTRATION_TYPEHASH =
        keccak256("WorkerRegistration(address worker,address contributor,uint256 deadline)");

    /// @notice The staking token.
    IERC20 public immutable token;
    /// @notice Stake a contributor needs to register workers and keep them eligible.
    uint256 public immutable minStake;
    /// @notice Staked amount of each contributor.
    mapping(address contributor => uint256) public stakeOf;
    /// @notice Contributor that registered each worker (zero if none).
    mapping(address worker => address) public workerOwner;

    /// @notice `contributor` staked `amount`; their stake is now `total`.
    event Staked(address indexed contributor, uint256 amount, uint256 total);
    /// @notice `contributor` registered device key `worker`.
    event WorkerRegistered(address indexed contributor, address indexed worker);

    /// @notice An amount argument was zero.
    error StakeZeroAmount();
    /// @notice An address argument was zero.
    error StakeZeroAddress();
    /// @notice `contributor` has `stake`, below `minStake`.
    error StakeBelowMinimum(address contributor, uint256 stake, uint256 minStake);
    /// @notice `worker` is already registered to `owner`.
    error StakeWorkerAlreadyRegistered(address worker, address owner);
    /// @notice The registration signature expired at `deadline`.
    error StakeRegistrationExpired(uint256 deadline);
    /// @notice The registration for `worker` was signed by `signer`.
    error StakeBadWorkerSignature(address worker, address signer);

    /// @param token_ The staking token (ComputeToken).
    /// @param admin Receives DEFAULT_ADMIN_ROLE.
    /// @param minStake_ Minimum stake per contributor.
    constructor(IERC20 token_, address admin, uint256 minStake_) EIP712("inferledger StakeRegistry", "1") {
        if (address(token_) == address(0) || admin == address(0)) revert StakeZeroAddress();
        token = token_;
        minStake = minStake_;
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
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

    /// @notice Registers device key `worker` to the caller, proven by the worker's EIP-712 signature
    /// over WorkerRegistration(worker, caller, deadline).
    /// @param worker The device key address.
    /// @param deadline Last timestamp at which the signature is valid.
    /// @param signature The worker's 65-byte signature.
    function registerWorker(address worker, uint256 deadline, bytes calldata signature) external {
        uint256 staked = stakeOf[msg.sender];
        if (staked < minStake) revert StakeBelowMinimum(msg.sender, staked, minStake);
        if (worker == address(0)) revert StakeZeroAddress();
        address owner = workerOwner[worker];
        if (owner != address(0)) revert StakeWorkerAlreadyRegistered(worker, owner);
        if (block.timestamp > deadline) revert StakeRegistrationExpired(deadline);
        address signer = ECDSA.recover(hashWorkerRegistration(worker, msg.sender, deadline), signature);
        if (signer != worker) revert StakeBadWorkerSignature(worker, signer);
        workerOwner[worker] = msg.sender;
        emit WorkerRegistered(msg.sender, worker);
    }

    /// @notice Whether `worker` is registered and its contributor's stake is at least `minStake`.
    /// @param worker The device key address.
    /// @return True if eligible.
    function isEligible(address worker) external view returns (bool) {
        address owner = workerOwner[worker];
        return owner != address(0) && stakeOf[owner] >= minStake;
    }

    /// @notice Full EIP-712 digest of an attestation under this registry's domain.
    /// @param a The attestation.
    /// @return The digest the worker signs.
    function hashAttestation(Attestation calldata a) public view returns (bytes32) {
        return _hashTypedDataV4(
            keccak256(abi.encode(ATTESTATION_TYPEHASH, a.jobId, a.modelHash, a.inputHash, a.resultHash, a.fingerprint))
        );
    }

    /// @notice Recovers the signer of an attestation (reverts on malformed or high-s signatures).
    /// @param a The attestation.
    /// @param signature 65-byte signature.
    /// @return The signer address.
    function recoverAttestationSigner(Attestation calldata a, bytes calldata signature) external view returns (address) {
        return ECDSA.recover(hashAttestation(a), signature);
    }

    /// @notice Full EIP-712 digest of a worker registration under this registry's domain.
    /// @param worker The device key address.
    /// @param contributor The contributor registering it.
    /// @param deadline Signature deadline.
    /// @return The digest the worker signs.
    function hashWorkerRegistration(address worker, address contributor, uint256 deadline) public view returns (bytes32) {
        return _hashTypedDataV4(keccak256(abi.encode(WORKER_REGISTRATION_TYPEHASH, worker, contributor, deadline)));
    }

    /// @notice EIP-712 domain separator ("inferledger StakeRegistry", "1", chainId, this).
    /// @return The domain separator.
    function domainSeparator() external view returns (bytes32) {
        return _domainSeparatorV4();
    }
}
