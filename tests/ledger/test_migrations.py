"""Alembic migrations on SQLite and PostgreSQL: a fresh database is migrated to the newest
revision, the migrated schema is exactly the models' (nothing left to autogenerate), and the
migrations go down to nothing and up again."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect
from sqlmodel import SQLModel

from ledger.db import MIGRATIONS, engine_for, make_engine, migrate


def _head() -> str:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None
    return head


def test_migrations_bring_a_fresh_database_to_the_models_schema(db_url: str) -> None:
    engine = engine_for(db_url)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert context.get_current_revision() == _head()
        assert compare_metadata(context, SQLModel.metadata) == []
    tables = set(inspect(engine).get_table_names())
    assert set(SQLModel.metadata.tables) <= tables and "alembic_version" in tables


def test_migrations_go_down_and_up_again(db_url: str) -> None:
    engine = make_engine(db_url)
    migrate(engine)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "base")
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    migrate(engine)
    migrate(engine)  # a second upgrade is a no-op
    assert set(SQLModel.metadata.tables) <= set(inspect(engine).get_table_names())
