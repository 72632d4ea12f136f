"""Settings of the ledger and API services (environment prefix ``INFERLEDGER_``).

Every limit the services enforce is a named setting here. Secrets have no default; the
well-known Hardhat development keys are refused unless ``mode`` is ``dev``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[1]
DEV_MNEMONIC = "test test test test test test test test test test test junk"


@lru_cache(maxsize=1)
def hardhat_dev_keys(count: int = 20) -> frozenset[str]:
    """The private keys of Hardhat's well-known development accounts (lower-case hex)."""
    from eth_account import Account

    Account.enable_unaudited_hdwallet_features()
    return frozenset(
        Account.from_mnemonic(DEV_MNEMONIC, account_path=f"m/44'/60'/0'/0/{i}").key.hex().lower()
        for i in range(count)
    )


def is_dev_key(key_hex: str) -> bool:
    normalized = key_hex.lower().removeprefix("0x")
    return any(k.removeprefix("0x") == normalized for k in hardhat_dev_keys())


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="INFERLEDGER_", extra="ignore", populate_by_name=True
    )

    mode: Literal["dev", "prod"] = "dev"
    data_dir: Path = REPO_ROOT / ".inferledger" / "data"
    database_url: str = Field(  # empty: a SQLite file in data_dir
        "", validation_alias=AliasChoices("INFERLEDGER_DATABASE_URL", "DATABASE_URL")
    )
    rpc_url: str = "http://127.0.0.1:8545"
    deployment_file: Path | None = None  # default: data_dir / "deployment.json"
    artifacts_dir: Path = REPO_ROOT / "artifacts"
    models_dir: Path = REPO_ROOT / "models"
    settler_key: SecretStr | None = None
    redis_url: str = "redis://127.0.0.1:6379/0"
    celery_queue: str = "inferledger"
    api_domain: str = "inferledger.local"

    replicas: int = Field(2, ge=1, le=8)
    max_replicas: int = Field(3, ge=1, le=15)
    # adaptive replication (docs/architecture.md): a worker whose last ``trust_after``
    # replicated jobs all agreed with another contributor's runs a job alone, unless the job
    # is drawn for a spot check (``spot_check_bps`` of them, in basis points); 0: off.
    # spot_check_bps 0 (trust never checked again) is for tests: refused outside dev mode
    trust_after: int = Field(0, ge=0, le=1_000_000)
    spot_check_bps: int = Field(1_000, ge=0, le=10_000)
    fee_bps: int = Field(1000, ge=0, le=9_999)  # contributors must be able to earn a leaf
    epoch_interval_s: float = Field(30.0, gt=0)
    reconcile_interval_s: float = Field(2.0, gt=0)
    reconcile_batch_size: int = Field(2_000, ge=1, le=10_000)
    # a submission that makes at most this many jobs ready decides them itself (0: never;
    # all go to the Celery reconciler); more go to the reconciler, which batches them
    reconcile_inline_max: int = Field(8, ge=0, le=10_000)
    # paid jobs admitted per unit of work (group commit); 1: one commit per request
    ingest_batch_max: int = Field(256, ge=1, le=10_000)
    ingest_linger_s: float = Field(0.02, ge=0, le=1)  # under load, wait this long for more
    ingest_timeout_s: float = Field(30.0, gt=0)  # a request's wait for its batch to commit
    assignment_deadline_s: int = Field(120, ge=1)
    job_timeout_s: int = Field(900, ge=1)  # undecided this long: fails, the client pays nothing
    sweep_batch_size: int = Field(500, ge=1, le=10_000)
    sweep_interval_s: float = Field(5.0, gt=0)
    worker_seen_s: float = Field(30.0, gt=0)
    worker_max_in_flight: int = Field(64, ge=1, le=10_000)
    max_body_bytes: int = Field(1_048_576, ge=1024)
    # per key (a worker's address, a paying client's), in each API process (ledger.ratelimit)
    rate_limit_per_s: float = Field(200.0, gt=0)
    rate_limit_burst: int = Field(1_000, ge=1)
    rate_limit_keys_max: int = Field(100_000, ge=1)  # buckets held; then the full ones go
    max_tensor_bytes: int = Field(262_144, ge=64)
    pull_batch_max: int = Field(64, ge=1, le=1024)
    submit_batch_max: int = Field(64, ge=1, le=1024)
    voucher_min_ttl_s: int = Field(3600, ge=0)
    redeem_batch_size: int = Field(64, ge=1, le=64)
    slash_batch_max: int = Field(32, ge=1, le=1000)
    auth_challenge_ttl_s: int = Field(300, ge=10)
    auth_token_ttl_s: int = Field(3600, ge=60)
    wait_max_s: float = Field(30.0, ge=0)
    chain_timeout_s: float = Field(60.0, gt=0)
    receipt_timeout_s: float = Field(30.0, gt=0)  # then the transaction is replaced
    max_replacements: int = Field(3, ge=0, le=10)
    # the settler's Redis lock: must outlast the task holding it (its hard time limit)
    epoch_lock_timeout_s: int = Field(960, ge=10)
    index_confirmations: int = Field(2, ge=0, le=1_000)  # blocks on top: an event is confirmed
    index_batch_blocks: int = Field(2_000, ge=1, le=100_000)  # blocks per eth_getLogs call
    index_reorg_depth_max: int = Field(64, ge=1, le=10_000)  # deepest reorg the index undoes
    index_interval_s: float = Field(2.0, gt=0)
    # Celery on Redis (ledger.celery_app, ledger.parking): every task runs within its time
    # limits; a message unacked by a worker that died is handed out again after the
    # visibility timeout (so it must outlast the hard limit); workers look for such messages
    # every celery_restore_interval_s. A message delivered more than max_deliveries times
    # (its task keeps killing its worker) is parked instead of run.
    celery_task_soft_time_limit_s: int = Field(600, ge=1)
    celery_task_time_limit_s: int = Field(900, ge=1)
    celery_visibility_timeout_s: int = Field(3600, ge=1)
    celery_restore_interval_s: float = Field(10.0, gt=0)
    max_deliveries: int = Field(5, ge=1, le=100)
    delivery_count_ttl_s: int = Field(86_400, ge=60)  # a delivery count outlives redelivery
    parked_max: int = Field(10_000, ge=1, le=1_000_000)  # parked messages kept, newest first

    @model_validator(mode="after")
    def _refuse_dev_keys_outside_dev(self) -> Settings:
        if (
            self.settler_key is not None
            and self.mode != "dev"
            and is_dev_key(self.settler_key.get_secret_value())
        ):
            raise ValueError(
                "the settler key is a well-known Hardhat key; refused outside dev mode"
            )
        if self.max_replicas < self.replicas:
            raise ValueError("max_replicas must be >= replicas")
        if self.mode != "dev" and self.trust_after > 0 and self.spot_check_bps == 0:
            raise ValueError(
                "spot_check_bps 0 never checks a trusted worker again; refused outside dev mode"
            )
        return self

    @model_validator(mode="after")
    def _check_celery_limits(self) -> Settings:
        """A task still running when its message becomes visible again would run twice at
        once; a delivery count that expires between deliveries would never reach the limit."""
        if self.celery_task_soft_time_limit_s >= self.celery_task_time_limit_s:
            raise ValueError("celery_task_soft_time_limit_s must be < celery_task_time_limit_s")
        if self.celery_task_time_limit_s >= self.celery_visibility_timeout_s:
            raise ValueError("celery_visibility_timeout_s must be > celery_task_time_limit_s")
        if self.epoch_lock_timeout_s <= self.celery_task_time_limit_s:  # two settlers at once
            raise ValueError("epoch_lock_timeout_s must be > celery_task_time_limit_s")
        redelivered_within_s = self.celery_visibility_timeout_s + self.celery_restore_interval_s
        if self.delivery_count_ttl_s <= redelivered_within_s:
            raise ValueError(
                "delivery_count_ttl_s must be > celery_visibility_timeout_s + "
                "celery_restore_interval_s"
            )
        return self

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'ledger.db'}"

    @property
    def deployment_path(self) -> Path:
        return self.deployment_file or self.data_dir / "deployment.json"

    @property
    def epochs_dir(self) -> Path:
        return self.data_dir / "epochs"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
