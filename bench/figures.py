"""The rows of ``bench/suite.py``'s table, read from each benchmark's JSON.

A row: figure, value at size 1, value at size 2, baseline (same run), ratio of size 2's
value to the baseline, goal, met? (yes / no / "-" where there is no goal or the run was not
at the goal's size). A benchmark that did not run leaves its rows out.
"""

from __future__ import annotations

from typing import Any

Row = list[Any]


def _figures(results: dict[str, Any], label: str) -> dict[str, Any] | None:
    found = results.get(label)
    return None if found is None else dict(found["figures"])


def _met(ok: bool | None) -> str:
    return "-" if ok is None else ("yes" if ok else "no")


def _k(n: int) -> str:
    return f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n)


def _ratio(value: float | None, baseline: float | None) -> float | None:
    return None if not value or not baseline else value / baseline


def system_rows(results: dict[str, Any]) -> list[Row]:
    f = _figures(results, "system")
    if f is None:
        return []
    out: list[Row] = []
    replicas = int(results["system"].get("settings", {}).get("replicas", 2))
    for model, runs in f["throughput"].items():
        if len(runs) < 2:
            runs = [runs[0], runs[0]]
        a, b = runs[0], runs[-1]
        sizes = f"{_k(a['jobs'])} | {_k(b['jobs'])} jobs"
        goal, ok = "-", None
        if model == "minilm-l6":
            goal, ok = ">= 0.45 x raw", b["ratio"] >= 0.45
        out.append(
            [f"verified jobs/s, {model}, r={replicas} ({sizes})", a["verified_per_s"],
             b["verified_per_s"], b["raw_per_s"], b["ratio"], goal, _met(ok)]
        )  # fmt: skip
        cores = b["cores"]
        own = [cores / r["verified_per_s"] * 1e6 - replicas * cores / r["raw_per_s"] * 1e6
               for r in (a, b)]  # fmt: skip
        raw_us = cores / b["raw_per_s"] * 1e6
        out.append(
            [f"system's own core-µs per job, {model}", own[0], own[1], raw_us,
             _ratio(own[1], raw_us), "report", "-"]
        )  # fmt: skip
    out += replication_rows(results)
    for model, lat in f["latency"].items():
        for q in ("p50", "p99"):
            goal, ok = "-", None
            if q == "p50":
                goal, ok = "<= 15 ms", lat["added_ms_p50"] <= 15
            out.append(
                [f"latency added {q} ms, {model} ({lat['requests']} requests)",
                 lat[f"added_ms_{q}"], None, lat["raw_ms_median"],
                 _ratio(lat[f"e2e_ms_{q}"], lat["raw_ms_median"]), goal, _met(ok)]
            )  # fmt: skip
        if "python_reference_ms" in lat:  # the machine's speed at the time (bench/system.py)
            out.append(
                [f"latency added p50 in Python references, {model}",
                 lat["added_p50_in_references"], None, lat["python_reference_ms"], None, "-",
                 "-"]
            )  # fmt: skip
    mem = f["memory"]
    if mem:
        a, b = mem[0], mem[-1]
        for key, name in (("api_mib", "API"), ("celery_worker_mib", "Celery worker"),
                          ("device_agent_mib", "device agent"),
                          ("device_inference_mib", "device inference process")):  # fmt: skip
            if b.get(key) is None:
                continue
            grow = (b[key] - a[key]) / max(1, b["after_jobs"] - a["after_jobs"]) * 1024
            out.append(
                [f"peak RSS MiB, {name} (after {_k(a['after_jobs'])} | {_k(b['after_jobs'])})",
                 a[key], b[key], None, None, f"growth {grow:.2f} KiB/job", "-"]
            )  # fmt: skip
    return out


def replication_rows(results: dict[str, Any]) -> list[Row]:
    """MiniLM with one replica per job (``system-r1``: the most that lowering replication
    gives) and with adaptive replication on (``system-adaptive``)."""
    out: list[Row] = []
    r1 = _figures(results, "system-r1")
    for model, runs in (r1 or {}).get("throughput", {}).items():
        a, b = runs[0], runs[-1]
        out.append(
            [f"verified jobs/s, {model}, r=1 ({_k(a['jobs'])} | {_k(b['jobs'])} jobs)",
             a["verified_per_s"], b["verified_per_s"], b["raw_per_s"], b["ratio"],
             "higher than r=2", "-"]
        )  # fmt: skip
    adaptive = _figures(results, "system-adaptive")
    for model, runs in (adaptive or {}).get("throughput", {}).items():
        a, b = runs[0], runs[-1]
        got = results["system-adaptive"].get("settings", {})
        spot = int(got.get("spot_check_bps", 0)) / 100
        goal, ok = "-", None
        if model == "minilm-l6":
            goal, ok = ">= 0.45 x raw", b["ratio"] >= 0.45
        out.append(
            [f"verified jobs/s, {model}, adaptive (trust after {got.get('trust_after')}, "
             f"{spot:g}% spot checks; {b.get('replicas_per_job')} replicas/job at "
             f"{_k(b['jobs'])})", a["verified_per_s"], b["verified_per_s"], b["raw_per_s"],
             b["ratio"], goal, _met(ok)]
        )  # fmt: skip
    for model, lat in (adaptive or {}).get("latency", {}).items():
        out.append(
            [f"latency added p50 | p99 ms, {model}, adaptive ({lat['requests']} requests)",
             lat["added_ms_p50"], lat["added_ms_p99"], lat["raw_ms_median"], None, "<= 15 ms",
             _met(lat["added_ms_p50"] <= 15)]
        )  # fmt: skip
    return out


