"""A client's paid job against a real Hardhat node and SQLite: the voucher is checked, the
price held, replicas assigned to distinct contributors, all in one unit of work; every refusal
leaves the database exactly as it was."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from eth_account import Account
from ledger_support import add_worker, address, snapshot, transfer_ids
from sqlmodel import Session, col, func, select

from ledger import invariants, journal
from ledger.chain.catchup import CatchUp
from ledger.config import REPO_ROOT, Settings
from ledger.context import Context
from ledger.db import session_scope
from ledger.errors import (
    Conflict,
    InvalidRequest,
    LedgerError,
    NoCapacity,
    PaymentRequired,
    VoucherInvalid,
)
from ledger.jobs import JobRequest, JobRow, admit, create_job, prepare
from ledger.models import (
    Assignment,
    AssignmentStatus,
    Client,
    Job,
    JobStatus,
    Worker,
    WorkerTrust,
)
from protocol import tensors
from protocol.eip712 import Voucher, job_id, sign_voucher

TOKEN = 10**18
MANIFEST = json.loads((REPO_ROOT / "models" / "digits-cnn" / "manifest.json").read_text())
MODEL_HASH = "0x" + MANIFEST["sha256"]
PRICE = int(MANIFEST["price_per_row_wei"])  # one row
ARTIFACTS = REPO_ROOT / "artifacts"


def _inputs(
    seed: int = 0, shape: tuple[int, ...] = (1, 1, 8, 8), dtype: Any = np.float32
) -> dict[str, Any]:
    array = np.random.default_rng(seed).random(shape).astype(dtype)
    return {"input": tensors.encode(array)}


@pytest.fixture(scope="module")
def deployment_file(chain: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("deployment") / "deployment.json"
    path.write_text(chain.deployment.to_json())
    return path


@pytest.fixture(scope="module")
def client_key(chain: Any) -> str:
    """Client 1 with tokens minted by the admin and 1 token deposited by itself."""
    admin, client = chain.actor(0), chain.actor(1)
    admin.transact(admin.token.functions.mint(client.address, 5 * TOKEN), "mint")
    client.transact(client.token.functions.approve(chain.deployment.vault, TOKEN), "approve")
    client.transact(client.vault.functions.deposit(TOKEN), "deposit")
    return str(chain.keys[1])


@pytest.fixture
def fund(chain: Any) -> Callable[[int], str]:
    """A fresh client (a new key) with exactly ``amount`` wei deposited for it by the admin."""
    admin = chain.actor(0)

    def make(amount: int, key: str | None = None) -> str:
        key = key or "0x" + bytes(Account.create().key).hex()
        if amount:
            client = Account.from_key(key).address
            admin.transact(admin.token.functions.mint(admin.address, amount), "mint")
            admin.transact(admin.token.functions.approve(chain.deployment.vault, amount), "approve")
            admin.transact(admin.vault.functions.depositFor(client, amount), "depositFor")
        return key

    return make


@pytest.fixture
def ctx(chain: Any, sqlite_url: str, tmp_path: Path, deployment_file: Path) -> Context:
    ctx = Context(
        Settings(
            database_url=sqlite_url,
            data_dir=tmp_path,
            rpc_url=chain.rpc_url,
            deployment_file=deployment_file,
            settler_key=chain.keys[0],
            replicas=2,
            max_replicas=3,
        )
    )
    return ctx


def _contributor(chain: Any, index: int) -> str:
    return str(Account.from_key(chain.keys[index]).address)


@pytest.fixture
def workers(ctx: Context, chain: Any) -> dict[str, str]:
    """Two eligible workers of contributors 3 and 4, and some that must never be chosen."""
    chosen = {address(0xD3): _contributor(chain, 3), address(0xD4): _contributor(chain, 4)}
    with session_scope(ctx.engine) as session:
        for worker, contributor in chosen.items():
            add_worker(session, worker, contributor)
        add_worker(session, address(0xE5), _contributor(chain, 5), eligible=False)
        add_worker(session, address(0xE6), _contributor(chain, 6), seen_ago_s=3600)
    return chosen


def _request(
    ctx: Context,
    key: str,
    cumulative: int,
    *,
    inputs: dict[str, Any] | None = None,
    expiry: int | None = None,
    signer: str | None = None,
    model_hash: str = MODEL_HASH,
) -> JobRequest:
    client = Account.from_key(key).address
    expiry = expiry if expiry is not None else int(time.time()) + 7200
    voucher = Voucher(client, cumulative, expiry)
    sig = sign_voucher(
        ctx.deployment.vault_domain, voucher, bytes.fromhex((signer or key).removeprefix("0x"))
    )
    return JobRequest(
        model_hash,
        inputs if inputs is not None else _inputs(),
        client,
        cumulative,
        expiry,
        "0x" + sig.hex(),
    )


def _create(ctx: Context, req: JobRequest) -> tuple[Job | JobRow, bool]:
    with session_scope(ctx.engine) as session:
        return create_job(session, ctx, req)


def _rows(ctx: Context) -> dict[str, int]:
    with Session(ctx.engine) as session:
        return {
            model.__name__: int(session.exec(select(func.count()).select_from(model)).one())
            for model in (Job, Assignment, Client)
        }


def _client_row(ctx: Context, client: str) -> Client | None:
    with Session(ctx.engine) as session:
        return session.get(Client, client)


def _refused(ctx: Context, req: JobRequest, error: type[LedgerError], code: str) -> LedgerError:
    """The request is refused with ``error``/``code`` and the database is left as it was."""
    before, rows, ids = snapshot(ctx.engine), _rows(ctx), transfer_ids(ctx.engine)
    with pytest.raises(error) as caught:
        _create(ctx, req)
    assert caught.value.code == code
    assert snapshot(ctx.engine) == before
    assert _rows(ctx) == rows
    assert transfer_ids(ctx.engine) == ids
    return caught.value


def test_jobs_good_request_holds_the_price_and_assigns_distinct_contributors(
    ctx: Context, chain: Any, client_key: str, workers: dict[str, str]
) -> None:
    client = Account.from_key(client_key).address
    deposited = int(ctx.chain.call(ctx.chain.vault.functions.totalDepositedOf(client)))
    job, created = _create(ctx, _request(ctx, client_key, PRICE))
    assert created
    assert job.id == "0x" + job_id(chain.deployment.vault, client, PRICE).hex()
    assert (job.status, job.price_wei, job.rows, job.replicas_wanted) == (
        JobStatus.PENDING,
        PRICE,
        1,
        2,
    )
    assert (job.client, job.model_hash, job.epoch, job.result_hash) == (
        client,
        MODEL_HASH,
        None,
        None,
    )
    snap = snapshot(ctx.engine)
    assert snap.balance(journal.ESCROW) == PRICE
    assert snap.balance(journal.client_account(client)) == deposited - PRICE
    assert snap.balance(journal.VAULT) == -deposited
    assert transfer_ids(ctx.engine) == {f"deposit:{client.lower()}:{deposited}", f"hold:{job.id}"}
    assignments = [a for a in _assignments(ctx) if a.job_id == job.id]
    assert len(assignments) == 2
    assert {
        a.worker: a.contributor for a in assignments
    } == workers  # the two eligible ones, once each
    assert {a.status for a in assignments} == {AssignmentStatus.ASSIGNED}
    assert all(a.deadline > time.time() for a in assignments)
    row = _client_row(ctx, client)
    assert row is not None and (row.deposited_wei, row.max_voucher_wei) == (deposited, PRICE)

    # a second job: the journal balance covers it, so the deposit is not read (or posted) again
    second, created = _create(ctx, _request(ctx, client_key, 2 * PRICE, inputs=_inputs(1)))
    assert created and second.id != job.id
    ids = transfer_ids(ctx.engine)
    assert [t for t in ids if t.startswith("deposit:")] == [f"deposit:{client.lower()}:{deposited}"]
    assert {t for t in ids if t.startswith("hold:")} == {f"hold:{job.id}", f"hold:{second.id}"}
    assert snapshot(ctx.engine).balance(journal.ESCROW) == 2 * PRICE
    with Session(ctx.engine) as session:
        invariants.check_full(session)


def _assignments(ctx: Context) -> list[Assignment]:
    with Session(ctx.engine) as session:
        return list(session.exec(select(Assignment)).all())


def test_jobs_retry_returns_the_same_job_and_holds_nothing_more(
    ctx: Context, client_key: str, workers: dict[str, str]
) -> None:
    req = _request(ctx, client_key, PRICE)
    job, created = _create(ctx, req)
    assert created
    before, rows, assigned = snapshot(ctx.engine), _rows(ctx), _assignments(ctx)
    for _ in range(2):
        again, created = _create(ctx, req)
        assert not created
        assert again.id == job.id and again.input_hash == job.input_hash
    assert snapshot(ctx.engine) == before
    assert _rows(ctx) == rows == {"Job": 1, "Assignment": 2, "Client": 1}
    assert [(a.id, a.worker) for a in _assignments(ctx)] == [(a.id, a.worker) for a in assigned]


def test_jobs_same_voucher_with_another_input_is_voucher_reused(
    ctx: Context, client_key: str, workers: dict[str, str]
) -> None:
    job, _ = _create(ctx, _request(ctx, client_key, PRICE, inputs=_inputs(0)))
    err = _refused(
        ctx, _request(ctx, client_key, PRICE, inputs=_inputs(1)), Conflict, "voucher_reused"
    )
    assert err.status == 409
    with Session(ctx.engine) as session:
        stored = session.get(Job, job.id)
        assert stored is not None and stored.input_hash == job.input_hash  # untouched


def test_jobs_voucher_not_above_the_clients_max_is_refused(
    ctx: Context, client_key: str, workers: dict[str, str]
) -> None:
    _create(ctx, _request(ctx, client_key, 3 * PRICE))
    for lower in (3 * PRICE - 1, 2 * PRICE, 1):  # another job id, but not above the max
        err = _refused(
            ctx,
            _request(ctx, client_key, lower, inputs=_inputs(2)),
            Conflict,
            "voucher_not_increasing",
        )
        assert err.data == {"max_voucher_wei": 3 * PRICE}
    _, created = _create(ctx, _request(ctx, client_key, 3 * PRICE + PRICE, inputs=_inputs(2)))
    assert created  # above the max it is accepted


def test_jobs_voucher_signed_by_another_key_is_refused(
    ctx: Context, chain: Any, client_key: str, workers: dict[str, str]
) -> None:
    _refused(
        ctx,
        _request(ctx, client_key, PRICE, signer=chain.keys[2]),
        VoucherInvalid,
        "voucher_signature",
    )
    good = _request(ctx, client_key, PRICE)
    for bad in (
        "0x1234",
        "0x" + "zz" * 65,
        good.signature[:-2] + "1b" if good.signature.endswith("1c") else good.signature[:-2] + "1c",
    ):
        _refused(
            ctx,
            JobRequest(**{**good.__dict__, "signature": bad}),
            VoucherInvalid,
            "voucher_signature",
        )
    # a voucher signed for another amount does not pay for this one
    other = _request(ctx, client_key, 2 * PRICE)
    _refused(
        ctx,
        JobRequest(**{**good.__dict__, "signature": other.signature}),
        VoucherInvalid,
        "voucher_signature",
    )
    assert _rows(ctx) == {"Job": 0, "Assignment": 0, "Client": 0}
    assert snapshot(ctx.engine).transfers == 0


def test_jobs_voucher_expiring_too_soon_is_refused(
    ctx: Context, client_key: str, workers: dict[str, str]
) -> None:
    now = int(time.time())
    for expiry in (now - 10, now + 60, now + ctx.settings.voucher_min_ttl_s - 30):
        err = _refused(
            ctx, _request(ctx, client_key, PRICE, expiry=expiry), VoucherInvalid, "voucher_expired"
        )
        assert err.status == 400
    _, created = _create(
        ctx, _request(ctx, client_key, PRICE, expiry=now + ctx.settings.voucher_min_ttl_s + 60)
    )
    assert created


def test_jobs_late_retry_returns_the_job_though_its_voucher_nears_expiry(
    ctx: Context, client_key: str, workers: dict[str, str]
) -> None:
    expiry = int(time.time()) + ctx.settings.voucher_min_ttl_s + 60
    job, created = _create(ctx, _request(ctx, client_key, PRICE, expiry=expiry))
    assert created
    ctx.settings.voucher_min_ttl_s += 3600  # as if an hour passed: the voucher is now too short
    again, created = _create(ctx, _request(ctx, client_key, PRICE, expiry=expiry))
    assert again.id == job.id and not created  # the retry names the job it already made
    _refused(
        ctx, _request(ctx, client_key, 2 * PRICE, expiry=expiry), VoucherInvalid, "voucher_expired"
    )


def test_jobs_voucher_below_owed_plus_price_is_too_low(
    ctx: Context, client_key: str, workers: dict[str, str]
) -> None:
    err = _refused(ctx, _request(ctx, client_key, PRICE - 1), VoucherInvalid, "voucher_too_low")
    assert err.data == {"needed": PRICE}
    _create(ctx, _request(ctx, client_key, PRICE))  # owes PRICE from now on
    err = _refused(
        ctx,
        _request(ctx, client_key, 2 * PRICE - 1, inputs=_inputs(3)),
        VoucherInvalid,
        "voucher_too_low",
    )
    assert err.data == {"needed": 2 * PRICE}
    _, created = _create(
        ctx, _request(ctx, client_key, 2 * PRICE, inputs=_inputs(3))
    )  # exactly enough
    assert created


def test_jobs_deposit_too_small_is_payment_required_and_holds_nothing(
    ctx: Context, fund: Callable[..., str], workers: dict[str, str]
) -> None:
    key = fund(PRICE - 1)
    client = Account.from_key(key).address
    req = _request(ctx, key, PRICE)
    err = _refused(ctx, req, PaymentRequired, "insufficient_deposit")
    assert err.status == 402
    assert err.data == {"needed": PRICE, "available": PRICE - 1}  # the deposit was read from chain
    assert _client_row(ctx, client) is None  # not even the deposit sync was kept
    assert snapshot(ctx.engine).transfers == 0

    fund(1, key)  # one more wei on chain: the same request now goes through, syncing once
    job, created = _create(ctx, req)
    assert created
    assert transfer_ids(ctx.engine) == {f"deposit:{client.lower()}:{PRICE}", f"hold:{job.id}"}
    snap = snapshot(ctx.engine)
    assert (
        snap.balance(journal.client_account(client)) == 0 and snap.balance(journal.ESCROW) == PRICE
    )

    nothing = fund(0)  # a client that never deposited
    err = _refused(ctx, _request(ctx, nothing, PRICE), PaymentRequired, "insufficient_deposit")
    assert err.data["available"] == 0


def test_jobs_too_few_eligible_contributors_is_no_capacity_and_nothing_happens(
    ctx: Context, chain: Any, client_key: str
) -> None:
    c3 = _contributor(chain, 3)
    with session_scope(ctx.engine) as session:  # two workers, but one contributor
        add_worker(session, address(0xD3), c3)
        add_worker(session, address(0xD5), c3)
        add_worker(session, address(0xE5), _contributor(chain, 5), eligible=False)
        add_worker(session, address(0xE6), _contributor(chain, 6), seen_ago_s=3600)
    client = Account.from_key(client_key).address
    req = _request(ctx, client_key, PRICE)
    err = _refused(ctx, req, NoCapacity, "no_capacity")
    assert err.status == 503
    assert _rows(ctx) == {"Job": 0, "Assignment": 0, "Client": 0}
    assert snapshot(ctx.engine).transfers == 0  # neither the hold nor the deposit sync stayed
    assert _client_row(ctx, client) is None  # the voucher was not consumed either

    with session_scope(ctx.engine) as session:  # a second contributor appears: same request works
        add_worker(session, address(0xD4), _contributor(chain, 4))
    job, created = _create(ctx, req)
    assert created
    assert {a.contributor for a in _assignments(ctx)} == {c3, _contributor(chain, 4)}
    with Session(ctx.engine) as session:
        assert session.get(Worker, address(0xE5)) is not None
        invariants.check_full(session)


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"model_hash": "0x" + "ab" * 32}, "unknown_model"),
        ({"inputs": _inputs(shape=(1, 1, 8, 7))}, "invalid_tensor"),
        ({"inputs": _inputs(shape=(1, 8, 8))}, "invalid_tensor"),
        ({"inputs": _inputs(shape=(65, 1, 8, 8))}, "invalid_tensor"),
        ({"inputs": _inputs(dtype=np.float64)}, "invalid_tensor"),
        ({"inputs": {"image": _inputs()["input"]}}, "invalid_tensor"),
        ({"inputs": {"input": {**_inputs()["input"], "data": "not base64!"}}}, "invalid_tensor"),
        ({"inputs": [1, 2]}, "invalid_tensor"),
        ({"client": "0x1234"}, "invalid_address"),
    ],
    ids=[
        "unknown_model",
        "shape",
        "rank",
        "too_many_rows",
        "dtype",
        "name",
        "base64",
        "not_object",
        "client",
    ],
)
def test_jobs_invalid_request_is_refused_with_its_code(
    ctx: Context, client_key: str, workers: dict[str, str], change: dict[str, Any], code: str
) -> None:
    good = _request(ctx, client_key, PRICE)
    err = _refused(ctx, JobRequest(**{**good.__dict__, **change}), InvalidRequest, code)
    assert err.status == 400
    assert _rows(ctx) == {"Job": 0, "Assignment": 0, "Client": 0}
    _, created = _create(ctx, good)  # the same voucher is still good for a valid request
    assert created


def _race(
    ctx: Context, pg_server: str, pg_url: str, early_req: JobRequest, late_req: JobRequest
) -> tuple[Job | JobRow, dict[str, Any]]:
    """Run ``early_req`` in a unit of work left open while ``late_req`` starts in a thread;
    commit the first once the second waits on a PostgreSQL lock (or has finished)."""
    outcome: dict[str, Any] = {}

    def late() -> None:
        try:
            outcome["job"], outcome["created"] = _create(ctx, late_req)
        except Exception as exc:  # recorded for the assertion, whatever it is
            outcome["error"] = exc

    early = Session(ctx.engine, expire_on_commit=False)
    thread = threading.Thread(target=late)
    try:
        job, created = create_job(early, ctx, early_req)
        assert created
        thread.start()
        db = pg_url.rsplit("/", 1)[1]
        deadline = time.monotonic() + 30
        with psycopg.connect(pg_server, autocommit=True) as conn:
            while thread.is_alive() and time.monotonic() < deadline:
                waiting = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE datname = %s AND wait_event_type = 'Lock'",
                    (db,),
                ).fetchone()
                if waiting and waiting[0]:
                    break
                thread.join(0.02)
        early.commit()
    finally:
        early.close()
    thread.join(30)
    assert not thread.is_alive()
    return job, outcome


def test_jobs_concurrent_requests_of_one_client_are_serialized(
    chain: Any, pg_server: str, pg_url: str, tmp_path: Path, deployment_file: Path, client_key: str
) -> None:
    """PostgreSQL only (SQLite serialises whole transactions). A request that arrives while
    another of the same client is uncommitted is judged on what that one committed: its job,
    its voucher high-water mark and what the client owes. Otherwise the client could be
    charged more than its highest voucher covers, and no epoch could redeem it."""
    ctx = Context(
        Settings(
            database_url=pg_url,
            data_dir=tmp_path,
            rpc_url=chain.rpc_url,
            deployment_file=deployment_file,
            settler_key=chain.keys[0],
        )
    )
    with session_scope(ctx.engine) as session:
        add_worker(session, address(0xD3), _contributor(chain, 3))
        add_worker(session, address(0xD4), _contributor(chain, 4))
    _create(ctx, _request(ctx, client_key, PRICE))  # owes PRICE, highest voucher PRICE

    # the same request twice at once: one job, the retry sees it
    same = _request(ctx, client_key, 2 * PRICE, inputs=_inputs(1))
    first, outcome = _race(ctx, pg_server, pg_url, same, same)
    assert "error" not in outcome, outcome
    assert outcome["job"].id == first.id and outcome["created"] is False

    # a higher voucher that no longer covers what is owed once the first commits
    second_req = _request(ctx, client_key, 3 * PRICE, inputs=_inputs(2))
    late_req = _request(ctx, client_key, 3 * PRICE + 1, inputs=_inputs(3))
    second, outcome = _race(ctx, pg_server, pg_url, second_req, late_req)
    error = outcome.get("error")
    assert isinstance(error, VoucherInvalid), outcome  # 3 * PRICE + 1 does not cover 4 * PRICE
    assert error.code == "voucher_too_low" and error.data == {"needed": 4 * PRICE}

    with Session(ctx.engine) as session:
        client = session.get(Client, Account.from_key(client_key).address)
        assert client is not None and client.max_voucher_wei == 3 * PRICE
        assert len(session.exec(select(Job)).all()) == 3
        assert session.get(Job, second.id) is not None
        invariants.check_full(session)
    snap = snapshot(ctx.engine)
    assert snap.balance(journal.ESCROW) == 3 * PRICE
    assert snap.transfers == 4  # one deposit, three holds


# -- many requests per unit of work (ledger.jobs.admit, ledger.ingest) ---------------------


def test_jobs_a_batch_is_admitted_as_if_one_request_at_a_time(
    ctx: Context, fund: Callable[..., str], workers: dict[str, str]
) -> None:
    a, b = fund(10 * PRICE), fund(2 * PRICE)
    addr_a, addr_b = Account.from_key(a).address, Account.from_key(b).address
    stream = [
        (_request(ctx, a, PRICE, inputs=_inputs(1)), "created"),
        (_request(ctx, a, PRICE, inputs=_inputs(1)), "retry"),  # the same request again
        (_request(ctx, a, PRICE, inputs=_inputs(2)), "voucher_reused"),  # its voucher, new input
        (_request(ctx, b, PRICE), "created"),
        (_request(ctx, a, 3 * PRICE, inputs=_inputs(3)), "created"),
        (_request(ctx, a, 2 * PRICE, inputs=_inputs(4)), "voucher_not_increasing"),
        (_request(ctx, b, 2 * PRICE), "created"),
        (_request(ctx, b, 3 * PRICE), "insufficient_deposit"),  # b deposited 2 prices
        (_request(ctx, a, 3 * PRICE + 1, inputs=_inputs(5)), "created"),  # owes 3 prices
        (_request(ctx, a, 3 * PRICE + 2, inputs=_inputs(6)), "voucher_too_low"),  # owes 4
    ]
    with session_scope(ctx.engine) as session:
        outcomes = admit(session, ctx, [prepare(ctx, req) for req, _ in stream])
    got = [
        o.code if isinstance(o, LedgerError) else ("created" if o[1] else "retry") for o in outcomes
    ]
    assert got == [want for _, want in stream]
    first, retry = outcomes[0], outcomes[1]
    assert isinstance(first, tuple) and isinstance(retry, tuple) and first[0].id == retry[0].id
    snap = snapshot(ctx.engine)
    assert snap.balance(journal.client_account(addr_a)) == 10 * PRICE - 3 * PRICE
    assert snap.balance(journal.client_account(addr_b)) == 0
    assert snap.balance(journal.ESCROW) == 5 * PRICE
    with Session(ctx.engine) as session:
        jobs = session.exec(select(Job)).all()
        assert len(jobs) == 5 and {j.status for j in jobs} == {JobStatus.PENDING}
        for job in jobs:
            owners = session.exec(
                select(Assignment.contributor).where(Assignment.job_id == job.id)
            ).all()
            assert sorted(owners) == sorted(workers.values())  # distinct contributors
        a_row, b_row = session.get(Client, addr_a), session.get(Client, addr_b)
        assert a_row is not None and a_row.max_voucher_wei == 3 * PRICE + 1
        assert b_row is not None and b_row.max_voucher_wei == 2 * PRICE
        invariants.check_full(session)


def test_ingest_commits_concurrent_requests_together_and_loses_none(
    ctx: Context, fund: Callable[..., str], workers: dict[str, str]
) -> None:
    clients, per_client = 6, 10  # 60 jobs: within each worker's 64 in flight
    keys = [fund(per_client * PRICE) for _ in range(clients)]
    with session_scope(ctx.engine) as session:  # seen just now, however long funding took
        for worker in workers:
            row = session.get(Worker, worker)
            assert row is not None
            row.last_seen = time.time()
    results: list[tuple[Job | JobRow, bool]] = []
    errors: list[BaseException] = []

    def client(key: str) -> None:  # one client's requests in order, as a client library does
        try:
            for n in range(1, per_client + 1):
                results.append(ctx.ingest.submit(prepare(ctx, _request(ctx, key, n * PRICE))))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(k,)) for k in keys]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert len(results) == clients * per_client and all(created for _, created in results)
    assert ctx.ingest.admitted == clients * per_client
    assert ctx.ingest.batches < clients * per_client  # several requests shared a commit
    with Session(ctx.engine) as session:
        assert len(session.exec(select(Job)).all()) == clients * per_client
        invariants.check_full(session)
    snap = snapshot(ctx.engine)
    assert snap.balance(journal.ESCROW) == clients * per_client * PRICE
    for key in keys:
        assert snap.balance(journal.client_account(Account.from_key(key).address)) == 0


def test_jobs_in_prod_mode_a_deposit_pays_only_once_confirmed(
    ctx: Context, chain: Any, fund: Callable[..., str], workers: dict[str, str]
) -> None:
    prod = Context(ctx.settings.model_copy(update={"mode": "prod", "settler_key": None}))
    assert prod.settings.index_confirmations == 2
    prod.catch_up = CatchUp(prod.index, min_interval_s=0)  # catch up on every request
    key = fund(PRICE)  # mined just now: no block on top of it yet
    _refused(prod, _request(prod, key, PRICE), PaymentRequired, "insufficient_deposit")
    for _ in range(prod.settings.index_confirmations):
        chain.w3.provider.make_request("evm_mine", [])
    with session_scope(prod.engine) as session:  # fresh again after the blocks were mined
        for worker in workers:
            row = session.get(Worker, worker)
            assert row is not None
            row.last_seen = time.time()
    job, created = _create(prod, _request(prod, key, PRICE))
    assert created and job.price_wei == PRICE


def _with(ctx: Context, **changes: Any) -> Context:
    """Another context on the same database and chain, with some settings changed."""
    return Context(ctx.settings.model_copy(update=changes))


def _set_streaks(ctx: Context, streaks: dict[str, int]) -> None:
    with session_scope(ctx.engine) as session:
        for worker, streak in streaks.items():
            session.merge(WorkerTrust(address=worker, agreed_streak=streak))


def _replicas(ctx: Context, job: Job | JobRow) -> tuple[int, list[str]]:
    """The job's replicas wanted, as stored, and the workers assigned to it."""
    with Session(ctx.engine) as session:
        stored = session.get(Job, job.id)
        assert stored is not None
        workers = session.exec(select(Assignment.worker).where(Assignment.job_id == job.id)).all()
        return stored.replicas_wanted, sorted(workers)


