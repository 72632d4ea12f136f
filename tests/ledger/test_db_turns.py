"""SQLite writers of one process take turns through a lock (``ledger.db._writer_turns``)
instead of SQLite's sleeping busy handler: the turn passes when the holder commits, rolls
back or closes, and is never kept by a unit of work that failed to begin."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import Engine, event, text
from sqlalchemy.exc import OperationalError
from sqlmodel import Session

from ledger import db


@pytest.fixture
def engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Engine:
    monkeypatch.setattr(db, "WRITER_WAIT_S", 1.0)  # a turn never given back fails fast
    engine = db.make_engine(f"sqlite:///{tmp_path / 'turns.db'}")
    with Session(engine) as session:
        session.execute(text("CREATE TABLE t (n INTEGER)"))
        session.commit()
    return engine


def _count(engine: Engine) -> int:
    with Session(engine) as session:
        return int(session.execute(text("SELECT count(*) FROM t")).scalar_one())


def test_the_turn_passes_on_commit_rollback_and_close(engine: Engine) -> None:
    with Session(engine) as session:
        session.execute(text("INSERT INTO t VALUES (1)"))
        session.commit()
    with Session(engine) as session:
        session.execute(text("INSERT INTO t VALUES (2)"))
        session.rollback()
    session = Session(engine)
    session.execute(text("INSERT INTO t VALUES (3)"))
    session.close()  # neither committed nor rolled back by the caller
    for _ in range(3):  # each would wait WRITER_WAIT_S and fail if a turn were kept
        assert _count(engine) == 1


def test_a_writer_waits_for_the_holder_then_goes(engine: Engine) -> None:
    order: list[str] = []
    holding = threading.Event()
    errors: list[BaseException] = []

    def holder() -> None:
        with Session(engine) as session:
            session.execute(text("INSERT INTO t VALUES (1)"))
            holding.set()
            time.sleep(0.3)
            order.append("holder commits")
            session.commit()

    def second() -> None:
        try:
            holding.wait(5)
            with Session(engine) as session:
                session.execute(text("INSERT INTO t VALUES (2)"))  # waits for its turn
                order.append("second writes")
                session.commit()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=holder), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not errors
    assert order == ["holder commits", "second writes"]
    assert _count(engine) == 2


def test_a_turn_not_given_back_is_a_clear_error(engine: Engine) -> None:
    with Session(engine) as session:
        session.execute(text("INSERT INTO t VALUES (1)"))  # holds the turn
        failed: list[BaseException] = []

        def other() -> None:
            try:
                with Session(engine) as s:
                    s.execute(text("SELECT 1"))
            except BaseException as exc:
                failed.append(exc)

        t = threading.Thread(target=other)
        t.start()
        t.join(10)
        assert failed and "database is locked" in str(failed[0])
        session.commit()
    assert _count(engine) == 1  # the holder's work was not disturbed


def test_a_failed_begin_gives_the_turn_back(engine: Engine, tmp_path: Path) -> None:
    """Another process holds SQLite's write lock past the busy timeout: BEGIN IMMEDIATE
    fails; the turn of this process is given back all the same."""
    engine.dispose()  # new connections, which give up on SQLite's lock after 50 ms
    event.listen(engine, "connect", lambda conn, _: conn.execute("PRAGMA busy_timeout=50"))
    outside = sqlite3.connect(tmp_path / "turns.db", isolation_level=None)
    outside.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(OperationalError, match="locked"):
            with Session(engine) as session:
                session.execute(text("INSERT INTO t VALUES (1)"))
    finally:
        outside.rollback()
        outside.close()
    assert _count(engine) == 0  # the turn is free again: this would fail otherwise
