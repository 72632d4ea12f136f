"""adaptive replication: each worker's run of agreed replicated jobs

``worker.agreed_streak`` counts the replicated jobs in a row where the worker's vote agreed
with another contributor's; a safety fault sets it to 0. Admission lets a worker whose streak
reaches ``trust_after`` run a job alone unless the job is drawn for a spot check
(``ledger.scheduler.adaptive``). Existing workers start at 0: trust is earned again.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 19:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("worker") as batch:
        batch.add_column(
            sa.Column("agreed_streak", sa.Integer(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("worker") as batch:
        batch.drop_column("agreed_streak")
