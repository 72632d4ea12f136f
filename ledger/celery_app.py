"""The Celery application on Redis, configured for an at-least-once queue: late acks,
re-delivery when a worker dies, no result backend (the database is the source of truth),
and beat schedules that sweep the database for work, so a lost message delays work but
never loses it."""

from __future__ import annotations

from celery import Celery

from ledger.config import get_settings

settings = get_settings()

app = Celery("inferledger", broker=settings.redis_url, include=["ledger.tasks"])
app.conf.update(
    task_default_queue=settings.celery_queue,
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    task_ignore_result=True,
    worker_prefetch_multiplier=1,
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
    broker_transport_options={"visibility_timeout": 3600},
    task_time_limit=900,
    task_soft_time_limit=600,
    beat_schedule={
        "reconcile-sweep": {
            "task": "ledger.tasks.reconcile",
            "schedule": settings.reconcile_interval_s,
        },
        "close-epoch": {"task": "ledger.tasks.close_epoch", "schedule": settings.epoch_interval_s},
        "slash": {"task": "ledger.tasks.slash", "schedule": settings.epoch_interval_s},
        "index-chain": {"task": "ledger.tasks.index_chain", "schedule": settings.index_interval_s},
    },
    timezone="UTC",
)
