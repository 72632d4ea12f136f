"""Everything a unit of work needs, built once per process: settings, database engine, the
model manifests, the deployment and the chain client."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from sqlalchemy import Engine

from ledger.chain.client import ChainClient, connect
from ledger.config import Settings
from ledger.db import engine_for
from protocol.contracts import Deployment
from protocol.manifest import Manifest, load_models


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
