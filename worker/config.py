"""Worker settings: from flags, then ``INFERLEDGER_WORKER_*`` environment variables, then a
TOML file (``--config`` or ``INFERLEDGER_WORKER_CONFIG``), then the defaults; the first that
gives a setting wins.

The file holds the settings by name at its top level (``threads = 2``; a dash works as well
as an underscore); relative paths in it are relative to the file. A name that is not a
setting, or a value of the wrong type or out of range, is refused with the file's path and
the setting's name, before anything runs.
"""

from __future__ import annotations

import difflib
import logging
import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from worker.errors import ConfigError

logger = logging.getLogger(__name__)

ENV_PREFIX = "INFERLEDGER_WORKER_"
DEFAULT_MODELS_DIR = Path(__file__).resolve().parents[1] / "models"
CONFIG_FILE_MAX_BYTES = 64 * 1024

OptLevel = Literal["all", "disabled"]
Mode = Literal["dev", "prod"]
Auto = Literal["auto"]


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask, which containers narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


class WorkerSettings(BaseSettings):
    """Everything the worker can be told; every limit it enforces is one of these."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    config: Path | None = Field(None, description="a TOML file of these settings")
    api_url: str = Field("http://127.0.0.1:8000", description="base URL of the inferledger API")
    key_file: Path = Field(description="the worker's key file (see `inferledger worker init`)")
    password_env: str | None = Field(
        None, description="name of the environment variable holding the keystore's password"
    )
    models_dir: Path = Field(DEFAULT_MODELS_DIR, description="dir of <model>/manifest.json")
    workers: int | Auto = Field(
        "auto", description="inference processes; auto: one per usable CPU / threads"
    )
    threads: int = Field(1, ge=1, le=256, description="onnxruntime intra-op threads per process")
    opt_level: OptLevel = Field("all", description="onnxruntime graph optimisation level")
    pull_batch: int = Field(16, ge=1, le=1024, description="most new assignments per pull")
    max_held: int | Auto = Field(
        "auto", description="most assignments held at once; auto: max(2 x pull_batch, 4 x workers)"
    )
    submit_batch: int = Field(32, ge=1, le=1024, description="most results per submission")
    submit_max_bytes: int = Field(
        524_288,
        ge=4096,
        description="largest submission body; keep it below the API's request body limit",
    )
    submit_linger_s: float = Field(
        0.1, ge=0, description="how long a finished result waits for others to share its POST"
    )
    heartbeat_interval_s: float = Field(10.0, gt=0, description="period of heartbeats")
    earnings_interval_s: float = Field(
        60.0, ge=0, description="period of the earnings check (0: never)"
    )
    long_poll_s: float = Field(
        2.0,
        ge=0,
        le=60,
        description="an idle pull waits this long for work at the API (0: sleep between pulls)",
    )
    poll_interval_s: float = Field(0.05, gt=0, description="first idle sleep between pulls")
    max_idle_sleep_s: float = Field(0.25, gt=0, description="idle sleep grows up to this")
    backoff_initial_s: float = Field(0.1, gt=0, description="first retry delay after a failure")
    max_backoff_s: float = Field(5.0, gt=0, description="retry delays grow up to this")
    request_timeout_s: float = Field(10.0, gt=0, description="timeout of one HTTP request")
    token_refresh_margin_s: float = Field(30.0, ge=0, description="sign in again this early")
    shutdown_grace_s: float = Field(
        15.0, ge=0, description="on stop, time to finish running jobs and submit or hand back"
    )
    max_tensor_bytes: int = Field(1 << 20, ge=1, description="largest input tensor accepted")
    max_inputs_per_job: int = Field(16, ge=1, description="most named input tensors in a job")
    stats_interval_s: float = Field(10.0, gt=0, description="period of the stats log line")
    name: str = Field("", max_length=64, description="a label for this worker in logs")
    json_logs: bool = Field(False, description="one JSON object per log line on stderr")
    mode: Mode = Field("dev", description="prod refuses plaintext dev key files")

    @model_validator(mode="after")
    def _check_ranges(self) -> WorkerSettings:
        if self.max_backoff_s < self.backoff_initial_s:
            raise ValueError("max_backoff_s must be at least backoff_initial_s")
        if self.max_idle_sleep_s < self.poll_interval_s:
            raise ValueError("max_idle_sleep_s must be at least poll_interval_s")
        if self.workers != "auto" and not 1 <= self.workers <= 1024:
            raise ValueError("workers must be auto or from 1 to 1024")
        if self.max_held != "auto" and not 1 <= self.max_held <= 4096:
            raise ValueError("max_held must be auto or from 1 to 4096")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, ConfigFileSource(settings_cls)

    def pool_size(self) -> int:
        """Inference processes to run: ``workers``, or one per usable CPU over ``threads``."""
        if self.workers == "auto":
            return max(1, usable_cpus() // self.threads)
        return self.workers

    def held_limit(self) -> int:
        """Most assignments held at once (queued, running or waiting to be submitted)."""
        if self.max_held == "auto":
            return max(2 * self.pull_batch, 4 * self.pool_size())
        return self.max_held


SETTING_NAMES = frozenset(WorkerSettings.model_fields) - {"config"}
PATH_SETTINGS = frozenset({"key_file", "models_dir"})


class ConfigFileSource(PydanticBaseSettingsSource):
    """The settings of the TOML file named by a flag or the environment (``config``)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # __call__ reads the whole file at once

    def __call__(self) -> dict[str, Any]:
        path = self.current_state.get("config")
        return read_config_file(Path(path)) if path else {}


