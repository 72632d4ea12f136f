"""Alembic environment: the ledger's tables (SQLModel metadata) on SQLite or PostgreSQL.

Run by ``ledger.db.migrate`` on every engine the services open (under a lock, so processes
starting together migrate once), or by hand: ``alembic -c alembic.ini upgrade head``.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection
from sqlmodel import SQLModel

import ledger.models  # noqa: F401  (registers the tables)
from ledger.config import get_settings
from ledger.db import make_engine

target_metadata = SQLModel.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=True,  # SQLite alters tables by copying them
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    url = context.config.get_main_option("sqlalchemy.url") or get_settings().db_url
    with make_engine(url).connect() as conn:
        _run(conn)
