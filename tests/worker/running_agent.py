"""An agent running in a thread of the test until ``stop()``."""

from __future__ import annotations

import threading

from eth_account.signers.local import LocalAccount

from worker.agent import Agent
from worker.api_client import ApiClient
from worker.config import WorkerSettings
from worker.inference import ModelStore
from worker.stats import Stats


class Running:
    def __init__(
        self,
        settings: WorkerSettings,
        account: LocalAccount,
        client: ApiClient | None = None,
        event: threading.Event | None = None,
    ) -> None:
        self.store = ModelStore(settings.models_dir)
        self.client = client or ApiClient(settings, account)
        self.agent = Agent(settings, account, self.store, self.client)
        self.event = event or threading.Event()
        self.result: Stats | BaseException | None = None
        self.thread = threading.Thread(target=self._main, daemon=True)
        self.thread.start()

    @property
    def stats(self) -> Stats:
        return self.agent.stats

    def _main(self) -> None:
        try:
            self.result = self.agent.run(self.event)
        except BaseException as exc:  # handed to the test thread
            self.result = exc

    def stop(self, timeout_s: float = 30.0) -> Stats:
        self.event.set()
        self.thread.join(timeout=timeout_s)
        assert not self.thread.is_alive(), "the agent did not stop"
        self.client.close()
        if isinstance(self.result, BaseException):
            raise self.result
        assert isinstance(self.result, Stats)
        return self.result
