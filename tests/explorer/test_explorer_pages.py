"""The explorer's pages without a browser or a chain: what a worker or a URL can put in a
page is escaped, an unknown or malformed id answers a 404 page, and the HTML routes stay out
of the OpenAPI schema. A real ledger on SQLite and on PostgreSQL; rows written with the
ledger tests' helpers."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from web3 import Web3

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ledger"))
from ledger_support import add_worker, address, h32, insert_job  # noqa: E402

import api.deps  # noqa: E402
import api.main  # noqa: E402
from ledger.config import Settings  # noqa: E402
from ledger.context import Context  # noqa: E402
from ledger.db import session_scope  # noqa: E402
from ledger.models import Epoch, EpochStatus, JobStatus  # noqa: E402

EVIL = '<script>alert("x")</script><img src=x onerror=alert(1)>'
CONTRIBUTOR = Web3.to_checksum_address(address(0xC0))
WORKER = Web3.to_checksum_address(address(0xD0))
CLIENT = Web3.to_checksum_address(address(0xC1))


@pytest.fixture
def http(db_url: str, tmp_path: Path) -> Iterator[tuple[TestClient, str]]:
    """An API on a fresh ledger (SQLite, then PostgreSQL) holding one accepted job whose
    vote's fingerprint and whose failure text are markup, in building epoch 1."""
    ctx = Context(Settings(database_url=db_url, data_dir=tmp_path))
    with session_scope(ctx.engine) as session:
        add_worker(session, WORKER, CONTRIBUTOR)
        job = insert_job(
            session,
            client=CLIENT,
            price=10**15,
            votes=[(CONTRIBUTOR, WORKER, EVIL, h32("result"))],
            status=JobStatus.ACCEPTED,
        )
        job.failure, job.epoch = EVIL, 1
        session.add(Epoch(number=1, status=EpochStatus.BUILDING, jobs=1))
        job_id = job.id
    app = api.main.create_app()
    app.dependency_overrides[api.deps.get_context] = lambda: ctx
    with TestClient(app) as client:
        yield client, job_id
    ctx.engine.dispose()


def _html(r: object, status: int = 200) -> str:
    assert r.status_code == status, r.text  # type: ignore[attr-defined]
    assert r.headers["content-type"].startswith("text/html")  # type: ignore[attr-defined]
    text: str = r.text  # type: ignore[attr-defined]
    assert text.startswith("<!doctype html>")
    return text


def test_explorer_escapes_what_workers_and_urls_put_in_pages(
    http: tuple[TestClient, str],
) -> None:
    client, job_id = http
    page = _html(client.get(f"/explorer/jobs/{job_id}"))
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page  # the failure
    assert "&lt;img src=x onerror=alert(1)&gt;" in page  # the vote's fingerprint
    assert "<script" not in page and "<img" not in page
    for url in (f"/explorer/jobs/{EVIL}", f"/explorer/search?q={EVIL}"):
        missing = _html(client.get(url), 404)
        assert "&lt;script&gt;" in missing and "<script" not in missing
    home = _html(client.get("/explorer"))
    assert "<script" not in home and "/explorer/epochs/1" in home
    for url in ("/explorer", f"/explorer/jobs/{job_id}", f"/explorer/jobs/{EVIL}"):
        headers = client.get(url).headers  # no script may run should escaping ever slip
        assert "default-src 'none'" in headers["content-security-policy"]
        assert "script-src" not in headers["content-security-policy"]
        assert headers["x-content-type-options"] == "nosniff"


def test_explorer_unknown_ids_answer_a_404_page(http: tuple[TestClient, str]) -> None:
    client, job_id = http
    for url in (
        "/explorer/epochs/2",
        "/explorer/epochs/one",
        "/explorer/epochs/99999999999999999999999",
        "/explorer/jobs/0x" + "ab" * 32,
        f"/explorer/contributors/{CLIENT}",  # a client, not a contributor
        f"/explorer/clients/{CONTRIBUTOR}",
        "/explorer/clients/0x1234",
        "/explorer/contributors/not-an-address",
    ):
        page = _html(client.get(url), 404)
        assert 'id="not-found"' in page, url
    for url in (
        "/explorer/epochs/1",
        f"/explorer/jobs/{job_id}",
        f"/explorer/jobs/{job_id.upper().replace('0X', '0x')}",
        f"/explorer/contributors/{CONTRIBUTOR.lower()}",
        f"/explorer/clients/{CLIENT}",
    ):
        _html(client.get(url))


def test_explorer_search_redirects_to_the_page_named(http: tuple[TestClient, str]) -> None:
    client, job_id = http
    expected = {
        "1": "/explorer/epochs/1",
        job_id: f"/explorer/jobs/{job_id}",
        CONTRIBUTOR.lower(): f"/explorer/contributors/{CONTRIBUTOR}",
        CLIENT: f"/explorer/clients/{CLIENT}",
    }
    for q, where in expected.items():
        r = client.get("/explorer/search", params={"q": q}, follow_redirects=False)
        assert (r.status_code, r.headers["location"]) == (303, where)


def test_explorer_routes_are_not_in_the_openapi_schema(http: tuple[TestClient, str]) -> None:
    client, _ = http
    paths = client.get("/openapi.json").json()["paths"]
    assert not [p for p in paths if p.startswith("/explorer")]
    assert "/v1/epochs" in paths  # the JSON API still is


def test_explorer_front_page_counts_jobs_per_minute(http: tuple[TestClient, str]) -> None:
    """The per-minute query (integer division in SQL) on each database: 60 bars, the one
    job in the last."""
    client, _ = http
    home = _html(client.get("/explorer"))
    chart = home.split('id="chart-jobs-per-minute"', 1)[1].split("</figure>", 1)[0]
    bars = [int(v) for v in re.findall(r'class="bar"[^>]*data-value="(\d+)"', chart)]
    assert bars == [0] * 59 + [1]
