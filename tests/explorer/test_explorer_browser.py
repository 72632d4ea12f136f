"""The explorer in a real browser: Debian's headless Chromium, driven by Playwright, loads
the pages of two settled epochs served by uvicorn and checks what they show against the
database and the chain. Screenshots of every page are saved under ``test-artifacts/explorer/``
(or ``$INFERLEDGER_TEST_ARTIFACTS/explorer/``) for a person to look at.

The epochs, over real parts (tests/api/api_harness.py: contracts on the shared Hardhat node,
staked contributors with registered device keys, the API's own routes, onnxruntime outputs,
signed attestations, the reconciler, ``close_epoch`` posting on chain, the chain index):
epoch 1 has three jobs all replicas agree on; epoch 2 two more, one where a replica dissents
(a third replica is added, and the majority is accepted) and one that fails for want of a
majority; one more job is decided after epoch 2, its pay pending."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from playwright.sync_api import sync_playwright
from sqlmodel import select

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "api"))
from api_harness import ApiEnv, Arrays, api_env, own_celery_queue, samples, served  # noqa: E402

from ledger.config import REPO_ROOT  # noqa: E402
from ledger.db import session_scope  # noqa: E402
from ledger.earnings import contributor_earnings  # noqa: E402
from ledger.epochs import close_epoch  # noqa: E402
from ledger.models import Epoch, Job, Worker  # noqa: E402
from protocol.contracts import EpochRecord  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SHOTS = (
    Path(os.environ.get("INFERLEDGER_TEST_ARTIFACTS", REPO_ROOT / "test-artifacts")) / "explorer"
)


@dataclass
class Settled:
    env: ApiEnv
    dissent_job: str  # accepted two to one
    failed_job: str
    dissenter: str  # the contributor whose device voted against the consensus


def _decide(env: ApiEnv, inputs: Arrays, wrong: int) -> tuple[str, list[str]]:
    """Submit a job; the first ``wrong`` replicas to answer send outputs of their own (each
    different), the others the model's; reconcile until it is decided (more replicas are
    assigned on a disagreement). Returns the job id and who answered wrong."""
    job_id = env.submit_job(inputs)["job_id"]
    right = env.model.run(inputs)
    liars: list[str] = []
    for _ in range(3):
        for c in env.assigned(job_id):
            mine = [a for a in env.pull(c) if a["job_id"] == job_id]
            if not mine:
                continue
            outputs = None
            if len(liars) < wrong:
                liars.append(c.address)
                outputs = {k: v + np.float32(len(liars)) for k, v in right.items()}
            env.post_results(c, [env.result_item(mine[0], c.device, outputs=outputs)])
        env.reconcile()
        status = env.http.get(f"/v1/jobs/{job_id}").json()["status"]
        if status in ("accepted", "failed"):
            return job_id, liars
    raise AssertionError(f"job {job_id} was not decided")


@pytest.fixture(scope="module")
def settled(
    chain: Any, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Settled]:
    data_dir = tmp_path_factory.mktemp("explorer")
    with (
        own_celery_queue(redis_url, "inferledger-explorer-tests-"),
        api_env(chain.w3, chain.rpc_url, chain.keys, data_dir) as env,
    ):
        env.sign_in_all()
        for i in range(3):
            env.run_job(samples(2, start=2 * i))
        assert close_epoch(env.ctx) is not None
        for i in range(2):
            env.run_job(samples(1, start=10 + i))
        dissent_job, (dissenter,) = _decide(env, samples(1, start=20), wrong=1)
        failed_job, _ = _decide(env, samples(1, start=21), wrong=3)
        assert close_epoch(env.ctx) is not None
        env.run_job(samples(1, start=30))  # decided after epoch 2: its pay is pending
        env.ctx.index.sync()  # as beat's task does: stakes and postings read from the chain
        yield Settled(env, dissent_job, failed_job, dissenter)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        if os.environ.get("INFERLEDGER_TEST_SKIP_MISSING") == "1":
            pytest.skip(f"{CHROMIUM} is not installed")
        pytest.fail(f"{CHROMIUM} is not installed: `make browser` installs Debian's chromium")
    with sync_playwright() as p:
        found = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield found
        found.close()


class Pages:
    """One browser page on the served API that records every URL it requested."""

    def __init__(self, browser: Any, base: str) -> None:
        self.base = base
        self.page = browser.new_page(viewport={"width": 1280, "height": 900})
        self.requested: list[str] = []
        self.errors: list[str] = []
        self.page.on("request", lambda r: self.requested.append(r.url))
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))

    def open(self, path: str, shot: str, status: int = 200) -> Any:
        seen = len(self.errors)
        response = self.page.goto(self.base + path)
        assert response is not None and response.status == status, path
        if status == 404:  # the browser reports the page's own status as an error
            self.errors[seen:] = [e for e in self.errors[seen:] if "404" not in e]
        SHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(SHOTS / f"{shot}.png"), full_page=True)
        return self.page

    def fact(self, dl_id: str, label: str) -> Any:
        """The value beside ``label`` in the facts list ``dl_id``."""
        dt = f'#{dl_id} dt:text-is("{label}")'
        return self.page.locator(f"{dt} + dd")

    def wei(self, dl_id: str, label: str) -> int:
        return int(self.fact(dl_id, label).locator("[data-wei]").get_attribute("data-wei"))

    def values(self, selector: str) -> list[str]:
        marks = self.page.locator(selector)
        return [marks.nth(i).get_attribute("data-value") for i in range(marks.count())]


@pytest.fixture(scope="module")
def pages(settled: Settled, browser: Any) -> Iterator[Pages]:
    with served(settled.env.http.app) as base:
        found = Pages(browser, base)
        yield found
        found.page.close()
    assert all(url.startswith(base) for url in found.requested), found.requested
    assert not found.errors


def _epochs(env: ApiEnv) -> list[Epoch]:
    with session_scope(env.ctx.engine) as session:
        return list(session.exec(select(Epoch).order_by(Epoch.number)).all())


def test_explorer_front_page_lists_epochs_and_charts(settled: Settled, pages: Pages) -> None:
    page = pages.open("/explorer", "home")
    one, two = _epochs(settled.env)
    assert page.locator("#epochs tbody tr").count() == 2
    assert page.locator("#epochs tbody tr").first.locator("td").first.inner_text() == "2"
    assert page.locator("#epochs .badge.good").count() == 2  # both match the chain
    payouts = [one.cumulative_payout_wei, two.cumulative_payout_wei - one.cumulative_payout_wei]
    assert pages.values("#chart-earnings rect.bar") == [str(p) for p in payouts]
    assert pages.values("#chart-consensus circle.point") == ["100", "75"]
    per_minute = pages.values("#chart-jobs-per-minute rect.bar")
    with session_scope(settled.env.ctx.engine) as session:
        jobs = len(session.exec(select(Job)).all())
    assert len(per_minute) == 60 and sum(int(v) for v in per_minute) == jobs == 8


def test_explorer_epoch_page_matches_the_chain(settled: Settled, pages: Pages) -> None:
    env = settled.env
    chain = env.ctx.chain
    record = EpochRecord.from_call(chain.call(chain.settlement.functions.epochs(2), "epochs"))
    page = pages.open("/explorer/epochs/2", "epoch-2")
    stored = _epochs(env)[1]
    assert page.locator("#root").inner_text() == stored.root == "0x" + record.root.hex()
    assert page.locator("#chain-root").inner_text() == stored.root
    assert "matches chain" in pages.fact("audit", "chain index").inner_text()
    assert pages.fact("audit", "published file").inner_text() == "keccak256 matches"
    assert page.locator("#jobs tbody tr").count() == stored.jobs == 4
    assert pages.fact("epoch", "failed").inner_text() == "1"
    assert pages.fact("epoch", "consensus rate").inner_text() == "75.0%"
    assert pages.wei("epoch", "cumulative payout") == record.cumulative_payout
    assert pages.wei("epoch", "cumulative fees") == record.cumulative_fees


def test_explorer_job_page_shows_votes_and_consensus(settled: Settled, pages: Pages) -> None:
    page = pages.open(f"/explorer/jobs/{settled.dissent_job}", "job-dissent")
    with session_scope(settled.env.ctx.engine) as session:
        job = session.get(Job, settled.dissent_job)
    assert job is not None
    assert page.locator("#consensus").inner_text() == job.result_hash
    votes = page.locator("#votes tbody tr")
    assert votes.count() == 3
    assert page.locator("#votes .badge").all_inner_texts().count("consensus") == 2
    assert pages.fact("job", "model").inner_text().startswith("digits-cnn")
    pages.open(f"/explorer/jobs/{settled.failed_job}", "job-failed")
    assert pages.fact("job", "failure").inner_text() == "no_majority"


def test_explorer_contributor_pages_show_earnings_and_faults(
    settled: Settled, pages: Pages
) -> None:
    """Each contributor's page against the ledger; the one whose device dissented has its
    safety fault; the one job decided after epoch 2 shows as pending for its two."""
    pending = 0
    for i, c in enumerate(settled.env.contributors):
        pages.open(f"/explorer/contributors/{c.address}", f"contributor-{i + 1}")
        with session_scope(settled.env.ctx.engine) as session:
            earned = contributor_earnings(session, c.address)
            found = session.exec(select(Worker).where(Worker.contributor == c.address)).all()
        assert earned.posted_epoch == 2 and earned.posted_wei > 0
        assert pages.wei("contributor", "earned in all") == earned.earned_wei
        assert pages.wei("contributor", "under epoch 2's root (claimable once final)") == (
            earned.posted_wei
        )
        assert pages.wei("contributor", "pending (next epoch)") == earned.pending_wei
        assert pages.wei("contributor", "stake bonded") == 100 * 10**18
        faults = pages.fact("contributor", "safety faults").inner_text()
        assert faults == str(sum(w.safety_faults for w in found))
        assert faults == ("1" if c.address == settled.dissenter else "0")
        bars = pages.values("#chart-earnings rect.bar")
        assert len(bars) == 2 + (earned.pending_wei > 0)  # each epoch, then what is pending
        assert sum(int(v) for v in bars) == earned.earned_wei
        pending += earned.pending_wei > 0
    assert pending == 2  # the replicas of the last job


def test_explorer_client_page_shows_spend(settled: Settled, pages: Pages) -> None:
    env = settled.env
    pages.open(f"/explorer/clients/{env.client}", "client")
    balance = env.balance()
    assert pages.wei("client", "spent (charged for accepted jobs)") == int(balance["charged_wei"])
    assert pages.fact("client", "jobs").inner_text() == "8"
    assert sum(int(v) for v in pages.values("#chart-spend rect.bar")) == int(balance["charged_wei"])


def test_explorer_unknown_epoch_is_a_404_page(pages: Pages) -> None:
    page = pages.open("/explorer/epochs/9", "not-found", status=404)
    assert page.locator("#not-found").inner_text() == "There is no epoch 9."
