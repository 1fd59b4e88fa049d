"""Fallbacks (issue #27): which model serves a request its own model cannot, and why.
The catalogue's checks, the order tried, and the manager's loop with fake children
(no subprocess); the e2e tests (tests/e2e/test_fallbacks.py) use real llama-servers."""

from __future__ import annotations

import asyncio
import time

import pytest

from router.catalogue.config import ConfigError
from router.core import fallback
from router.core.manager import ModelUnavailable
from router.core.scheduler import State
from tests.support.waiting import until
from tests.unit.core.conftest import MakeManager, fake_catalogue
from tests.unit.core.fakechild import Behaviour

pytestmark = pytest.mark.timeout(10)


@pytest.fixture(autouse=True)
def _kept_files(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))


def test_fallbacks_are_kept_as_model_names_and_followed_depth_first(tmp_path):
    config = fake_catalogue(tmp_path, {"a": {"fallbacks": ["bee", "c"]}, "b": {"aliases": ["bee"], "fallbacks": ["d"]},
                                  "c": {}, "d": {}})
    assert config.models["a"].fallbacks == ("b", "c")
    assert fallback.chain(config, "a") == ["a", "b", "d", "c"]
    assert fallback.chain(config, "c") == ["c"]


@pytest.mark.parametrize(("models", "where", "says"), [
    ({"a": {"fallbacks": ["nope"]}}, "models.a.fallbacks[0]", "'nope' is not a model of this catalogue"),
    ({"a": {"aliases": ["aa"], "fallbacks": ["aa"]}}, "models.a.fallbacks[0]", "'aa' is this model itself"),
    ({"a": {"fallbacks": ["b"]}, "b": {"fallbacks": ["c"]}, "c": {"fallbacks": ["a"]}},
     "models.a.fallbacks", "fallbacks go round in a cycle: a -> b -> c -> a"),
])
def test_a_fallback_that_cannot_be_followed_is_a_clear_config_error(tmp_path, models, where, says):
    with pytest.raises(ConfigError) as e:
        fake_catalogue(tmp_path, models)
    assert f"{where}: {says}" in str(e.value)


@pytest.fixture
def make(fake_managers: MakeManager) -> MakeManager:
    return fake_managers


async def test_a_model_whose_load_fails_is_served_by_its_fallback(make):
    manager, factory = make({"a": {"fallbacks": ["b"]}, "b": {}}, a=Behaviour(load="fail"))
    lease = await manager.acquire("a")
    assert (lease.model, lease.fell_from, lease.fallback_reason) == ("b", "a", "load_failed")
    assert factory.alive() == ["b"]
    lease.release()


async def test_the_first_fallback_that_can_serves(make):
    manager, _ = make({"a": {"fallbacks": ["b", "c"]}, "b": {}, "c": {}},
                      a=Behaviour(load="fail"), b=Behaviour(load="fail"))
    lease = await manager.acquire("a")
    assert (lease.model, lease.fell_from, lease.fallback_reason) == ("c", "a", "load_failed")
    lease.release()


async def test_a_missing_file_falls_back_without_a_load(make, tmp_path):
    manager, factory = make({"a": {"fallbacks": ["b"]}, "b": {}})
    (tmp_path / "a.gguf").unlink()
    lease = await manager.acquire("a")
    assert (lease.model, lease.fallback_reason) == ("b", "file_missing")
    assert [c.name for c in factory.made] == ["b"]
    lease.release()


async def test_a_full_queue_falls_back(make):
    manager, _ = make({"a": {"fallbacks": ["b"], "concurrency_limit": 1, "max_queue": 1}, "b": {}},
                      b=Behaviour())
    held = await manager.acquire("a")
    waiting = asyncio.ensure_future(manager.acquire("a"))
    await until(lambda: manager.scheduler.waiting("a") == 1, 2, "the second request to wait")
    third = asyncio.ensure_future(manager.acquire("a"))
    await until(lambda: manager.scheduler.waiting("b") == 1, 2, "the third request to wait for b")
    held.release()
    (await asyncio.wait_for(waiting, 5)).release()  # a's queue: served by a
    lease = await asyncio.wait_for(third, 5)
    assert (lease.model, lease.fallback_reason) == ("b", "queue_full")
    lease.release()


async def test_past_its_deadline_only_a_loaded_fallback_serves(make):
    manager, factory = make({"a": {"fallbacks": ["b"], "concurrency_limit": 1}, "b": {}})
    held = await manager.acquire("a")
    with pytest.raises(ModelUnavailable) as refused:  # b is not loaded: no swap for a request that gave up
        await manager.acquire("a", deadline=time.monotonic() + 0.1)
    assert refused.value.expired and refused.value.cause == "deadline"
    assert [c.name for c in factory.made] == ["a"]
    held.release()


async def test_past_its_deadline_a_loaded_fallback_serves(make):
    manager, _ = make({"a": {"fallbacks": ["b"], "concurrency_limit": 1}, "b": {}}, router={"models_max": 2})
    (await manager.acquire("b")).release()
    held = await manager.acquire("a")
    assert manager.state("b") is State.READY
    lease = await manager.acquire("a", deadline=time.monotonic() + 0.1)
    assert (lease.model, lease.fallback_reason) == ("b", "deadline")
    lease.release()
    held.release()


async def test_without_fallbacks_the_error_is_unchanged(make):
    manager, _ = make({"a": {}, "b": {}}, a=Behaviour(load="fail"))
    with pytest.raises(ModelUnavailable) as refused:
        await manager.acquire("a")
    assert str(refused.value).startswith("model 'a' failed to load") and refused.value.cause == "load_failed"


async def test_when_no_fallback_can_the_error_is_the_models_own(make):
    manager, _ = make({"a": {"fallbacks": ["b"]}, "b": {}}, a=Behaviour(load="fail"), b=Behaviour(load="fail"))
    with pytest.raises(ModelUnavailable) as refused:
        await manager.acquire("a")
    assert str(refused.value).startswith("model 'a' failed to load")
