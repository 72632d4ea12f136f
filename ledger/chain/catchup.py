"""A bounded catch-up of the chain index on a request's path.

The index is kept current by the Celery beat task ``index_chain`` (every
``index_interval_s``). A request that must see what happened on chain a moment ago (a
client that has just deposited, a device key that has just been registered) asks for a
catch-up here instead of asking the chain itself. The limits:

- one catch-up at a time per process (a lock): concurrent requests queue, they do not read
  the chain side by side;
- at most one per ``min_interval_s`` for each key (``"eligibility"``, ``"client:0x..."``,
  ``"worker:0x..."``): a client refused for want of a deposit cannot make the API read the
  chain more than once a second, whatever it sends. The keys kept are bounded (the least
  recently used go first);
- at most one per unit of work: what a unit of work serves (a request, a batch of them)
  arrived before it began, so one catch-up inside it serves every key it asks for;
- a catch-up runs inside the caller's unit of work (``ChainIndex.sync(session)``): SQLite
  has one writer and the caller already is it. If the caller rolls back (a refused
  payment), the catch-up rolls back with it, so the rules above count a catch-up only while
  its result is still visible: the cursor as the caller sees it is at least where the
  catch-up left it. Otherwise the next caller catches up again.

A catch-up that fails (the node unreachable, a reorganisation deeper than the index undoes)
is logged and the caller goes on with what the index holds: a stale index can refuse a
payment or leave a worker out, and never pays anyone.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from sqlmodel import Session
from web3.exceptions import Web3Exception

from ledger.chain.index import ChainIndex, ReorgTooDeep, SyncReport

logger = logging.getLogger(__name__)

MIN_INTERVAL_S = 1.0  # per key: the most often a request may make the index read the chain
KEYS_MAX = 10_000  # keys remembered; the least recently used are forgotten first
UNIT_MARK = "chain_index_caught_up"  # in Session.info: (its transaction, the cursor left)


@dataclass(frozen=True)
class _Done:
    started: float  # the clock when the catch-up began
    to_block: int  # the cursor it left


class CatchUp:
    """The catch-up of one process (``Context.catch_up``); see the module's documentation."""

    def __init__(
        self,
        index: ChainIndex,
        min_interval_s: float = MIN_INTERVAL_S,
        keys_max: int = KEYS_MAX,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if min_interval_s < 0 or keys_max < 1:
            raise ValueError("min_interval_s >= 0, keys_max >= 1")
        self.index = index
        self.min_interval_s = min_interval_s
        self.keys_max = keys_max
        self.clock = clock
        self._lock = threading.Lock()
        self._done: OrderedDict[str, _Done] = OrderedDict()

    def _visible(self, session: Session, to_block: int) -> bool:
        """The caller still sees where a catch-up left the cursor (it was not rolled back)."""
        return self.index.cursor(session)[0] >= to_block

    def _recent(self, session: Session, key: str, now: float) -> bool:
        mark = session.info.get(UNIT_MARK)
        if mark is not None and mark[0] is session.get_transaction():
            return self._visible(session, mark[1])  # this unit of work caught up already
        done = self._done.get(key)
        if done is None or now - done.started >= self.min_interval_s:
            return False
        self._done.move_to_end(key)  # in use: forgotten last
        return self._visible(session, done.to_block)

    def __call__(self, session: Session, key: str) -> SyncReport | None:
        """Sync the index inside ``session`` unless ``key`` caught up less than
        ``min_interval_s`` ago; the report, or None where nothing was read."""
        with self._lock:
            now = self.clock()
            if self._recent(session, key, now):
                return None
            report: SyncReport | None = None
            try:
                report = self.index.sync(session)
            except (Web3Exception, OSError, ReorgTooDeep) as exc:
                logger.warning("the chain index could not catch up (%s): using it as it is", exc)
            # a failed attempt counts too: a node that is down is not asked again at once
            to_block = report.to_block if report else self.index.cursor(session)[0]
            session.info[UNIT_MARK] = (session.get_transaction(), to_block)
            self._done[key] = _Done(now, to_block)
            self._done.move_to_end(key)
            while len(self._done) > self.keys_max:
                self._done.popitem(last=False)
            return report
