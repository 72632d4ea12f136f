// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

/// @title Eip712
/// @notice The typed-data digests clients and workers sign, computed here from the type strings and domains
/// written out again, not through the contracts' own hash views, so an encoding slip there fails the tests.
library Eip712 {
    bytes32 private constant DOMAIN_TYPEHASH =
        keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)");
    bytes32 private constant VOUCHER_TYPEHASH = keccak256("Voucher(address client,uint256 cumulativeAmount,uint256 expiry)");
    bytes32 private constant ATTESTATION_TYPEHASH =
        keccak256("Attestation(bytes32 jobId,bytes32 modelHash,bytes32 inputHash,bytes32 resultHash,bytes32 fingerprint)");
    bytes32 private constant REGISTRATION_TYPEHASH =
        keccak256("WorkerRegistration(address worker,address contributor,uint256 deadline)");

    /// @notice Digest of Voucher(client, cumulativeAmount, expiry) under the vault at `vault`.
    function voucher(address vault, address client, uint256 cumulativeAmount, uint256 expiry) internal view returns (bytes32) {
        bytes32 structHash = keccak256(abi.encode(VOUCHER_TYPEHASH, client, cumulativeAmount, expiry));
        return _digest("inferledger PaymentVault", vault, structHash);
    }

    /// @notice Digest of an Attestation under the registry at `registry`.
    function attestation(address registry, bytes32 jobId, bytes32 modelHash, bytes32 inputHash, bytes32 resultHash, bytes32 fingerprint)
        internal
        view
        returns (bytes32)
    {
        bytes32 structHash = keccak256(abi.encode(ATTESTATION_TYPEHASH, jobId, modelHash, inputHash, resultHash, fingerprint));
        return _digest("inferledger StakeRegistry", registry, structHash);
    }

    /// @notice Digest of WorkerRegistration(worker, contributor, deadline) under the registry at `registry`.
    function registration(address registry, address worker, address contributor, uint256 deadline) internal view returns (bytes32) {
        bytes32 structHash = keccak256(abi.encode(REGISTRATION_TYPEHASH, worker, contributor, deadline));
        return _digest("inferledger StakeRegistry", registry, structHash);
    }

    function _digest(string memory name, address verifyingContract, bytes32 structHash) private view returns (bytes32) {
        bytes32 domain = keccak256(abi.encode(DOMAIN_TYPEHASH, keccak256(bytes(name)), keccak256("1"), block.chainid, verifyingContract));
        return keccak256(abi.encodePacked("\x19\x01", domain, structHash));
    }
}
