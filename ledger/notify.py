"""Wake-ups across processes: a long poll answers as soon as what it waits for is committed.

Two things are waited for: work for a worker (``GET /v1/work?wait_s=``, an idle device agent)
and a job's decision (``GET /v1/jobs/{id}?wait_s=``, a client). What makes them happen is
committed by other processes: an assignment by whichever API process admitted the job (or by
the reconciler adding a replica, the sweeper reassigning one); a decision by the Celery
reconciler or the sweeper. Each of those units of work marks what it did on its session
(``work_for``, ``decided``); once the transaction commits, one Redis ``PUBLISH`` a channel
carries the keys (worker addresses, job ids). Every API process keeps one subscriber thread
(``Listener``) that wakes the requests waiting on those keys. A commit wakes the waiters of
its own process itself, at once (a paid request's admission, its last vote's decision: the
agents' and the client's waits are mostly in the same process); each message names the
process that published it, and a listener skips its own process's messages.

A wake-up is a hint, never the truth: the woken request reads the database again, and a
waiter also reads it every ``FALLBACK_S`` whatever it hears, so a message lost (Redis
restarted, the publisher's connection down: logged, never raised into the unit of work that
committed) costs that much latency and nothing else. A waiter registers before it reads the
database, so a commit between its read and its wait still wakes it. Keys from another
deployment on the same Redis only wake a request for nothing."""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from functools import lru_cache
from typing import Any

import redis
from sqlalchemy import event
from sqlalchemy.orm import Session

logger = logging.getLogger(__name__)

WORK = "inferledger:work"  # keys: worker addresses (lower case)
DECIDED = "inferledger:decided"  # keys: job ids
CHANNELS = (WORK, DECIDED)
FALLBACK_S = 0.25  # a waiter reads the database at least this often
PUBLISH_PAUSE_S = 5.0  # after a failed publish, how long a publisher stays quiet
_PENDING = "inferledger.notify"  # session.info key: {channel: keys}, published on commit
_URL = "inferledger.notify.url"
ORIGIN_END = "|"  # a message: the publishing process's name, this, then the keys by commas


# --- publishing, after commit ---------------------------------------------------------------


def work_for(session: Session, redis_url: str, workers: Iterable[str]) -> None:
    """The workers got assignments in this unit of work: wake their pulls once it commits."""
    _mark(session, redis_url, WORK, (w.lower() for w in workers))


def decided(session: Session, redis_url: str, job_ids: Iterable[str]) -> None:
    """These jobs were decided in this unit of work: wake their clients once it commits."""
    _mark(session, redis_url, DECIDED, job_ids)


def _mark(session: Session, redis_url: str, channel: str, keys: Iterable[str]) -> None:
    pending: dict[str, set[str]] = session.info.setdefault(_PENDING, defaultdict(set))
    pending[channel].update(keys)
    session.info[_URL] = redis_url


def _new_origin() -> str:
    return secrets.token_hex(8)


# This process's name on the channels: its own messages come back to its listener, which has
# woken their waiters already. A forked child takes a name of its own.
_origin = _new_origin()


def _renamed_after_fork() -> None:
    global _origin
    _origin = _new_origin()


os.register_at_fork(after_in_child=_renamed_after_fork)


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    pending = session.info.pop(_PENDING, None)
    url = session.info.get(_URL)
    if not pending or url is None:
        return
    publisher = _publisher(url)
    local = _listeners.get(url)
    for channel, keys in pending.items():
        if keys:
            if local is not None:  # this process's waiters at once, without the round trip
                local.wake(channel, keys)
            publisher.publish(channel, keys)


@event.listens_for(Session, "after_rollback")
def _after_rollback(session: Session) -> None:
    session.info.pop(_PENDING, None)  # nothing happened: nobody to wake


