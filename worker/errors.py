"""Errors raised by the device worker.

Every error keeps its data as attributes and has a stable snake_case ``code``.

WorkerError
├── ConfigError               a config file or a setting that is refused
├── KeyFileError              a key file that is missing, malformed, or cannot be unlocked
│   └── WrongPassword         the keystore's password does not decrypt it
├── ModelStoreError           a models dir that is missing or empty, or a model that is refused
│   ├── ModelTampered         a model file that no longer hashes to its manifest's sha256
│   └── ModelBuildFailed      a model to build whose source, script or result is not as pinned
├── PoolFailed                the inference processes could not be started
├── AssignmentError           an assignment that is skipped, never signed
│   ├── MalformedAssignment   a field that is missing, of the wrong type, or fails to decode
│   ├── InputHashMismatch     inputs that do not hash to the assignment's input_hash
│   ├── UnknownModel          a model this worker does not have
│   ├── InvalidInputs         inputs that do not fit the model's manifest
│   └── InferenceFailed       onnxruntime failed on the inputs
└── ApiError                  the API answered with an error (HTTP status, code, detail)
    ├── ApiUnavailable        unreachable, 5xx or 429, and the caller cancelled the retries
    ├── AuthRefused           sign-in refused, or a fresh token refused again
    └── BadResponse           a success answer that does not follow the contract
"""

from __future__ import annotations

from pathlib import Path


class WorkerError(Exception):
    """Root of every worker error; ``code`` is a stable snake_case identifier."""

    code = "worker_error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class ConfigError(WorkerError):
    code = "config_error"

    def __init__(self, path: Path | None, detail: str) -> None:
        super().__init__(f"config file {path}: {detail}" if path else detail)
        self.path = path


class KeyFileError(WorkerError):
    code = "key_file_error"

    def __init__(self, path: Path, detail: str) -> None:
        super().__init__(f"key file {path}: {detail}")
        self.path = path


class WrongPassword(KeyFileError):
    code = "wrong_password"

    def __init__(self, path: Path) -> None:
        super().__init__(path, "the password does not decrypt this keystore")


class ModelStoreError(WorkerError):
    code = "model_store_error"

    def __init__(self, path: Path, detail: str) -> None:
        super().__init__(f"{path}: {detail}")
        self.path = path


class ModelTampered(ModelStoreError):
    code = "model_tampered"

    def __init__(self, path: Path, expected: str, actual: str) -> None:
        super().__init__(path, f"has sha256 {actual}, its manifest says {expected}")
        self.expected = expected
        self.actual = actual


class ModelBuildFailed(ModelStoreError):
    code = "model_build_failed"


class PoolFailed(WorkerError):
    code = "pool_failed"


class AssignmentError(WorkerError):
    """An assignment the worker must skip; ``job_id`` is its 0x hex id when it had one."""

    code = "assignment_error"

    def __init__(self, job_id: str | None, detail: str) -> None:
        super().__init__(detail)
        self.job_id = job_id


class MalformedAssignment(AssignmentError):
    code = "malformed_assignment"


class InputHashMismatch(AssignmentError):
    code = "input_hash_mismatch"

    def __init__(self, job_id: str, claimed: bytes, actual: bytes) -> None:
        super().__init__(
            job_id, f"inputs hash to 0x{actual.hex()}, the assignment says 0x{claimed.hex()}"
        )
        self.claimed = claimed
        self.actual = actual


class UnknownModel(AssignmentError):
    code = "unknown_model"

    def __init__(self, model_hash: str, job_id: str | None = None) -> None:
        super().__init__(job_id, f"no model with hash 0x{model_hash} in the models dir")
        self.model_hash = model_hash


class InvalidInputs(AssignmentError):
    code = "invalid_inputs"

    def __init__(self, model_hash: str, detail: str, job_id: str | None = None) -> None:
        super().__init__(job_id, detail)
        self.model_hash = model_hash


class InferenceFailed(AssignmentError):
    code = "inference_failed"

    def __init__(self, model_hash: str, detail: str, job_id: str | None = None) -> None:
        super().__init__(job_id, f"onnxruntime failed on model 0x{model_hash}: {detail}")
        self.model_hash = model_hash


class ApiError(WorkerError):
    """An error answer: ``status`` is the HTTP status (0 when none), ``error`` the API's code."""

    code = "api_error"

    def __init__(self, path: str, status: int, error: str, detail: str) -> None:
        super().__init__(f"{path}: HTTP {status} {error}: {detail}")
        self.path = path
        self.status = status
        self.error = error


class ApiUnavailable(ApiError):
    code = "api_unavailable"

    def __init__(self, path: str, attempts: int, detail: str) -> None:
        super().__init__(path, 0, "unavailable", f"gave up after {attempts} attempts: {detail}")
        self.attempts = attempts


class AuthRefused(ApiError):
    code = "auth_refused"


class BadResponse(ApiError):
    code = "bad_response"

    def __init__(self, path: str, status: int, detail: str) -> None:
        super().__init__(path, status, "bad_response", detail)
