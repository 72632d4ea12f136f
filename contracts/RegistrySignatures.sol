// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";

/// @title RegistrySignatures
/// @notice The EIP-712 domain ("inferledger StakeRegistry", "1") and typed messages that worker keys sign:
/// result attestations (slashing evidence) and worker registrations.
abstract contract RegistrySignatures is EIP712 {
    /// @notice What a worker signs about a job result; slashing evidence when it contradicts finalized consensus.
    struct Attestation { bytes32 jobId; bytes32 modelHash; bytes32 inputHash; bytes32 resultHash; bytes32 fingerprint; }

    /// @notice EIP-712 type hash of Attestation.
    bytes32 public constant ATTESTATION_TYPEHASH =
        keccak256("Attestation(bytes32 jobId,bytes32 modelHash,bytes32 inputHash,bytes32 resultHash,bytes32 fingerprint)");
    /// @notice EIP-712 type hash of WorkerRegistration.
    bytes32 public constant WORKER_REGISTRATION_TYPEHASH =
        keccak256("WorkerRegistration(address worker,address contributor,uint256 deadline)");

    constructor() EIP712("inferledger StakeRegistry", "1") {}

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
    function recoverAttestationSigner(Attestation calldata a, bytes calldata signature) public view returns (address) {
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