class Publisher:
    def __init__(self, url: str) -> None:
        self._redis = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=1.0)
        self._quiet_until = 0.0

    def publish(self, channel: str, keys: Iterable[str]) -> None:
        """Best effort: a failure is logged and the publisher keeps quiet for a while (the
        waiters' own reads stand in), never raised into the work that already committed."""
        if time.monotonic() < self._quiet_until:
            return
        try:
            self._redis.publish(channel, _origin + ORIGIN_END + ",".join(sorted(keys)))
        except redis.RedisError as exc:
            self._quiet_until = time.monotonic() + PUBLISH_PAUSE_S
            logger.warning("wake-ups not published for %.0f s: %s", PUBLISH_PAUSE_S, exc)


@lru_cache(maxsize=8)
def _publisher(url: str) -> Publisher:
    return Publisher(url)


# --- waiting, in the API processes ----------------------------------------------------------


class Listener:
    """One Redis subscription for the process; ``watch`` hands out events it sets."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._lock = threading.Lock()
        self._waiters: dict[tuple[str, str], set[threading.Event]] = defaultdict(set)
        self._thread: threading.Thread | None = None
        self.connected = threading.Event()  # subscribed (tests wait on it)
        self.heard = 0

    @contextlib.contextmanager
    def watch(self, channel: str, key: str) -> Iterator[threading.Event]:
        """An event set when ``key`` is published on ``channel`` while the block runs."""
        self._start()
        woken = threading.Event()
        slot = (channel, key)
        with self._lock:
            self._waiters[slot].add(woken)
        try:
            yield woken
        finally:
            with self._lock:
                waiting = self._waiters.get(slot)
                if waiting is not None:
                    waiting.discard(woken)
                    if not waiting:
                        del self._waiters[slot]

    def _start(self) -> None:
        if self._thread is not None:
            return
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="wake-ups", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        delay = 0.1
        while True:
            try:
                self._listen()
            except (redis.RedisError, OSError) as exc:
                self.connected.clear()
                logger.warning("wake-up subscription lost (%s); again in %.1f s", exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _listen(self) -> None:
        client = redis.Redis.from_url(self.url, socket_connect_timeout=2.0)
        pubsub = client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
        try:
            pubsub.subscribe(*CHANNELS)
            while True:
                message = pubsub.get_message(timeout=1.0)
                if not self.connected.is_set() and pubsub.subscribed:
                    self.connected.set()
                if message is not None:
                    self._wake(message)
        finally:
            pubsub.close()
            client.close()

    def _wake(self, message: dict[str, Any]) -> None:
        channel = message["channel"]
        channel = channel.decode() if isinstance(channel, bytes) else str(channel)
        data = message["data"]
        origin, _, keys = (data.decode() if isinstance(data, bytes) else str(data)).rpartition(
            ORIGIN_END
        )
        self.heard += 1
        if origin != _origin:  # this process's own commits woke their waiters already
            self.wake(channel, keys.split(","))

    def wake(self, channel: str, keys: Iterable[str]) -> None:
        """Set the events of the requests waiting on ``keys`` of ``channel``."""
        with self._lock:
            events = [e for k in keys for e in self._waiters.get((channel, k), ())]
        for woken in events:
            woken.set()


_listeners: dict[str, Listener] = {}
_listeners_lock = threading.Lock()


def listener(url: str) -> Listener:
    """The process's listener for this Redis (started at the first ``watch``)."""
    found = _listeners.get(url)
    if found is None:
        with _listeners_lock:
            found = _listeners.setdefault(url, Listener(url))
    return found


@contextlib.contextmanager
def watch(redis_url: str, channel: str, key: str, *, wait: bool) -> Iterator[threading.Event]:
    """``listener(redis_url).watch(channel, key)``; a plain event when the caller will not
    wait (no subscription started for a request that answers at once)."""
    if not wait:
        yield threading.Event()
        return
    with listener(redis_url).watch(channel, key) as woken:
        yield woken


def wait(woken: threading.Event, deadline: float) -> None:
    """Until ``woken`` is set, ``FALLBACK_S`` passes or the deadline comes; then clear it."""
    woken.wait(max(0.0, min(FALLBACK_S, deadline - time.monotonic())))
    woken.clear()
