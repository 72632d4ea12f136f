"""explorer indexes: a client's jobs newest first, an epoch's jobs by status, slashes by
contributor

The explorer lists a client's newest jobs (``WHERE client = ? ORDER BY created_at DESC``)
and counts each epoch's jobs by status; the composite indexes answer both without a sort or
a visit to the table, and serve every lookup the single-column indexes they replace did, so
inserting a job maintains as many indexes as before. A contributor's slashes were a scan of
the slash table.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 10:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_job_client_created", "job", ["client", "created_at"], unique=False)
    op.drop_index(op.f("ix_job_client"), table_name="job")
    op.create_index("ix_job_epoch_status", "job", ["epoch", "status"], unique=False)
    op.drop_index(op.f("ix_job_epoch"), table_name="job")
    op.create_index(op.f("ix_slash_contributor"), "slash", ["contributor"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_slash_contributor"), table_name="slash")
    op.create_index(op.f("ix_job_epoch"), "job", ["epoch"], unique=False)
    op.drop_index("ix_job_epoch_status", table_name="job")
    op.create_index(op.f("ix_job_client"), "job", ["client"], unique=False)
    op.drop_index("ix_job_client_created", table_name="job")