def test_jobs_adaptive_a_trusted_worker_runs_a_job_alone_unless_spot_checked(
    ctx: Context, fund: Callable[..., str], workers: dict[str, str]
) -> None:
    key = fund(10 * PRICE)
    trusted, other = sorted(workers)
    _set_streaks(ctx, {trusted: 3, other: 2})
    both = sorted(workers)
    cases = [  # (settings, replicas wanted, workers assigned)
        ({}, 2, both),  # adaptive replication off (trust_after 0, the default)
        ({"trust_after": 3, "spot_check_bps": 0}, 1, [trusted]),  # the other is not trusted
        ({"trust_after": 3, "spot_check_bps": 10_000}, 2, both),  # every job spot-checked
        ({"trust_after": 4, "spot_check_bps": 0}, 2, both),  # neither has earned it
        ({"trust_after": 2, "spot_check_bps": 0}, 1, None),  # both trusted: one of them alone
    ]
    for n, (changes, wanted, assigned) in enumerate(cases, start=1):
        job, created = _create(_with(ctx, **changes), _request(ctx, key, n * PRICE))
        assert created and job.replicas_wanted == wanted
        got_wanted, got_workers = _replicas(ctx, job)
        assert got_wanted == wanted and len(got_workers) == wanted
        assert got_workers == assigned if assigned is not None else set(got_workers) < set(both)
    snap = snapshot(ctx.engine)  # a lone job holds its full price, as any other
    assert snap.balance(journal.ESCROW) == len(cases) * PRICE
    with Session(ctx.engine) as session:
        invariants.check_full(session)


