"""adaptive replication: each worker's run of agreed replicated jobs

``workertrust.agreed_streak`` counts the replicated jobs in a row where the worker's vote
agreed with another contributor's; a safety fault sets it to 0. Admission lets a worker whose
streak reaches ``trust_after`` run a job alone unless the job is drawn for a spot check
(``ledger.scheduler.adaptive``). A table of its own, written only by decisions: on
PostgreSQL a decision that updated the worker's row would wait for a request holding that
row (a pull or a submission notes the worker's ``last_seen``) while the request waited for
the decision's account locks.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 19:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "workertrust",
        sa.Column("address", sqlmodel.sql.sqltypes.AutoString(length=42), nullable=False),
        sa.Column("agreed_streak", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("address"),
    )


def downgrade() -> None:
    op.drop_table("workertrust")
