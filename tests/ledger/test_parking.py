"""Bounded deliveries (``ledger.parking``) on the real Redis: deliveries are counted and
forgotten, a task past ``max_deliveries`` is parked without running, parked messages are
listed newest first, bounded, and sent again under a new id. The Celery limits are checked
in Settings. (A real worker killed by a real poison task: tests/e2e/test_celery_chaos.py.)"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery
from pydantic import ValidationError

from inferledger.procs import free_port
from ledger.config import Settings, get_settings
from ledger.parking import (
    CountedTask,
    ParkedMessage,
    count_delivery,
    deliveries_key,
    forget_deliveries,
    list_parked,
    park,
    requeue_parked,
)


@pytest.fixture
def settings(redis_url: str, tmp_path: Path) -> Iterator[Settings]:
    queue = f"inferledger-parking-tests-{uuid.uuid4().hex[:10]}"
    yield Settings(
        redis_url=redis_url, data_dir=tmp_path, celery_queue=queue, max_deliveries=2, parked_max=3
    )
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(f"*{queue}*"):
        client.delete(key)


def _message(settings: Settings, n: int) -> ParkedMessage:
    return ParkedMessage("ledger.tasks.sweep", f"id-{n}", [n], {"k": n}, 6, settings.celery_queue)


def test_parking_counts_each_delivery_with_an_expiry_and_forgets_it(settings: Settings) -> None:
    client = redis.Redis.from_url(settings.redis_url)
    assert [count_delivery(settings, "t1") for _ in range(3)] == [1, 2, 3]
    assert count_delivery(settings, "t2") == 1  # counted per task id
    ttl = client.ttl(deliveries_key(settings, "t1"))
    assert 0 < ttl <= settings.delivery_count_ttl_s
    forget_deliveries(settings, "t1")
    assert not client.exists(deliveries_key(settings, "t1"))
    assert client.exists(deliveries_key(settings, "t2"))


def test_parking_count_without_redis_lets_the_task_run(settings: Settings) -> None:
    down = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    assert count_delivery(down, "t1") is None
    forget_deliveries(down, "t1")  # no error either


def test_parking_keeps_the_newest_parked_max_messages_newest_first(settings: Settings) -> None:
    client = redis.Redis.from_url(settings.redis_url)
    for n in range(5):
        count_delivery(settings, f"id-{n}")
        park(settings, _message(settings, n))
        assert not client.exists(deliveries_key(settings, f"id-{n}"))  # its count dropped
    parked = list_parked(settings)
    assert [p.id for p in parked] == ["id-4", "id-3", "id-2"]  # parked_max = 3
    assert parked[0] == replace(_message(settings, 4), parked_at=parked[0].parked_at)


def test_parking_requeue_sends_the_task_again_under_a_new_id(settings: Settings) -> None:
    for n in range(2):
        park(settings, _message(settings, n))
    app = Celery("parking-test", broker=settings.redis_url, set_as_current=False)
    new_id = requeue_parked(app, "id-0", settings)
    assert new_id is not None and new_id != "id-0"
    assert [p.id for p in list_parked(settings)] == ["id-1"]  # only the requeued one left
    raw = redis.Redis.from_url(settings.redis_url).lrange(settings.celery_queue, 0, -1)
    assert len(raw) == 1
    sent = json.loads(raw[0])
    assert (sent["headers"]["task"], sent["headers"]["id"]) == ("ledger.tasks.sweep", new_id)
    args, kwargs, _ = json.loads(base64.b64decode(sent["body"]))
    assert (args, kwargs) == ([0], {"k": 0})
    assert requeue_parked(app, "id-0", settings) is None  # not parked any more: nothing sent
    assert len(redis.Redis.from_url(settings.redis_url).lrange(settings.celery_queue, 0, -1)) == 1


@pytest.fixture
def counted_app(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A Celery app whose tasks are CountedTasks, run eagerly in this process; the tasks
    read the settings from the environment, as a worker's do."""
    monkeypatch.setenv("INFERLEDGER_REDIS_URL", settings.redis_url)
    monkeypatch.setenv("INFERLEDGER_CELERY_QUEUE", settings.celery_queue)
    monkeypatch.setenv("INFERLEDGER_MAX_DELIVERIES", str(settings.max_deliveries))
    get_settings.cache_clear()
    yield Celery(
        "counted-test", broker=settings.redis_url, task_cls=CountedTask, set_as_current=False
    )
    get_settings.cache_clear()


def test_counted_task_parks_a_delivery_past_max_deliveries_unrun(
    settings: Settings, counted_app: Any
) -> None:
    calls: list[int] = []

    @counted_app.task(name="tests.parking.body")  # type: ignore[untyped-decorator]
    def body(x: int) -> int:
        calls.append(x)
        return x

    client = redis.Redis.from_url(settings.redis_url)
    assert body.apply(args=(1,), task_id="fresh").get() == 1
    assert not client.exists(deliveries_key(settings, "fresh"))  # cleared when it ended
    client.set(deliveries_key(settings, "sick"), settings.max_deliveries)  # delivered twice
    assert body.apply(args=(2,), task_id="sick").get() is None  # third: parked, not run
    assert body(3) == 3  # a plain call is no delivery: runs, counts nothing
    assert calls == [1, 3]
    parked = list_parked(settings)
    assert [(p.task, p.id, p.args, p.deliveries) for p in parked] == [
        ("tests.parking.body", "sick", [2], settings.max_deliveries + 1)
    ]
    assert not client.exists(deliveries_key(settings, "sick"))


def test_config_celery_limits_are_checked() -> None:
    assert Settings().celery_visibility_timeout_s > Settings().celery_task_time_limit_s
    with pytest.raises(ValidationError, match="celery_visibility_timeout_s must be >"):
        Settings(celery_visibility_timeout_s=900)  # the hard limit's default
    with pytest.raises(ValidationError, match="soft_time_limit_s must be <"):
        Settings(celery_task_soft_time_limit_s=900, celery_task_time_limit_s=900)
    with pytest.raises(ValidationError, match="delivery_count_ttl_s must be >"):
        Settings(delivery_count_ttl_s=3600)
    with pytest.raises(ValidationError):
        Settings(max_deliveries=0)
    with pytest.raises(ValidationError, match="epoch_lock_timeout_s must be >"):
        Settings(epoch_lock_timeout_s=900)  # the settler's lock would expire mid-task
    fast = Settings(
        celery_task_soft_time_limit_s=4,
        celery_task_time_limit_s=5,
        celery_visibility_timeout_s=6,
        delivery_count_ttl_s=60,
    )
    assert fast.max_deliveries == 5  # the default
