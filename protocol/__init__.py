"""The byte formats every part of inferledger agrees on.

One implementation of each format lives here and is imported by the worker, the ledger
and the audit tool, so the two sides of the protocol can never disagree on bytes:

- ``tensors``: the wire encoding of tensors (base64 of little-endian raw bytes).
- ``hashing``: model, input, row, result hashes (sha256 with domain tags).
- ``eip712``: the EIP-712 domains and types (Voucher, Attestation, WorkerRegistration),
  signing and recovery, and the job id.
- ``merkle``: OpenZeppelin StandardMerkleTree-compatible leaves, trees and proofs.
- ``fingerprint``: the execution fingerprint that decides which replicas must match exactly.
- ``consensus``: the tally of a job's votes and the cross-class tolerance rule.
- ``pricing``: how a job's price is split between agreeing contributors and the treasury.
- ``epochfile``: the canonical bytes of a published epoch file and its hash.
- ``manifest``: model manifests and input validation.
- ``text``: a text model's texts as its token tensors (the pinned tokenizer, the limits).
"""
