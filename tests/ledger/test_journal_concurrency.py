"""The journal under concurrency, on a real database: replayed transfers from many threads
are created exactly once, and concurrent spends never overdraw a balance."""

from __future__ import annotations

import random
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from sqlmodel import func, select

from ledger import invariants, journal
from ledger.db import engine_for, session_scope
from ledger.errors import InsufficientFunds
from ledger.journal import PostResult, TransferKind, TransferSpec
from ledger.models import Transfer

CLIENT = journal.client_account("0x00000000000000000000000000000000000000c1")
THREADS = 8


def _specs(n: int) -> list[TransferSpec]:
    return [
        TransferSpec(f"deposit:c1:{i}", journal.VAULT, CLIENT, 1_000 + i, TransferKind.DEPOSIT)
        for i in range(n)
    ]


def test_journal_replayed_transfers_from_threads_are_created_once(db_url: str) -> None:
    engine = engine_for(db_url)
    specs = _specs(1_000)
    rng = random.Random(5)
    work = [spec for spec in specs for _ in range(rng.randint(1, 5))]
    rng.shuffle(work)
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()
    chunks = [work[i : i + 10] for i in range(0, len(work), 10)]  # a unit of work posts a batch

    def post(chunk: list[TransferSpec]) -> None:
        with session_scope(engine) as session:
            results = [journal.post(session, spec) for spec in chunk]
        with lock:
            outcomes.update(results)

    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(post, chunks))
    assert outcomes[PostResult.CREATED] == 1_000
    assert outcomes[PostResult.EXISTS] == len(work) - 1_000
    with session_scope(engine) as session:
        assert session.exec(select(func.count()).select_from(Transfer)).one() == 1_000
        assert journal.balance(session, CLIENT) == sum(s.amount_wei for s in specs)
        invariants.journal_balanced(session)
        invariants.balances_match_transfers(session)


def test_journal_concurrent_spends_never_overdraw(db_url: str) -> None:
    engine = engine_for(db_url)
    price = 7
    with session_scope(engine) as session:  # covers exactly 10 spends
        journal.post(
            session,
            TransferSpec("deposit:c1", journal.VAULT, CLIENT, 10 * price, TransferKind.DEPOSIT),
        )
    accepted: list[int] = []
    lock = threading.Lock()

    def spend(i: int) -> None:
        try:
            with session_scope(engine) as session:
                journal.post(
                    session,
                    TransferSpec(
                        f"hold:{i}", CLIENT, journal.ESCROW, price, TransferKind.HOLD, f"{i}"
                    ),
                )
        except InsufficientFunds:
            return
        with lock:
            accepted.append(i)

    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(spend, range(50)))
    assert len(accepted) == 10
    with session_scope(engine) as session:
        assert journal.balance(session, CLIENT) == 0
        assert journal.balance(session, journal.ESCROW) == 10 * price
        invariants.journal_balanced(session)
        invariants.balances_match_transfers(session)
