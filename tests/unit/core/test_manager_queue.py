"""The manager passes a request's priority, tenant and deadline to the scheduler and
keeps the deadline itself: a request waiting past it is refused on a timer, without
another event to wake the scheduler. Fake children: no subprocess."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from router.catalogue.parse import parse_config
from router.core.manager import ModelManager, ModelUnavailable
from router.core.queue_order import PRIORITY_CLASSES
from router.upstream.client import ChildClient
from router.upstream.pool import UpstreamPool
from tests.support.waiting import until
from tests.unit.core.fakechild import FakeFactory

pytestmark = pytest.mark.timeout(10)


@pytest.fixture(autouse=True)
def _kept_files(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture
async def manager() -> AsyncIterator[ModelManager]:
    config = parse_config({
        "router": {"models_max": 1, "kv_persistence": False, "swap_patience": 0,
                   "memory": {"ram": "off", "gpu": "off"}},
        "spawn": {"command": ["/bin/sh", "$path", "$port"]},
        "models": {n: {"path": f"/models/{n}.gguf", "concurrency_limit": 1} for n in ("a", "b")}})
    pool = UpstreamPool()
    m = ModelManager(config, ChildClient(pool), 8082, child_factory=FakeFactory())
    yield m
    await m.shutdown()
    await pool.close()


async def test_a_request_waiting_past_its_deadline_is_refused_on_time(manager):
    lease = await manager.acquire("a")  # a's only slot is taken
    started = time.monotonic()
    with pytest.raises(ModelUnavailable) as refused:
        await manager.acquire("a", deadline=started + 0.2)
    waited = time.monotonic() - started
    assert refused.value.expired and not refused.value.busy
    assert "(its deadline); all 1 of its slots were busy" in str(refused.value)
    assert 0.2 <= waited < 2.0  # refused by the timer, not by a later event
    assert manager.scheduler.waiting("a") == 0
    lease.release()
    assert manager.scheduler.inflight("a") == 0


async def test_priority_and_tenant_reach_the_queue(manager):
    lease = await manager.acquire("a", tenant="x")
    low = asyncio.ensure_future(manager.acquire("a", priority=PRIORITY_CLASSES["low"], tenant="x"))
    await until(lambda: manager.scheduler.waiting("a") == 1, 2, "the low request to wait")
    high = asyncio.ensure_future(manager.acquire("a", priority=PRIORITY_CLASSES["high"], tenant="y"))
    await until(lambda: manager.scheduler.waiting("a") == 2, 2, "the high request to wait")
    lease.release()
    first = await asyncio.wait_for(high, 2)  # the later, higher-priority request goes first
    assert not low.done()
    first.release()
    (await asyncio.wait_for(low, 2)).release()
