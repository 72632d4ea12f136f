"""The execution fingerprint: the settings that decide whether two replicas must agree bit
for bit. Replicas with equal fingerprints are in one class and compared exactly.

Canonical form: JSON with sorted keys and no spaces; its sha256 is the ``fingerprint`` field
of an attestation. Fields: onnxruntime version, execution provider, CPU ISA tier,
graph optimisation level, intra-op threads.
"""

from __future__ import annotations

import hashlib
import json
import platform
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class Fingerprint:
    ort: str
    provider: str
    isa: str
    opt_level: str
    threads: int

    def canonical(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":")).encode()

    def digest(self) -> bytes:
        return hashlib.sha256(self.canonical()).digest()

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> Fingerprint:
        return cls(
            ort=str(data["ort"]),
            provider=str(data["provider"]),
            isa=str(data["isa"]),
            opt_level=str(data["opt_level"]),
            threads=int(str(data["threads"])),
        )


def cpu_isa_tier(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's instruction-set tier as onnxruntime's kernels would pick it."""
    machine = platform.machine().lower()
    if machine in ("aarch64", "arm64"):
        return "arm64"
    try:
        text = cpuinfo.read_text()
    except OSError:
        return machine or "unknown"
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    if {"avx512f", "avx512bw"} <= flags:
        return "avx512"
    if {"avx2", "fma"} <= flags:
        return "avx2-fma"
    if "avx" in flags:
        return "avx"
    if "sse4_2" in flags:
        return "sse4.2"
    return machine or "unknown"
