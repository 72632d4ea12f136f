"""SQLModel tables. Amounts are ``Wei`` columns (exact ints); ids are lower-case hex.

Model families follow the FastAPI template: only ``*Public`` types (in ``api``) cross the API.
"""

from __future__ import annotations

import time
from enum import StrEnum

from sqlalchemy import BigInteger, Column, Index, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from ledger.db import Wei


def now_s() -> int:
    return int(time.time())


class AccountKind(StrEnum):
    SYSTEM = "system"  # may go negative: vault (source of deposits), escrow, treasury
    CLIENT = "client"
    CONTRIBUTOR = "contributor"


class Account(SQLModel, table=True):
    id: str = Field(primary_key=True, max_length=80)
    kind: str = Field(max_length=16)
    balance_wei: int = Field(default=0, sa_column=Column(Wei(), nullable=False, default=0))


class Transfer(SQLModel, table=True):
    """Immutable; ``id`` is chosen by the caller and is the idempotency key."""

    id: str = Field(primary_key=True, max_length=160)
    # not indexed: nothing reads transfers by account, and each index costs every insert
    debit_account_id: str = Field(max_length=80)
    credit_account_id: str = Field(max_length=80)
    amount_wei: int = Field(sa_column=Column(Wei(), nullable=False))
    kind: str = Field(max_length=16)
    job_id: str | None = Field(default=None, max_length=66, index=True)
    created_at: int = Field(default_factory=now_s)


class JobStatus(StrEnum):
    PENDING = "pending"  # replicas assigned, waiting for submissions
    SUBMITTED = "submitted"  # every replica answered: ready to reconcile
    ACCEPTED = "accepted"
    FAILED = "failed"


class Job(SQLModel, table=True):
    __table_args__ = (
        # the work queues: undecided jobs of a status, oldest first (reconcile, sweep)
        Index("ix_job_status_created", "status", "created_at"),
        # a client's jobs, newest first; an epoch's jobs, counted by status (explorer)
        Index("ix_job_client_created", "client", "created_at"),
        Index("ix_job_epoch_status", "epoch", "status"),
    )

    id: str = Field(primary_key=True, max_length=66)
    client: str = Field(max_length=42)
    model_hash: str = Field(max_length=66)
    input_hash: str = Field(max_length=66)
    rows: int
    price_wei: int = Field(sa_column=Column(Wei(), nullable=False))
    voucher_cumulative_wei: int = Field(sa_column=Column(Wei(), nullable=False))
    voucher_expiry: int
    voucher_signature: str = Field(max_length=132)
    inputs_json: str = Field(sa_column=Column(Text, nullable=False))
    status: str = Field(default=JobStatus.PENDING, max_length=16)
    replicas_wanted: int
    result_hash: str | None = Field(default=None, max_length=66)
    fingerprint: str | None = Field(default=None, max_length=66)
    outputs_json: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    failure: str | None = Field(default=None, max_length=64)
    epoch: int | None = Field(default=None)
    created_at: int = Field(default_factory=now_s)
    decided_at: int | None = None


class AssignmentStatus(StrEnum):
    ASSIGNED = "assigned"
    SUBMITTED = "submitted"
    EXPIRED = "expired"  # the deadline passed unanswered: a liveness fault, replaced


class Assignment(SQLModel, table=True):
    __table_args__ = (
        UniqueConstraint("job_id", "worker", name="uq_assignment_job_worker"),
        UniqueConstraint("job_id", "contributor", name="uq_assignment_job_contributor"),
        Index("ix_assignment_worker_status", "worker", "status"),
    )

    id: int | None = Field(default=None, primary_key=True)
    job_id: str = Field(max_length=66, index=True)
    worker: str = Field(max_length=42)
    contributor: str = Field(max_length=42)
    status: str = Field(default=AssignmentStatus.ASSIGNED, max_length=16)
    deadline: int
    delivered_at: int | None = None
    result_hash: str | None = Field(default=None, max_length=66)
    fingerprint: str | None = Field(default=None, max_length=66)
    fingerprint_json: str | None = Field(default=None, max_length=512)
    signature: str | None = Field(default=None, max_length=132)
    outputs_json: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    submitted_at: int | None = None


class Worker(SQLModel, table=True):
    address: str = Field(primary_key=True, max_length=42)
    contributor: str = Field(max_length=42, index=True)
    eligible: bool = True
    checked_at: float = 0.0
    last_seen: float = 0.0
    safety_faults: int = 0  # results that disagreed with consensus in their class
    liveness_faults: int = 0  # assignments left unanswered past their deadline