def test_jobs_adaptive_spot_checks_are_drawn_at_the_configured_rate(
    ctx: Context, fund: Callable[..., str], workers: dict[str, str]
) -> None:
    n = 400
    key = fund(n * PRICE)
    _set_streaks(ctx, dict.fromkeys(workers, 5))
    adaptive = _with(ctx, trust_after=5, spot_check_bps=2_500, worker_max_in_flight=n)
    batch = [prepare(ctx, _request(ctx, key, (i + 1) * PRICE)) for i in range(n)]
    with session_scope(adaptive.engine) as session:
        outcomes = admit(session, adaptive, batch)
    assert all(isinstance(o, tuple) and o[1] for o in outcomes)
    with Session(ctx.engine) as session:
        wanted = session.exec(select(Job.replicas_wanted)).all()
        lone_workers = session.exec(
            select(Assignment.worker)
            .join(Job, col(Job.id) == col(Assignment.job_id))
            .where(Job.replicas_wanted == 1)
        ).all()
        invariants.check_full(session)
    checked = sum(1 for w in wanted if w == 2)
    assert sum(1 for w in wanted if w == 1) == n - checked == len(lone_workers)
    # 100 expected (a quarter), standard deviation 8.7: outside 60..140 once in 250,000 runs
    assert 60 <= checked <= 140, checked
    per_worker = Counter(lone_workers)  # the lone jobs go to either trusted worker at random
    assert set(per_worker) == set(workers)
    assert min(per_worker.values()) >= (n - checked) // 2 - 60, per_worker
