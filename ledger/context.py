"""Everything a unit of work needs, built once per process: settings, database engine, the
model manifests, the deployment, the chain client, the chain index with its bounded
catch-up, and the registry's immutable minimum stake."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

from sqlalchemy import Engine

from ledger.chain.catchup import CatchUp
from ledger.chain.client import ChainClient, connect
from ledger.chain.index import ChainIndex
from ledger.config import Settings
from ledger.db import engine_for
from ledger.ratelimit import RateLimiter
from protocol.contracts import Deployment
from protocol.manifest import Manifest, load_models

if TYPE_CHECKING:
    from ledger.ingest import Ingest


@dataclass
class Context:
    settings: Settings

    @cached_property
    def engine(self) -> Engine:
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        return engine_for(self.settings.db_url)

    @cached_property
    def models(self) -> dict[str, Manifest]:
        return load_models(self.settings.models_dir)

    @cached_property
    def deployment(self) -> Deployment:
        return Deployment.load(self.settings.deployment_path)

    @cached_property
    def chain(self) -> ChainClient:
        key = self.settings.settler_key.get_secret_value() if self.settings.settler_key else None
        return ChainClient(
            connect(self.settings.rpc_url, self.settings.chain_timeout_s),
            self.deployment,
            self.settings.artifacts_dir,
            key,
            self.settings.chain_timeout_s,
            self.settings.receipt_timeout_s,
            self.settings.max_replacements,
        )

    @cached_property
    def index(self) -> ChainIndex:
        return ChainIndex.from_context(self)

    @cached_property
    def catch_up(self) -> CatchUp:
        """Brings the index up to the chain on a request's path, within limits."""
        return CatchUp(self.index)

    @cached_property
    def min_stake_wei(self) -> int:
        """``StakeRegistry.minStake``: immutable, so read from the chain once per process."""
        return int(self.chain.call(self.chain.registry.functions.minStake(), "minStake"))

    @cached_property
    def ingest(self) -> Ingest:
        """This process's group commit of paid jobs (``ledger.ingest``), started on first use."""
        from ledger.ingest import Ingest

        return Ingest(self)

    @cached_property
    def worker_limits(self) -> RateLimiter:
        """Requests per worker key (``ledger.ratelimit``), in this process."""
        return self._limiter()

    @cached_property
    def client_limits(self) -> RateLimiter:
        """Paid job submissions per client address (``ledger.ratelimit``), in this process."""
        return self._limiter()

    def _limiter(self) -> RateLimiter:
        s = self.settings
        return RateLimiter(s.rate_limit_per_s, s.rate_limit_burst, s.rate_limit_keys_max)
