"""hot path indexes: undecided jobs by (status, created_at); no per-account transfer indexes

Reconcile reads the oldest submitted jobs (``WHERE status = ? ORDER BY created_at LIMIT n``),
which the composite index answers without sorting; it also serves every status-only lookup,
so the old status index goes. Nothing reads transfers by debit or credit account, and each
index costs every insert on the journal's hottest table, so those two go.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 18:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_job_status_created", "job", ["status", "created_at"], unique=False)
    op.drop_index(op.f("ix_job_status"), table_name="job")
    op.drop_index(op.f("ix_transfer_debit_account_id"), table_name="transfer")
    op.drop_index(op.f("ix_transfer_credit_account_id"), table_name="transfer")


def downgrade() -> None:
    op.create_index(
        op.f("ix_transfer_credit_account_id"), "transfer", ["credit_account_id"], unique=False
    )
    op.create_index(
        op.f("ix_transfer_debit_account_id"), "transfer", ["debit_account_id"], unique=False
    )
    op.create_index(op.f("ix_job_status"), "job", ["status"], unique=False)
    op.drop_index("ix_job_status_created", table_name="job")
