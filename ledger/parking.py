"""Bounded deliveries: a Celery message whose task keeps killing its worker is parked.

Tasks are acknowledged late and put back on the queue when their worker process dies
(``ledger.celery_app``), so a message whose task kills its process (SIGKILL, the OOM killer,
a segfault) would be delivered forever. ``CountedTask`` counts each delivery in Redis, keyed
by the task id, before the task runs. Past ``max_deliveries`` the message is parked instead:
its task name, id, arguments and delivery count go to a Redis list, an ERROR is logged, and
the message is acknowledged without running. A delivery that ends, by returning or raising,
deletes its count.

Why a Redis list and not a table: every task is a sweep over the database, which stays the
truth, so a parked message loses no work (beat sends the same task again); the record is
for a person to look at. Parking must not touch the database, which may be what kills the
task, and needs no migration. Redis here keeps no snapshot, so a Redis restart forgets the
list; the ERROR line in the log is the lasting trace.

A person looks with ``list_parked`` and sends one again with ``requeue_parked``
(docs/operations.md, "Celery reliability").
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any

import redis
from celery import Celery, Task

from ledger.config import Settings, get_settings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ParkedMessage:
    task: str
    id: str
    args: list[Any]
    kwargs: dict[str, Any]
    deliveries: int
    queue: str
    parked_at: float = field(default_factory=time.time)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, default=repr)

    @classmethod
    def from_json(cls, raw: str) -> ParkedMessage:
        return cls(**json.loads(raw))


@lru_cache(maxsize=4)
def _client(url: str) -> redis.Redis:
    # a forked pool process gets fresh connections: redis-py's pool checks the process id
    return redis.Redis.from_url(
        url, socket_timeout=5, socket_connect_timeout=2, decode_responses=True
    )


def deliveries_key(settings: Settings, task_id: str) -> str:
    return f"{settings.celery_queue}:deliveries:{task_id}"


def parked_key(settings: Settings) -> str:
    return f"{settings.celery_queue}:parked"


def count_delivery(settings: Settings, task_id: str) -> int | None:
    """Count one delivery of ``task_id``; None if Redis could not be reached (the task then
    runs: without Redis there is no redelivery to bound)."""
    key = deliveries_key(settings, task_id)
    try:
        with _client(settings.redis_url).pipeline() as pipe:
            pipe.incr(key)
            pipe.expire(key, settings.delivery_count_ttl_s)
            count, _ = pipe.execute()
    except redis.RedisError as exc:
        logger.warning("could not count a delivery of task %s: %s", task_id, exc)
        return None
    return int(count)


def forget_deliveries(settings: Settings, task_id: str) -> None:
    try:
        _client(settings.redis_url).delete(deliveries_key(settings, task_id))
    except redis.RedisError as exc:  # the count expires by itself
        logger.warning("could not clear the delivery count of task %s: %s", task_id, exc)


def park(settings: Settings, message: ParkedMessage) -> None:
    """Record ``message`` (newest first, ``parked_max`` kept) and drop its count."""
    key = parked_key(settings)
    with _client(settings.redis_url).pipeline() as pipe:
        pipe.lpush(key, message.to_json())
        pipe.ltrim(key, 0, settings.parked_max - 1)
        pipe.delete(deliveries_key(settings, message.id))
        pipe.execute()
    logger.error(
        "parked task %s[%s] after %d deliveries (max_deliveries %d): args=%r kwargs=%r",
        message.task,
        message.id,
        message.deliveries,
        settings.max_deliveries,
        message.args,
        message.kwargs,
    )


def _parked_raw(settings: Settings) -> list[str]:
    raw = _client(settings.redis_url).lrange(parked_key(settings), 0, settings.parked_max - 1)
    return [r if isinstance(r, str) else r.decode() for r in raw]


def list_parked(settings: Settings | None = None) -> list[ParkedMessage]:
    """The parked messages of this queue, newest first."""
    return [ParkedMessage.from_json(r) for r in _parked_raw(settings or get_settings())]


def requeue_parked(app: Celery, task_id: str, settings: Settings | None = None) -> str | None:
    """Send a parked message's task again (a new task id, so a fresh delivery count) and
    remove it from the list. Returns the new task id; None if ``task_id`` is not parked."""
    settings = settings or get_settings()
    client, key = _client(settings.redis_url), parked_key(settings)
    for raw in _parked_raw(settings):
        message = ParkedMessage.from_json(raw)
        if message.id != task_id or not client.lrem(key, 1, raw):
            continue
        try:
            sent = app.send_task(
                message.task, args=message.args, kwargs=message.kwargs, queue=message.queue
            )
        except Exception:
            client.lpush(key, raw)  # still parked: nothing was sent
            raise
        logger.info("requeued parked task %s[%s] as %s", message.task, task_id, sent.id)
        return str(sent.id)
    return None


class CountedTask(Task):  # type: ignore[misc]  # celery is untyped
    """The base of every ledger task: a delivery past ``max_deliveries`` is parked."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        request = self.request
        if request.called_directly or request.id is None:  # a plain call: no message
            return super().__call__(*args, **kwargs)
        settings = get_settings()
        deliveries = count_delivery(settings, request.id)
        if deliveries is not None and deliveries > settings.max_deliveries:
            queue = (request.delivery_info or {}).get("routing_key") or settings.celery_queue
            park(
                settings,
                ParkedMessage(self.name, request.id, list(args), dict(kwargs), deliveries, queue),
            )
            return None  # returning acknowledges the message
        try:
            return self.run(*args, **kwargs)  # the worker's tracer has pushed the request
        finally:
            forget_deliveries(settings, request.id)