class WorkerTrust(SQLModel, table=True):
    """Adaptive replication's record of a worker (``scheduler.adaptive``): the replicated jobs
    in a row where its vote agreed with another contributor's worker; a safety fault sets it
    to 0. A table of its own, written only by decisions: a decision that wrote the worker's
    row would wait (PostgreSQL) for a request holding that row, while the request waited for
    the decision's account locks."""

    address: str = Field(primary_key=True, max_length=42)
    agreed_streak: int = 0


class AuthChallenge(SQLModel, table=True):
    nonce: str = Field(primary_key=True, max_length=64)
    address: str = Field(max_length=42)
    message: str = Field(max_length=1024)
    expires_at: int
    used: bool = False


class AuthToken(SQLModel, table=True):
    token_hash: str = Field(primary_key=True, max_length=64)
    address: str = Field(max_length=42, index=True)
    role: str = Field(max_length=16)
    expires_at: int


class EpochStatus(StrEnum):
    BUILDING = "building"  # jobs assigned, file written, chain not yet confirmed
    POSTED = "posted"


class Epoch(SQLModel, table=True):
    number: int = Field(primary_key=True)
    status: str = Field(default=EpochStatus.BUILDING, max_length=16)
    closed_at: int = Field(default_factory=now_s)
    root: str | None = Field(default=None, max_length=66)
    file_hash: str | None = Field(default=None, max_length=66)
    cumulative_payout_wei: int = Field(
        default=0, sa_column=Column(Wei(), nullable=False, default=0)
    )
    cumulative_fees_wei: int = Field(default=0, sa_column=Column(Wei(), nullable=False, default=0))
    jobs: int = 0
    post_tx: str | None = Field(default=None, max_length=66)
    gas_used: int = 0
    posted_at: int | None = None


class Client(SQLModel, table=True):
    """A paying client: what the journal has seen of its deposits and its highest voucher."""

    address: str = Field(primary_key=True, max_length=42)
    deposited_wei: int = Field(default=0, sa_column=Column(Wei(), nullable=False, default=0))
    max_voucher_wei: int = Field(default=0, sa_column=Column(Wei(), nullable=False, default=0))


class SlashStatus(StrEnum):
    SUBMITTED = "submitted"
    REFUSED = "refused"  # the contract refused the evidence: recorded, never retried blindly


class Slash(SQLModel, table=True):
    """A wrong result proven on chain: the worker's own attestation against a finalized
    consensus in the same fingerprint class. One per (worker, job)."""

    id: str = Field(primary_key=True, max_length=120)  # "<worker>:<job id>"
    worker: str = Field(max_length=42, index=True)
    contributor: str = Field(max_length=42, index=True)
    job_id: str = Field(max_length=66)
    epoch: int = Field(index=True)
    status: str = Field(max_length=16)
    tx: str | None = Field(default=None, max_length=66)
    detail: str | None = Field(default=None, max_length=256)
    created_at: int = Field(default_factory=now_s)


class ChainEvent(SQLModel, table=True):
    """One log of the vault, registry or settlement, as ``ledger.chain.index`` read it.

    ``id`` is "<block hash>:<log index>"; (block_number, log_index) is unique because the
    index deletes what a reorganisation replaced before it stores the new chain's events.
    ``subject`` is the first indexed argument (the client of a deposit, the contributor of
    a stake, the epoch of a posting...), normalised as in ``args_json``: addresses and bytes
    lower-case hex, integers decimal strings."""

    __table_args__ = (
        UniqueConstraint("block_number", "log_index", name="uq_chainevent_block_log"),
        Index("ix_chainevent_contract_event_subject", "contract", "event", "subject"),
    )

    id: str = Field(primary_key=True, max_length=80)
    contract: str = Field(max_length=32)
    event: str = Field(max_length=64)
    subject: str | None = Field(default=None, max_length=80)
    block_number: int = Field(sa_column=Column(BigInteger, nullable=False, index=True))
    block_hash: str = Field(max_length=66)
    tx_hash: str = Field(max_length=66)
    log_index: int
    args_json: str = Field(sa_column=Column(Text, nullable=False))
    confirmed: bool = Field(default=False, index=True)


class ChainCursor(SQLModel, table=True):
    """How far an index has read the chain: the last block scanned and its hash."""

    name: str = Field(primary_key=True, max_length=32)
    last_block_scanned: int = Field(sa_column=Column(BigInteger, nullable=False))
    last_block_hash: str = Field(max_length=66)


class IndexedBlock(SQLModel, table=True):
    """Hashes of recently scanned blocks (each batch's last block and every block holding
    an event), kept ``index_reorg_depth_max`` deep: where a reorganisation is found, the
    index walks back over them to the newest block the chain still has."""

    number: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    hash: str = Field(max_length=66)