def ledger_rows(results: dict[str, Any]) -> list[Row]:
    out: list[Row] = []
    runs = sorted(
        (results[k]["figures"] for k in results if k.startswith("reconcile@")),
        key=lambda r: r["jobs"],
    )
    if runs:
        a, b = runs[0], runs[-1]
        out.append(
            [f"reconcile jobs/s, 1 Celery worker ({_k(a['jobs'])} | {_k(b['jobs'])})",
             a["jobs_per_s"], b["jobs_per_s"], b["naive_jobs_per_s"], b["ratio"],
             ">= 5,000 jobs/s", _met(b["jobs_per_s"] >= 5000)]
        )  # fmt: skip
    runs = sorted(
        (results[k]["figures"] for k in results if k.startswith("ingest@")),
        key=lambda r: r["batched"]["requests"],
    )
    if runs:
        a, b = runs[0], runs[-1]
        sizes = " | ".join(_k(r["batched"]["requests"] + r["clients"]) for r in (a, b))
        out.append(
            [f"paid ingest req/s, {b['api_workers']} API processes ({sizes})",
             a["batched"]["per_s"], b["batched"]["per_s"], b["naive"]["per_s"], b["ratio"],
             ">= 1,000 req/s", _met(b["batched"]["per_s"] >= 1000)]
        )  # fmt: skip
    f = _figures(results, "epoch")
    if f is not None:
        a, b = f["runs"][0], f["runs"][-1]
        sizes = f"{_k(a['jobs'])} | {_k(b['jobs'])} jobs"
        at_goal = b["jobs"] >= 100_000
        out.append(
            [f"epoch close s ({sizes})", a["total_s"], b["total_s"], b["baseline_tree_s"],
             b["ratio"], "< 10 s at 100k", _met(b["total_s"] < 10 if at_goal else None)]
        )  # fmt: skip
        for step in ("tree", "file", "chain"):
            out.append(
                [f"  of which {step} s", a[f"{step}_s"], b[f"{step}_s"], None, None, "-", "-"]
            )
    return out


def agent_rows(results: dict[str, Any]) -> list[Row]:
    out: list[Row] = []
    f = _figures(results, "agent")
    if f is not None:
        for model, m in f.items():
            goal, ok = "report", None
            if model == "minilm-l6":
                goal, ok = "loss <= 10%", m["loss_pct"] <= 10
            out.append(
                [f"device agent jobs/s, {model} ({m['jobs']} jobs x {m['rounds']})",
                 m["agent_per_s"], None, m["raw_per_s"], _ratio(m["agent_per_s"], m["raw_per_s"]),
                 goal, _met(ok)]
            )  # fmt: skip
            out.append(
                [f"  own µs per job, {model}", m["own_us"], None, m["raw_us"],
                 _ratio(m["own_us"], m["raw_us"]), "-", "-"]
            )  # fmt: skip
    f = _figures(results, "protocol")
    if f is not None:
        us = f["figures_us"]
        raw = us["raw_inference_us"]
        for name, value in us.items():
            if name != "raw_inference_us":
                out.append([f"per job {name}, digits-cnn", value, None, raw, value / raw, "-", "-"])
    return out


def gas_rows(results: dict[str, Any]) -> list[Row]:
    f = _figures(results, "gas")
    if f is None:
        return []
    out: list[Row] = []
    by = {(s["requests"], s["clients"]): s for s in f["scenarios"]}
    a, b = by.get((1_000, 100)), by.get((10_000, 100))
    if a is None or b is None:
        return []
    for key, name, goal in (("operatorPerRequest", "(a) operator", 200),
                            ("allInPerRequest", "(b) all-in", 1_200)):  # fmt: skip
        for epoch in ("steadyEpoch", "firstEpoch"):
            value = b[epoch][key]
            out.append(
                [f"gas/request {name}, {epoch[:-5]} epoch (1k | 10k req, 100 clients)",
                 a[epoch][key], value, None, None, f"<= {goal:,} at 10k", _met(value <= goal)]
            )  # fmt: skip
    return out


def extra_rows(results: dict[str, Any]) -> list[Row]:
    """Counts that do not depend on the machine: dishonest workers caught, jobs lost."""
    out: list[Row] = []
    f = _figures(results, "agreement")
    for model, m in (f or {}).items():
        spread = max(h["over_tolerance"] for h in m["honest"].values())
        out.append(
            [
                f"honest spread / tolerance, {model}",
                spread,
                None,
                1.0,
                spread,
                "< 1",
                _met(spread < 1),
            ]
        )
        for name, d in m["dishonest"].items():
            out.append(
                [f"  {name}: caught, of {d['of']} (ratio: closest / tolerance)", d["caught"],
                 None, None, d["over_tolerance"], "all", _met(d["caught"] == d["of"])]
            )  # fmt: skip
    f = _figures(results, "chaos")
    if f is not None:
        bad = f["lost"] + f["doubled"] + f["missing"] + f["wrong"]
        out.append(
            [f"chaos: jobs lost + doubled + missing + wrong, of {f['jobs']}", bad, None, None,
             None, "0", _met(bad == 0)]
        )  # fmt: skip
    return out


def rows(results: dict[str, Any]) -> list[Row]:
    return [
        *system_rows(results),
        *ledger_rows(results),
        *agent_rows(results),
        *gas_rows(results),
        *extra_rows(results),
    ]
