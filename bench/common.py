"""What every benchmark's JSON shares: the machine it ran on, its figures, their baselines.

Each benchmark writes ``bench/results/<name>.json`` as::

    {"name": ..., "machine": {cpu model, cores, load average, python, onnxruntime, ...},
     "args": {...}, "figures": {...}, "baselines": {...}, ...}

so that ``bench/suite.py`` can read any of them alike, and so that a figure is never read
without the machine it was measured on.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import re
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    found = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    return found.group(1).strip() if found else platform.machine()


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def machine() -> dict[str, Any]:
    """The machine and the software versions the figures depend on."""
    info: dict[str, Any] = {
        "cpu_model": cpu_model(),
        "cores": cores(),
        "arch": platform.machine(),
        "python": platform.python_version(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "memory_gib": _memory_gib(),
    }
    try:
        import onnxruntime as ort

        info["onnxruntime"] = ort.__version__
    except ImportError:  # pragma: no cover - a dependency of the project
        pass
    try:
        from protocol.fingerprint import cpu_isa_tier

        info["isa"] = cpu_isa_tier()
    except ImportError:  # pragma: no cover
        pass
    return info


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def peak_rss_mib(pid: int) -> float | None:
    """The peak resident set (VmHWM) of a process, in MiB; None once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def tree_peak_rss_mib(pid: int) -> float | None:
    """The largest VmHWM among ``pid`` and its descendants (a uvicorn or pool parent
    forks or spawns the processes that do the work)."""
    best = peak_rss_mib(pid)
    for child in children(pid):
        found = tree_peak_rss_mib(child)
        if found is not None and (best is None or found > best):
            best = found
    return best


def tree_cpu_s(pid: int) -> float:
    """CPU seconds (user and system) used so far by ``pid`` and its live descendants."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total = (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    except (OSError, IndexError):  # gone
        return 0.0
    return total + sum(tree_cpu_s(child) for child in children(pid))


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from /proc/*/stat)."""
    out: list[int] = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):  # gone meanwhile
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def write_result(
    name: str,
    figures: dict[str, Any],
    baselines: dict[str, Any] | None = None,
    args: dict[str, Any] | None = None,
    **extra: Any,
) -> Path:
    """Write ``bench/results/<name>.json`` in the common shape; returns its path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = {
        "name": name,
        "generated_by": Path(sys.argv[0]).name,
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        "args": args or {},
        "figures": figures,
        "baselines": baselines or {},
        **extra,
    }
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    return path


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if abs(value) >= 100:
            return f"{value:,.0f}"
        return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def table(headers: list[str], rows: list[list[Any]]) -> str:
    """A plain text table: the first column left-aligned, the others right-aligned."""
    cells = [headers, *([cell(v) for v in row] for row in rows)]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for n, r in enumerate(cells):
        parts = [r[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True)
        ]
        lines.append("  ".join(parts).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


async def read_status(reader: asyncio.StreamReader) -> int:
    """Read one HTTP/1.1 answer (head and a Content-Length body) off a keep-alive
    connection; its status code."""
    status_line = await reader.readline()
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        if name.lower() == "content-length":
            length = int(value)
    await reader.readexactly(length)
    return int(status_line.split()[1])
