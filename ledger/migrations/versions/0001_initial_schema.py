"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-23 16:06:36.566351
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import ledger.db

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "account",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=80), nullable=False),
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("balance_wei", ledger.db.Wei(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "assignment",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sqlmodel.sql.sqltypes.AutoString(length=66), nullable=False),
        sa.Column("worker", sqlmodel.sql.sqltypes.AutoString(length=42), nullable=False),
        sa.Column("contributor", sqlmodel.sql.sqltypes.AutoString(length=42), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("deadline", sa.Integer(), nullable=False),
        sa.Column("delivered_at", sa.Integer(), nullable=True),
        sa.Column("result_hash", sqlmodel.sql.sqltypes.AutoString(length=66), nullable=True),
        sa.Column("fingerprint", sqlmodel.sql.sqltypes.AutoString(length=66), nullable=True),
        sa.Column("fingerprint_json", sqlmodel.sql.sqltypes.AutoString(length=512), nullable=True),
        sa.Column("signature", sqlmodel.sql.sqltypes.AutoString(length=132), nullable=True),
        sa.Column("outputs_json", sa.Text(), nullable=True),
        sa.Column("submitted_at", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("job_id", "contributor", name="uq_assignment_job_contributor"),
        sa.UniqueConstraint("job_id", "worker", name="uq_assignment_job_worker"),
    )
    with op.batch_alter_table("assignment", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_assignment_job_id"), ["job_id"], unique=False)
        batch_op.create_index("ix_assignment_worker_status", ["worker", "status"], unique=False)

    op.create_table(
        "authchallenge",
        sa.Column("nonce", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("address", sqlmodel.sql.sqltypes.AutoString(length=42), nullable=False),
        sa.Column("message", sqlmodel.sql.sqltypes.AutoString(length=1024), nullable=False),
        sa.Column("expires_at", sa.Integer(), nullable=False),
        sa.Column("used", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("nonce"),
    )
    op.create_table(
        "authtoken",
        sa.Column("token_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("address", sqlmodel.sql.sqltypes.AutoString(length=42), nullable=False),
        sa.Column("role", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("expires_at", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("token_hash"),
    )
    with op.batch_alter_table("authtoken", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_authtoken_address"), ["address"], unique=False)

    op.create_table(
        "client",
        sa.Column("address", sqlmodel.sql.sqltypes.AutoString(length=42), nullable=False),
        sa.Column("deposited_wei", ledger.db.Wei(), nullable=False),
        sa.Column("max_voucher_wei", ledger.db.Wei(), nullable=False),
        sa.PrimaryKeyConstraint("address"),
    )
    op.create_table(
        "epoch",
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("closed_at", sa.Integer(), nullable=False),
        sa.Column("root", sqlmodel.sql.sqltypes.AutoString(length=66), nullable=True),
        sa.Column("file_hash", sqlmodel.sql.sqltypes.AutoString(length=66), nullable=True),
        sa.Column("cumulative_payout_wei", ledger.db.Wei(), nullable=False),
        sa.Column("cumulative_fees_wei", ledger.db.Wei(), nullable=False),
        sa.Column("jobs", sa.Integer(), nullable=False),
        sa.Column("post_tx", sqlmodel.sql.sqltypes.AutoString(length=66), nullable=True),
        sa.Column("gas_used", sa.Integer(), nullable=False),
        sa.Column("posted_at", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("number"),
    )
    op.create_table(
        "job",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=66), nullable=False),
        sa.Column("client", sqlmodel.sql.sqltypes.AutoString(length=42), nullable=False),
        sa.Column("model_hash", sqlmodel.sql.sqltypes.AutoString(length=66), nullable=False),
        sa.Column("input_hash", sqlmodel.sql.sqltypes.AutoString(length=66), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("price_wei", ledger.db.Wei(), nullable=False),
        sa.Column("voucher_cumulative_wei", ledger.db.Wei(), nullable=False),
        sa.Column("voucher_expiry", sa.Integer(), nullable=False),
        sa.Column(
            "voucher_signature", sqlmodel.sql.sqltypes.AutoString(length=132), nullable=False
        ),
        sa.Column("inputs_json", sa.Text(), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("replicas_wanted", sa.Integer(), nullable=False),
        sa.Column("result_hash", sqlmodel.sql.sqltypes.AutoString(length=66), nullable=True),
        sa.Column("fingerprint", sqlmodel.sql.sqltypes.AutoString(length=66), nullable=True),
        sa.Column("outputs_json", sa.Text(), nullable=True),
        sa.Column("failure", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("epoch", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.Integer(), nullable=False),
        sa.Column("decided_at", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_job_client"), ["client"], unique=False)
        batch_op.create_index(batch_op.f("ix_job_epoch"), ["epoch"], unique=False)
        batch_op.create_index(batch_op.f("ix_job_status"), ["status"], unique=False)

    op.create_table(
        "slash",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=120), nullable=False),
        sa.Column("worker", sqlmodel.sql.sqltypes.AutoString(length=42), nullable=False),
        sa.Column("contributor", sqlmodel.sql.sqltypes.AutoString(length=42), nullable=False),
        sa.Column("job_id", sqlmodel.sql.sqltypes.AutoString(length=66), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("tx", sqlmodel.sql.sqltypes.AutoString(length=66), nullable=True),
        sa.Column("detail", sqlmodel.sql.sqltypes.AutoString(length=256), nullable=True),
        sa.Column("created_at", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("slash", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_slash_epoch"), ["epoch"], unique=False)
        batch_op.create_index(batch_op.f("ix_slash_worker"), ["worker"], unique=False)

    op.create_table(
        "transfer",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=160), nullable=False),
        sa.Column("debit_account_id", sqlmodel.sql.sqltypes.AutoString(length=80), nullable=False),
        sa.Column("credit_account_id", sqlmodel.sql.sqltypes.AutoString(length=80), nullable=False),
        sa.Column("amount_wei", ledger.db.Wei(), nullable=False),
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("job_id", sqlmodel.sql.sqltypes.AutoString(length=66), nullable=True),
        sa.Column("created_at", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("transfer", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_transfer_credit_account_id"), ["credit_account_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_transfer_debit_account_id"), ["debit_account_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_transfer_job_id"), ["job_id"], unique=False)

    op.create_table(
        "worker",
        sa.Column("address", sqlmodel.sql.sqltypes.AutoString(length=42), nullable=False),
        sa.Column("contributor", sqlmodel.sql.sqltypes.AutoString(length=42), nullable=False),
        sa.Column("eligible", sa.Boolean(), nullable=False),
        sa.Column("checked_at", sa.Float(), nullable=False),
        sa.Column("last_seen", sa.Float(), nullable=False),
        sa.Column("safety_faults", sa.Integer(), nullable=False),
        sa.Column("liveness_faults", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("address"),
    )
    with op.batch_alter_table("worker", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_worker_contributor"), ["contributor"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("worker", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_worker_contributor"))

    op.drop_table("worker")
    with op.batch_alter_table("transfer", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_transfer_job_id"))
        batch_op.drop_index(batch_op.f("ix_transfer_debit_account_id"))
        batch_op.drop_index(batch_op.f("ix_transfer_credit_account_id"))

    op.drop_table("transfer")
    with op.batch_alter_table("slash", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_slash_worker"))
        batch_op.drop_index(batch_op.f("ix_slash_epoch"))

    op.drop_table("slash")
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_job_status"))
        batch_op.drop_index(batch_op.f("ix_job_epoch"))
        batch_op.drop_index(batch_op.f("ix_job_client"))

    op.drop_table("job")
    op.drop_table("epoch")
    op.drop_table("client")
    with op.batch_alter_table("authtoken", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_authtoken_address"))

    op.drop_table("authtoken")
    op.drop_table("authchallenge")
    with op.batch_alter_table("assignment", schema=None) as batch_op:
        batch_op.drop_index("ix_assignment_worker_status")
        batch_op.drop_index(batch_op.f("ix_assignment_job_id"))

    op.drop_table("assignment")
    op.drop_table("account")
