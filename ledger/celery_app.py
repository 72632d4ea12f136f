"""The Celery application on Redis, configured for an at-least-once queue: late acks,
re-delivery when a worker dies, no result backend (the database is the source of truth),
and beat schedules that sweep the database for work, so a lost message delays work but
never loses it.

Every task's base is ``ledger.parking.CountedTask``: a message delivered more than
``max_deliveries`` times (its task keeps killing its worker) is parked, not run again.
A message left unacknowledged by a worker that died comes back after
``celery_visibility_timeout_s``, which must outlast the hard time limit (``ledger.config``);
the keys that track such messages are named after the queue, so deployments that share a
Redis database never hand out each other's messages early."""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.signals import worker_init

from ledger.config import get_settings
from ledger.runtime import tune_gc
from protocol import recursion

recursion.bound()  # stored JSON is parsed in these tasks too

settings = get_settings()
queue = settings.celery_queue

app = Celery(
    "inferledger",
    broker=settings.redis_url,
    include=["ledger.tasks"],
    task_cls="ledger.parking:CountedTask",
)
app.conf.update(
    task_default_queue=queue,
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    task_ignore_result=True,
    worker_prefetch_multiplier=1,
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
    broker_connection_max_retries=None,  # a restarted Redis is waited for, never given up on
    broker_transport_options={
        "visibility_timeout": settings.celery_visibility_timeout_s,
        "unacked_restore_interval": settings.celery_restore_interval_s,
        "unacked_restore_throttle": 1,  # look every interval (kombu's default: every 10th)
        "unacked_key": f"{queue}:unacked",
        "unacked_index_key": f"{queue}:unacked_index",
        "unacked_mutex_key": f"{queue}:unacked_mutex",
    },
    task_time_limit=settings.celery_task_time_limit_s,
    task_soft_time_limit=settings.celery_task_soft_time_limit_s,
    beat_schedule={
        "reconcile-sweep": {
            "task": "ledger.tasks.reconcile",
            "schedule": settings.reconcile_interval_s,
        },
        "sweep": {"task": "ledger.tasks.sweep", "schedule": settings.sweep_interval_s},
        "close-epoch": {"task": "ledger.tasks.close_epoch", "schedule": settings.epoch_interval_s},
        "slash": {"task": "ledger.tasks.slash", "schedule": settings.epoch_interval_s},
        "index-chain": {"task": "ledger.tasks.index_chain", "schedule": settings.index_interval_s},
    },
    timezone="UTC",
)


@worker_init.connect  # type: ignore[untyped-decorator]
def _tune(**_: Any) -> None:
    tune_gc()  # before the pool forks: children share the frozen start-up heap
