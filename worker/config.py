"""Worker settings, read from ``INFERLEDGER_WORKER_*`` environment variables and CLI flags."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

logger = logging.getLogger(__name__)

DEFAULT_MODELS_DIR = Path(__file__).resolve().parents[1] / "models"

OptLevel = Literal["all", "disabled"]
Mode = Literal["dev", "prod"]


class WorkerSettings(BaseSettings):
    """Everything the worker can be told; every limit it enforces is one of these."""

    model_config = SettingsConfigDict(env_prefix="INFERLEDGER_WORKER_", extra="ignore")

    api_url: str = Field("http://127.0.0.1:8000", description="base URL of the inferledger API")
    key_file: Path = Field(description="the worker's key file (see `inferledger worker init`)")
    models_dir: Path = Field(DEFAULT_MODELS_DIR, description="dir of <model>/manifest.json")
    pull_batch: int = Field(16, ge=1, le=1024, description="most assignments pulled at once")
    poll_interval_s: float = Field(0.05, gt=0, description="first idle sleep between pulls")
    max_idle_sleep_s: float = Field(0.25, gt=0, description="idle sleep grows up to this")
    backoff_initial_s: float = Field(0.1, gt=0, description="first retry delay after a failure")
    max_backoff_s: float = Field(5.0, gt=0, description="retry delays grow up to this")
    request_timeout_s: float = Field(10.0, gt=0, description="timeout of one HTTP request")
    token_refresh_margin_s: float = Field(30.0, ge=0, description="sign in again this early")
    shutdown_grace_s: float = Field(15.0, ge=0, description="time to submit held results on stop")
    max_tensor_bytes: int = Field(1 << 20, ge=1, description="largest input tensor accepted")
    max_inputs_per_job: int = Field(16, ge=1, description="most named input tensors in a job")
    stats_interval_s: float = Field(10.0, gt=0, description="period of the stats log line")
    opt_level: OptLevel = Field("all", description="onnxruntime graph optimisation level")
    threads: int = Field(1, ge=1, le=256, description="onnxruntime intra-op threads")
    name: str = Field("", max_length=64, description="a label for this worker in logs")
    json_logs: bool = Field(False, description="one JSON object per log line on stderr")
    mode: Mode = Field("dev", description="prod refuses plaintext dev key files")

    @model_validator(mode="after")
    def _check_ranges(self) -> WorkerSettings:
        if self.max_backoff_s < self.backoff_initial_s:
            raise ValueError("max_backoff_s must be at least backoff_initial_s")
        if self.max_idle_sleep_s < self.poll_interval_s:
            raise ValueError("max_idle_sleep_s must be at least poll_interval_s")
        return self
