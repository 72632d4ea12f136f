"""Errors raised while decoding or checking protocol data.

ProtocolError
├── TensorError          a tensor that is malformed, of the wrong dtype or shape, or too big
├── SignatureError       a signature that does not parse or recovers to another address
├── ManifestError        a model manifest that is malformed or does not match its file
├── TextError            text for a model that takes none, or too many texts
│   └── TextTooLong      a text over the model's limit of characters or tokens
└── ProofError           a Merkle proof that does not verify
"""

from __future__ import annotations


class ProtocolError(Exception):
    """Root of every protocol error; ``code`` is a stable snake_case identifier."""

    code = "protocol_error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class TensorError(ProtocolError):
    code = "invalid_tensor"


class SignatureError(ProtocolError):
    code = "invalid_signature"


class ManifestError(ProtocolError):
    code = "invalid_manifest"


class TextError(ProtocolError):
    code = "invalid_text"


class TextTooLong(TextError):
    code = "text_too_long"


class ProofError(ProtocolError):
    code = "invalid_proof"