def read_config_file(path: Path) -> dict[str, Any]:
    """The settings in a TOML file, by their field names; a ``ConfigError`` for anything that
    is not a setting (with the closest name), a file that cannot be read, or bad TOML."""
    try:
        if path.stat().st_size > CONFIG_FILE_MAX_BYTES:
            raise ConfigError(path, f"is over {CONFIG_FILE_MAX_BYTES} bytes")
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(path, "not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(path, f"cannot be read: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, f"is not valid TOML: {exc}") from None
    values: dict[str, Any] = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        if name not in SETTING_NAMES:
            close = difflib.get_close_matches(name, SETTING_NAMES, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(path, f"{key!r} is not a setting{hint}")
        if name in values:
            raise ConfigError(path, f"{name!r} is given twice")
        if name in PATH_SETTINGS and isinstance(value, str):
            value = str(path.parent / Path(value).expanduser())  # relative to the file
        values[name] = value
    return values


def load_settings(flags: dict[str, Any]) -> WorkerSettings:
    """Settings from ``flags`` (None: not given), the environment, the config file and the
    defaults; a ``ConfigError`` naming each bad setting and where its value came from."""
    given = {name: value for name, value in flags.items() if value is not None}
    try:
        return WorkerSettings(**given)
    except ValidationError as exc:
        missing: list[str] = []
        bad: dict[str, list[str]] = {}  # each member of a union adds an error
        general: list[str] = []  # the checks across settings
        for err in exc.errors():
            name = str(err["loc"][0]) if err["loc"] else ""
            message = str(err["msg"]).removeprefix("Value error, ")
            if err["type"] == "missing":
                missing.append(name)
            elif name:
                bad.setdefault(name, []).append(message)
            else:
                general.append(message)
        problems = [
            f"{name} is required: --{name.replace('_', '-')}, {ENV_PREFIX}{name.upper()} "
            "or the config file"
            for name in missing
        ]
        problems += [f"{n}: {' or '.join(m)} (from {_origin(n, given)})" for n, m in bad.items()]
        raise ConfigError(None, "invalid settings: " + "; ".join(problems + general)) from None


def _origin(name: str, given: dict[str, Any]) -> str:
    """Where the value of setting ``name`` came from: a flag, a variable, the file, or none."""
    if name in given:
        return "--" + name.replace("_", "-")
    variable = ENV_PREFIX + name.upper()
    if os.environ.get(variable) is not None:
        return variable
    path = given.get("config") or os.environ.get(ENV_PREFIX + "CONFIG")
    if path and name in read_config_file(Path(path)):
        return str(path)
    return "the default"
