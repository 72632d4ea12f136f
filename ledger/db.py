"""Database engine and sessions. SQLite (default, WAL, one writer at a time through
``BEGIN IMMEDIATE``) or PostgreSQL (``INFERLEDGER_DATABASE_URL``), same code."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, String, Table, event
from sqlalchemy.dialects.postgresql import NUMERIC
from sqlalchemy.types import TypeDecorator
from sqlmodel import Session, create_engine


class Wei(TypeDecorator[int]):
    """Exact 256-bit integer amounts: NUMERIC(78, 0) on PostgreSQL, decimal text on SQLite
    (SQLite's INTEGER stops at 2**63 - 1, about 9.2 tokens of 18 decimals). Arithmetic on
    amounts happens in Python on ints, never in SQL on floats."""

    impl = String(80)
    cache_ok = True

    def load_dialect_impl(self, dialect: Any) -> Any:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(NUMERIC(78, 0))
        return dialect.type_descriptor(String(80))

    def process_bind_param(self, value: int | None, dialect: Any) -> Any:
        if value is None:
            return None
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"amounts are ints, got {type(value).__name__}")
        return Decimal(value) if dialect.name == "postgresql" else str(value)

    def process_result_value(self, value: Any, dialect: Any) -> int | None:
        return None if value is None else int(value)


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        # LIFO: the connection used last is used again, so the one whose page cache a
        # reconcile enlarged (ledger.reconcile, up to 64 MiB) is the one that keeps it
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, pool_use_lifo=True
        )

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        _writer_turns(engine)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)


WRITER_WAIT_S = 30.0  # as the busy timeout: a writer waits this long for its turn, then fails


def _writer_turns(engine: Engine) -> None:
    """Every unit of work on ``engine`` begins with ``BEGIN IMMEDIATE`` (SQLite's one writer at
    a time, taken at once, so that no reader has to upgrade later and fail); the threads of
    this process also take their turns through one lock, released the moment the holder
    commits or rolls back. Without the lock, a thread that finds the write lock taken waits in
    SQLite's busy handler, which sleeps 1, 2, 5, 10, 15, 20 ms... between tries: a request
    behind a transaction of 2 ms waited 10 to 20 ms (docs/performance.md, *Latency added*).
    Other processes on the same file still meet the busy handler."""
    turn = threading.Lock()
    holders: set[int] = set()  # the DBAPI connections that hold the turn
    dialect = engine.dialect

    def _raw(connection: Any) -> Any:
        return getattr(connection, "dbapi_connection", connection)

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        if not turn.acquire(timeout=WRITER_WAIT_S):
            raise sqlite3.OperationalError(
                f"database is locked: no turn to write within {WRITER_WAIT_S} s"
            )
        raw = _raw(conn.connection)
        holders.add(id(raw))
        try:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        except BaseException:
            _give_back(raw)  # unless the failure's own rollback gave it back already
            raise

    def _give_back(connection: Any) -> None:
        key = id(_raw(connection))
        if key in holders:
            holders.discard(key)
            turn.release()

    def _ending(end: Any) -> Any:
        def ended(dbapi_connection: Any) -> None:
            try:
                end(dbapi_connection)
            finally:
                _give_back(dbapi_connection)

        return ended

    dialect.do_commit = _ending(dialect.do_commit)  # type: ignore[method-assign]
    dialect.do_rollback = _ending(dialect.do_rollback)  # type: ignore[method-assign]
    dialect.do_close = _ending(dialect.do_close)  # type: ignore[method-assign]


MIGRATIONS = Path(__file__).resolve().parent / "migrations"
MIGRATION_LOCK = 0x1D6E7  # a PostgreSQL advisory lock: one process migrates at a time


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision`` with Alembic; safe when processes start together
    (SQLite's BEGIN IMMEDIATE or PostgreSQL's advisory lock serialises them)."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


@lru_cache(maxsize=8)
def engine_for(url: str) -> Engine:
    """The engine of ``url``, its schema migrated to the newest revision."""
    engine = make_engine(url)
    migrate(engine)
    return engine


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any error."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


ROWS_PER_STATEMENT = 500  # multi-row statements: a few thousand bound values each


def mark(dialect: Any) -> str:
    """The driver's positional placeholder (for ``exec_driver_sql``)."""
    return "?" if dialect.name == "sqlite" else "%s"


def values_list(dialect: Any, rows: Sequence[Sequence[Any]]) -> tuple[str, list[Any]]:
    """``(?, ?), (?, ?)...`` for ``rows`` and their values flattened, for one statement."""
    one = "(" + ", ".join([mark(dialect)] * len(rows[0])) + ")"
    return ", ".join([one] * len(rows)), [value for row in rows for value in row]


def insert_many(
    session: Session, table: Table, columns: Sequence[str], rows: Sequence[Sequence[Any]]
) -> None:
    """Insert ``rows`` (values in the order of ``columns``) in the caller's unit of work, a
    few hundred per multi-row INSERT, skipping SQLAlchemy's per-row parameter handling and
    psycopg's per-row round trips, which cost more than the inserts themselves on the hot
    paths (reconcile, ingest). Values still go through each column type's bind processor
    (``Wei``: text or Decimal)."""
    if not rows:
        return
    connection = session.connection()
    dialect = connection.dialect
    processors = [
        (i, fn)
        for i, name in enumerate(columns)
        if (fn := table.c[name].type.bind_processor(dialect)) is not None
    ]
    quote = dialect.identifier_preparer.quote
    head = f"INSERT INTO {quote(table.name)} ({', '.join(quote(c) for c in columns)}) VALUES "
    for start in range(0, len(rows), ROWS_PER_STATEMENT):
        chunk = rows[start : start + ROWS_PER_STATEMENT]
        if processors:
            converted = []
            for row in chunk:
                values = list(row)
                for i, fn in processors:
                    values[i] = fn(values[i])
                converted.append(values)
            chunk = converted
        sql, flat = values_list(dialect, chunk)
        connection.exec_driver_sql(head + sql, tuple(flat))
