// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {IEpochSettlement} from "./IEpochSettlement.sol";
import {RegistrySignatures} from "./RegistrySignatures.sol";
import {StakeBonds} from "./StakeBonds.sol";

/// @title StakeRegistry
/// @notice Contributors stake tokens (StakeBonds) and register the device keys (workers) that sign result
/// attestations (RegistrySignatures). Anyone may slash with evidence the contract checks itself: a worker's own
/// signed attestation whose result differs from the consensus of its fingerprint class in a finalized epoch.
contract StakeRegistry is AccessControl, RegistrySignatures, StakeBonds {
    using SafeERC20 for IERC20;

    /// @notice EpochSettlement, whose finalized results roots are the consensus slashing is checked against (set once).
    address public settlement;
    /// @notice Contributor that registered each worker; kept forever, also after removal.
    mapping(address worker => address) public workerOwner;
    /// @notice Whether each worker is registered and not removed.
    mapping(address worker => bool) public workerActive;
    /// @notice Whether each worker is jailed (ineligible) after a slash, until the admin unjails it.
    mapping(address worker => bool) public jailed;
    /// @notice Whether `worker` was already slashed for `jobId` (at most once per pair).
    mapping(address worker => mapping(bytes32 jobId => bool)) public slashedFor;

    /// @notice The settlement address was set.
    event SettlementSet(address settlement);
    /// @notice `contributor` registered device key `worker`.
    event WorkerRegistered(address indexed contributor, address indexed worker);
    /// @notice `contributor` retired device key `worker` (it can never be registered again).
    event WorkerRemoved(address indexed contributor, address indexed worker);
    /// @notice `amount` of `contributor`'s stake (bonded first, then unbonding) went to the slash pool because
    /// `worker` signed a result for `jobId` that contradicts the finalized consensus of `epoch`.
    event Slashed(address indexed contributor, address indexed worker, bytes32 indexed jobId, uint256 epoch, uint256 amount);
    /// @notice `worker` was jailed: it is not eligible until unjailed.
    event WorkerJailed(address indexed worker);
    /// @notice The admin unjailed `worker` (appeal upheld).
    event WorkerUnjailed(address indexed worker);

    /// @notice `contributor` has bonded `stake`, below `minStake`.
    error StakeBelowMinimum(address contributor, uint256 stake, uint256 minStake);
    /// @notice `worker` is already (or was once) registered to `owner`.
    error StakeWorkerAlreadyRegistered(address worker, address owner);
    /// @notice The registration signature expired at `deadline`.
    error StakeRegistrationExpired(uint256 deadline);
    /// @notice The registration for `worker` was signed by `signer`.
    error StakeBadWorkerSignature(address worker, address signer);
    /// @notice `caller` does not own `worker`.
    error StakeNotWorkerOwner(address worker, address caller);
    /// @notice `worker` is not active (already removed).
    error StakeWorkerInactive(address worker);
    /// @notice `worker` is not jailed.
    error StakeWorkerNotJailed(address worker);
    /// @notice The settlement address is already `current`.
    error StakeSettlementAlreadySet(address current);
    /// @notice The settlement address has not been set.
    error StakeSettlementNotSet();
    /// @notice The attestation was signed by `worker`, which was never registered.
    error StakeUnknownWorker(address worker);
    /// @notice `epoch` is not finalized (unknown, in its challenge window, or vetoed).
    error StakeEpochNotFinalized(uint256 epoch);
    /// @notice The proof does not place (jobId, modelHash, inputHash, fingerprint, consensus hash) in the epoch's
    /// results tree.
    error StakeInvalidEvidence(bytes32 jobId);
    /// @notice The attested result equals the consensus for `jobId`: nothing to slash.
    error StakeResultMatches(bytes32 jobId);
    /// @notice `worker` was already slashed for `jobId`.
    error StakeAlreadySlashed(address worker, bytes32 jobId);

    /// @param token_ The staking token (ComputeToken).
    /// @param admin Receives DEFAULT_ADMIN_ROLE.
    /// @param minStake_ Minimum bonded stake per contributor.
    /// @param unbondingDelay_ Seconds before unbonding stake can be withdrawn.
    /// @param slashBps_ Share of bonded plus unbonding stake taken per slash, in basis points (at most 10000).
    /// @param slashPool_ Receiver of slashed stake.
    constructor(IERC20 token_, address admin, uint256 minStake_, uint64 unbondingDelay_, uint16 slashBps_, address slashPool_)
        StakeBonds(token_, minStake_, unbondingDelay_, slashBps_, slashPool_)
    {
        if (admin == address(0)) revert StakeZeroAddress();
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
    }

    /// @notice Sets the EpochSettlement whose finalized results back slashing; only admin, only once.
    /// @param settlement_ The settlement contract.
    function setSettlement(address settlement_) external onlyRole(DEFAULT_ADMIN_ROLE) {
        if (settlement != address(0)) revert StakeSettlementAlreadySet(settlement);
        if (settlement_ == address(0)) revert StakeZeroAddress();
        settlement = settlement_;
        emit SettlementSet(settlement_);
    }

    /// @notice Registers device key `worker` to the caller, proven by the worker's EIP-712 signature
    /// over WorkerRegistration(worker, caller, deadline). A key belongs to one contributor forever.
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
        workerActive[worker] = true;
        emit WorkerRegistered(msg.sender, worker);
    }

    /// @notice Retires the caller's active worker; its owner stays recorded so evidence against it still resolves.
    /// @param worker The device key address.
    function removeWorker(address worker) external {
        if (workerOwner[worker] != msg.sender) revert StakeNotWorkerOwner(worker, msg.sender);
        if (!workerActive[worker]) revert StakeWorkerInactive(worker);
        workerActive[worker] = false;
        emit WorkerRemoved(msg.sender, worker);
    }

    /// @notice Slashes the contributor of the worker that signed `att`, when a finalized epoch's results tree holds
    /// (att.jobId, att.modelHash, att.inputHash, att.fingerprint, consensusResultHash) and consensusResultHash
    /// differs from att.resultHash. Anyone may call: the evidence is the authority. Takes slashBps of bonded plus
    /// unbonding stake, jails the worker and sends the stake to slashPool.
    /// @dev The leaf must name the model and input the worker attested to: a worker handed another model or input
    /// under the same job id computed something else and is not slashable by that job's consensus.
    /// @param att The worker's attestation.
    /// @param signature The worker's signature over `att`.
    /// @param epoch A finalized epoch.
    /// @param consensusResultHash The consensus result hash of att.fingerprint's class on att.modelHash and
    /// att.inputHash in that epoch.
    /// @param proof StandardMerkleTree proof of
    /// (att.jobId, att.modelHash, att.inputHash, att.fingerprint, consensusResultHash).
    function slash(
        Attestation calldata att,
        bytes calldata signature,
        uint256 epoch,
        bytes32 consensusResultHash,
        bytes32[] calldata proof
    ) external nonReentrant {
        address worker = recoverAttestationSigner(att, signature);
        address contributor = workerOwner[worker];
        if (contributor == address(0)) revert StakeUnknownWorker(worker);
        IEpochSettlement s = IEpochSettlement(settlement);
        if (address(s) == address(0)) revert StakeSettlementNotSet();
        if (!s.isFinalized(epoch)) revert StakeEpochNotFinalized(epoch);
        if (!s.verifyResult(epoch, att.jobId, att.modelHash, att.inputHash, att.fingerprint, consensusResultHash, proof)) {
            revert StakeInvalidEvidence(att.jobId);
        }
        if (att.resultHash == consensusResultHash) revert StakeResultMatches(att.jobId);
        if (slashedFor[worker][att.jobId]) revert StakeAlreadySlashed(worker, att.jobId);
        slashedFor[worker][att.jobId] = true;
        uint256 amount = _takeStake(contributor);
        emit Slashed(contributor, worker, att.jobId, epoch, amount);
        if (!jailed[worker]) {
            jailed[worker] = true;
            emit WorkerJailed(worker);
        }
        if (amount != 0) token.safeTransfer(slashPool, amount);
    }

    /// @notice Lifts a jail after an upheld appeal; only admin. Stake already slashed is not returned.
    /// @param worker The jailed worker.
    function unjail(address worker) external onlyRole(DEFAULT_ADMIN_ROLE) {
        if (!jailed[worker]) revert StakeWorkerNotJailed(worker);
        jailed[worker] = false;
        emit WorkerUnjailed(worker);
    }

    /// @notice Whether `worker` is registered, active, not jailed, and its contributor's bonded stake is at least minStake.
    /// @param worker The device key address.
    /// @return True if eligible.
    function isEligible(address worker) external view returns (bool) {
        address owner = workerOwner[worker];
        return owner != address(0) && workerActive[worker] && !jailed[worker] && stakeOf[owner] >= minStake;
    }
}
