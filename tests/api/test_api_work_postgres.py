"""Submissions on PostgreSQL, which enforces the declared column lengths that SQLite does
not: a worker's oversized or non-canonical fields are refused or normalised item by item,
never a server error that drops the whole batch."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from api_harness import ApiEnv, api_env, malformed_items, samples

from ledger.db import engine_for

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def env(chain, pg_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiEnv]:
    """This module's API on a fresh PostgreSQL database of its own."""
    name = f"il_api_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = pg_server.rsplit("/", 1)[0].split("://", 1)[1]
    try:
        with api_env(
            chain.w3,
            chain.rpc_url,
            chain.keys,
            tmp_path_factory.mktemp("api-pg"),
            database_url=f"postgresql+psycopg://{base}/{name}",
        ) as e:
            e.sign_in_all()
            yield e
    finally:
        engine_for.cache_clear()
        with psycopg.connect(pg_server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_a_signed_oversized_fingerprint_is_refused(env: ApiEnv) -> None:
    job = env.submit_job(samples(2))
    first = env.assigned(job["job_id"])[0]
    (assignment,) = [a for a in env.pull(first) if a["job_id"] == job["job_id"]]
    huge = dataclasses.replace(env.model.fingerprint, ort="1" * 600)
    oversized = env.result_item(assignment, first.device, fingerprint=huge)
    good = env.result_item(assignment, first.device)
    results = env.post_results(first, [oversized, good])
    assert [(r["status"], r["error"]) for r in results] == [
        ("refused", "invalid_field"),
        ("accepted", None),
    ]


def test_a_signature_spelled_with_spaces_is_stored_canonical(env: ApiEnv) -> None:
    job = env.submit_job(samples(2, start=5))
    jid = job["job_id"]
    for c in env.assigned(jid):
        (assignment,) = [a for a in env.pull(c) if a["job_id"] == jid]
        item = env.result_item(assignment, c.device)
        canonical = item["signature"]
        item["signature"] = "0x" + " ".join(canonical[2 + i : 4 + i] for i in range(0, 130, 2))
        (result,) = env.post_results(c, [item])
        assert result["status"] == "accepted", result
    assert env.reconcile().accepted == 1
    done = env.http.get(f"/v1/jobs/{jid}").json()
    assert done["status"] == "accepted"
    for vote in done["attestations"]:
        assert len(vote["signature"]) == 132 and " " not in vote["signature"]


def test_malformed_submissions_are_refused_item_by_item(env: ApiEnv) -> None:
    job = env.submit_job(samples(4, start=40))
    first = env.assigned(job["job_id"])[0]
    (assignment,) = [a for a in env.pull(first) if a["job_id"] == job["job_id"]]
    good = env.result_item(assignment, first.device)
    cases = malformed_items(good)
    results = env.post_results(first, [item for _, item in cases] + [good])
    for (name, _), result in zip(cases, results, strict=False):
        assert result["status"] == "refused" and result["error"], (name, result)
    assert results[-1]["status"] == "accepted", results[-1]
