"""Models served at their `url`: the manager hands out a lease on their server at
once, and the scheduler never hears of them, so they never take a place in a
group, a memory figure, a queue or a swap (driven through the fake child factory)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from router.backend.external import ExternalServer
from router.catalogue.parse import parse_config
from router.core.manager import ModelManager
from router.core.scheduler import State
from router.upstream.client import ChildClient
from router.upstream.pool import UpstreamPool
from tests.unit.core.fakechild import FakeFactory

pytestmark = pytest.mark.timeout(10)


@pytest.fixture(autouse=True)
def _kept_files(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture
async def client() -> AsyncIterator[ChildClient]:
    pool = UpstreamPool()
    yield ChildClient(pool)
    await pool.close()


def catalogue(**router):
    return parse_config({
        "router": {"models_max": 1, "kv_persistence": False, "memory": {"ram": "1GiB", "gpu": "off"}, **router},
        "spawn": {"command": ["/bin/sh", "$path", "$port"]},
        "models": {"local": {"path": "/models/local.gguf"},
                   "remote": {"url": "https://api.example.com/v1", "api_key": "sk-test-1234", "pinned": True}}})


async def test_a_url_model_is_leased_at_once_and_never_evicts_a_local_one(client):
    factory = FakeFactory()
    m = ModelManager(catalogue(), client, 8082, child_factory=factory)
    async with await m.acquire("local"):
        pass
    assert m.state("local") is State.READY
    lease = await m.acquire("remote")
    assert isinstance(lease.child, ExternalServer)
    assert lease.child.base_url == "https://api.example.com"  # /v1 stays in each request's path
    assert dict(lease.child.plan.headers) == {"Authorization": "Bearer sk-test-1234"}
    assert m.external.in_flight("remote") == 1
    lease.release()
    lease.release()  # once only
    assert m.external.in_flight("remote") == 0
    assert m.state("local") is State.READY and [c.name for c in factory.made] == ["local"]
    assert "remote" not in m.scheduler.running() and m.scheduler.memory("remote") == {}


async def test_loading_or_unloading_a_url_model_starts_and_stops_nothing(client):
    factory = FakeFactory()
    m = ModelManager(catalogue(), client, 8082, child_factory=factory)
    m.load("remote")
    m.unload("remote")
    m.place("remote")
    assert factory.made == [] and m.state("remote") is State.STOPPED
    await m.shutdown()


async def test_a_reload_keeps_a_server_whose_settings_did_not_change(client):
    m = ModelManager(catalogue(), client, 8082, child_factory=FakeFactory())
    before = m.external.get("remote")
    m.set_config(catalogue(ttl=5))
    assert m.external.get("remote") is before
    m.set_config(parse_config({"models": {"local": {"path": "/models/local.gguf"}}}))
    assert "remote" not in m.external and m.external.view("remote") is None
