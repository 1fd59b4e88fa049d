"""The manager's swap, crash, load-failure and stop paths, driven through a
fake child factory: no subprocess, no sleeps beyond a few milliseconds."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from router.catalogue.parse import parse_config
from router.core.manager import ModelManager, ModelUnavailable
from router.core.scheduler import State
from router.upstream.client import ChildClient
from router.upstream.pool import UpstreamPool
from tests.support.waiting import until
from tests.unit.core.fakechild import Behaviour, FakeFactory

pytestmark = pytest.mark.timeout(10)


@pytest.fixture(autouse=True)
def _kept_files(tmp_path_factory, monkeypatch):
    """Memory figures are kept next to the KV cache files: never in the user's cache here."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))


def catalogue(models_max: int = 1, stop_timeout: float = 5.0, groups: dict[str, str] | None = None,
              memory: dict | None = None, **extra: dict):
    models = {n: {"path": f"/models/{n}.gguf", **({"group": groups[n]} if groups and n in groups else {}),
                  **extra.get(n, {})} for n in ("a", "b", "c")}
    return parse_config({"router": {"models_max": models_max, "stop_timeout": stop_timeout,
                                    "kv_persistence": False, "swap_patience": 0,
                                    "memory": memory or {"ram": "off", "gpu": "off"}},
                         "spawn": {"command": ["/bin/sh", "$path", "$port"]}, "models": models})


@pytest.fixture
async def client() -> AsyncIterator[ChildClient]:
    pool = UpstreamPool()
    yield ChildClient(pool)
    await pool.close()


@pytest.fixture
def factory() -> FakeFactory:
    return FakeFactory()


def manager_for(config, client, factory) -> ModelManager:
    return ModelManager(config, client, 8082, child_factory=factory)


async def use(manager: ModelManager, model: str) -> None:
    async with await manager.acquire(model):
        pass


async def test_swap_stops_the_old_child_before_the_new_one_starts(client, factory):
    m = manager_for(catalogue(), client, factory)
    events = m.events.subscribe()
    await use(m, "a")
    await use(m, "b")
    assert [c.name for c in factory.made] == ["a", "b"]
    a, b = factory.made
    assert a.returncode == 0 and not a.killed and b.returncode is None
    statuses = []
    while not events.empty():
        msg = events.get_nowait()
        statuses.append((msg["model"], msg["data"]["status"]))
    assert statuses.index(("a", "unloaded")) < statuses.index(("b", "loading"))  # never two at once
    assert m.state("a") is State.STOPPED and m.state("b") is State.READY
    await m.shutdown()


async def test_many_waiters_share_one_load(client, factory):
    factory.behaviours["a"] = Behaviour(load_delay=0.02)
    m = manager_for(catalogue(), client, factory)
    await asyncio.gather(*(use(m, "a") for _ in range(20)))
    assert len(factory.of("a")) == 1
    assert m.status["a"].loads == 1
    await m.shutdown()


async def test_a_busy_model_is_not_stopped_until_its_request_ends(client, factory):
    m = manager_for(catalogue(), client, factory)
    lease = await m.acquire("a")
    waiting = asyncio.ensure_future(use(m, "b"))
    await until(lambda: m.scheduler.waiting("b") or factory.of("b"), 2, "b's request to reach the scheduler")
    # The scheduler has decided for b: a, still answering, is neither stopping nor stopped.
    assert m.state("a") is State.READY and m.scheduler.inflight("a") == 1 and m.scheduler.waiting("b") == 1
    assert factory.of("a")[0].returncode is None and not factory.of("b")
    lease.release()
    await asyncio.wait_for(waiting, 2)
    assert factory.of("a")[0].returncode == 0 and factory.alive() == ["b"]
    await m.shutdown()


async def test_a_request_that_leaves_while_it_waits_causes_no_swap(client, factory):
    """b's client gives up while a is busy (its handler is cancelled): once a's request
    ends, a stays loaded and b is never started."""
    m = manager_for(catalogue(), client, factory)
    lease = await m.acquire("a", light=True)  # a /tokenize in flight
    waiting = asyncio.ensure_future(m.acquire("b"))
    await until(lambda: m.scheduler.waiting("b") == 1, 2, "b's request to wait")
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert m.scheduler.waiting() == 0
    lease.release()
    # The scheduler decides at the release, synchronously: no swap was set off (a would be stopping).
    assert m.scheduler.swap_target is None and m.scheduler.running() == ["a"]
    assert m.state("a") is State.READY and factory.alive() == ["a"] and not factory.of("b")
    await m.shutdown()


async def test_a_failed_load_rejects_every_waiter_with_the_reason(client, factory):
    factory.behaviours["a"] = Behaviour(load="fail", load_delay=0.01)
    m = manager_for(catalogue(), client, factory)
    results = await asyncio.gather(*(use(m, "a") for _ in range(3)), return_exceptions=True)
    assert all(isinstance(r, ModelUnavailable) and "out of memory" in str(r) for r in results)
    assert len(factory.of("a")) == 1
    st = m.status["a"]
    assert st.failed and st.exit_code == 1 and "exited with code 1" in (st.last_error or "")
    assert m.state("a") is State.STOPPED and "a" not in m.children
    factory.behaviours["a"] = Behaviour()
    await use(m, "a")  # the next request tries again, and a good load clears the failure
    assert len(factory.of("a")) == 2 and not m.status["a"].failed
    await m.shutdown()


async def test_a_crash_is_reported_and_the_next_request_starts_a_new_child(client, factory):
    m = manager_for(catalogue(), client, factory)
    events = m.events.subscribe()
    await use(m, "a")
    first = factory.of("a")[0]
    first.crash(-11)
    await m.wait_state("a", {State.STOPPED}, 2)
    st = m.status["a"]
    assert st.failed and st.exit_code == -11 and "exited unexpectedly" in (st.last_error or "")
    seen = []
    while not events.empty():
        seen.append(events.get_nowait()["data"])
    assert {"status": "unloaded", "failed": True, "exit_code": -11, "reason": "crash"} in seen
    await use(m, "a")
    assert len(factory.of("a")) == 2 and factory.of("a")[1].returncode is None
    await m.shutdown()


async def test_a_child_that_hangs_on_stop_is_killed_at_the_timeout_and_the_swap_goes_on(client, factory):
    factory.behaviours["a"] = Behaviour(stop="hang")
    m = manager_for(catalogue(stop_timeout=0.1), client, factory)
    await use(m, "a")
    await asyncio.wait_for(use(m, "b"), 2)
    a = factory.of("a")[0]
    assert a.stop_timeouts == [0.1] and a.killed and a.returncode == -9
    assert factory.alive() == ["b"]
    await m.shutdown()


async def test_models_of_one_group_share_models_max(client, factory):
    m = manager_for(catalogue(models_max=2, groups={"a": "g", "b": "g"}), client, factory)
    await use(m, "a")
    await use(m, "b")
    assert sorted(factory.alive()) == ["a", "b"]
    await use(m, "c")  # another group: both stop first
    assert factory.alive() == ["c"]
    await m.shutdown()


async def test_shutdown_stops_every_child_and_fails_waiters(client, factory):
    factory.behaviours["b"] = Behaviour(load="hold")
    m = manager_for(catalogue(models_max=0, groups={"a": "g", "b": "g"}), client, factory)
    await use(m, "a")
    waiting = asyncio.ensure_future(use(m, "b"))
    await until(lambda: factory.of("b") and m.state("b") is State.STARTING, 2, "b to be loading")
    await m.shutdown()
    with pytest.raises(ModelUnavailable):
        await waiting
    assert factory.alive() == [] and all(c.returncode is not None for c in factory.made)


async def test_kill_all_kills_at_once(client, factory):
    factory.behaviours["a"] = Behaviour(stop="hang")
    m = manager_for(catalogue(stop_timeout=30), client, factory)
    await use(m, "a")
    await asyncio.wait_for(m.kill_all(), 1)
    assert factory.of("a")[0].killed


MiB = 1024 * 1024


def report(mib: float) -> list[str]:
    """What llama-server prints at -lv 4 for buffers of `mib` in all."""
    return [f"load_tensors:   CPU_Mapped model buffer size =   {mib:.2f} MiB"]


async def test_a_loads_report_becomes_the_figure_and_placement_follows_the_budget(client, factory, tmp_path):
    """Three models, a budget for two: what each load reports is its figure from then
    on, a third model stops the least recently used one, and the figure is kept."""
    config = catalogue(models_max=0, memory={"ram": "600MiB", "gpu": "off", "probe": True})
    m = manager_for(config, client, factory)
    sizes = {"a": 250, "b": 250, "c": 250}
    original = factory.__call__

    def with_report(name, plan, port, logs, on_event):
        child = original(name, plan, port, logs, on_event)
        child.report = report(sizes[name])
        return child

    factory.__call__ = with_report  # type: ignore[method-assign]
    m.child_factory = with_report
    await use(m, "c")  # unknown before its first load (no file to estimate from): its report tells
    m.unload("c")
    await m.wait_state("c", {State.STOPPED}, 2)
    await use(m, "a")
    await use(m, "b")
    assert sorted(factory.alive()) == ["a", "b"]
    assert m.scheduler.used()["ram"] >= 500 * MiB
    await use(m, "c")  # what c's first load reported: 3 x 250 MiB > 600 MiB, so a (least recently used) stops
    assert sorted(factory.alive()) == ["b", "c"]
    assert m.scheduler.used()["ram"] <= 600 * MiB
    assert m.memory.measured("c")["devices"]["ram"] >= 250 * MiB
    await m.shutdown()
    again = manager_for(config, client, FakeFactory())  # a restart keeps what was measured
    again.place("c")
    assert again.scheduler._models["c"].memory["ram"] >= 250 * MiB


async def test_the_first_load_of_a_launch_plan_asks_for_the_buffer_report(client, factory):
    m = manager_for(catalogue(memory={"ram": "1GiB", "gpu": "off"}), client, factory)
    await use(m, "a")
    # /bin/sh is not llama-server: no -lv is added; the report comes only from llama-server children
    assert "-lv" not in factory.of("a")[0].plan.argv
    await m.shutdown()


async def test_a_load_out_of_memory_stops_one_more_idle_model_and_tries_once_more(client, factory):
    factory.behaviours["c"] = Behaviour(load="oom")
    m = manager_for(catalogue(models_max=0), client, factory)
    await use(m, "a")
    await use(m, "b")
    await use(m, "c")  # the first try fails out of memory; a (least recently used) stops; the second works
    assert [x.name for x in factory.made] == ["a", "b", "c", "c"]
    assert factory.of("a")[0].returncode == 0 and sorted(factory.alive()) == ["b", "c"]
    assert not m.status["c"].failed
    await m.shutdown()


async def test_a_second_out_of_memory_fails_the_request(client, factory):
    factory.behaviours["b"] = Behaviour(load="fail")  # "error: out of memory", every time
    m = manager_for(catalogue(models_max=0), client, factory)
    await use(m, "a")
    with pytest.raises(ModelUnavailable, match="out of memory"):
        await use(m, "b")  # a stops to make room, b is tried once more, then the request fails
    assert len(factory.of("b")) == 2 and factory.of("a")[0].returncode == 0
    assert m.state("b") is State.STOPPED
    with pytest.raises(ModelUnavailable):
        await use(m, "b")  # the next request tries again, once: nothing left to stop
    assert len(factory.of("b")) == 3
    await m.shutdown()


async def test_each_swap_step_carries_a_memory_snapshot(client, factory):
    config = catalogue(models_max=1, memory={"ram": "1GiB", "gpu": "off"})
    m = manager_for(config, client, factory)

    def reporting(name, plan, port, logs, on_event):
        child = factory(name, plan, port, logs, on_event)
        child.report = report(100)  # what each load tells it used
        return child

    m.child_factory = reporting
    events = m.events.subscribe()
    await use(m, "a")
    await use(m, "b")  # a stops for b
    steps = []
    while not events.empty():
        msg = events.get_nowait()
        if msg["event"] == "memory":
            steps.append((msg["model"], msg["data"]["step"], msg["data"]["used"].get("ram", 0) // MiB))
    assert steps == [("a", "loaded", 100), ("a", "stopping", 100), ("a", "stopped", 0), ("b", "loaded", 100)]
    await m.shutdown()


async def test_a_swap_target_reads_loaded_only_after_its_victim_has_exited(client, factory):
    """With room in the budget the target starts while its victim exits, but it is READY,
    and /models/sse says `loaded`, only once the victim is gone: no view shows the target
    loaded next to a model it evicted (llama.cpp loads only after the exit)."""
    factory.behaviours["b"] = Behaviour(stop="hang")  # b takes its stop timeout to go
    m = manager_for(catalogue(models_max=1, stop_timeout=0.3, memory={"ram": "1GiB", "gpu": "off"}),
                    client, factory)

    def reporting(name, plan, port, logs, on_event):
        child = factory(name, plan, port, logs, on_event)
        child.report = report(100)  # each load's figure: a and b both fit the budget
        return child

    m.child_factory = reporting
    await use(m, "a")
    await use(m, "b")  # a exits for b; both figures are known from now on
    events = m.events.subscribe()
    back = asyncio.ensure_future(use(m, "a"))  # b is told to stop and a starts next to it
    await until(lambda: len(factory.of("a")) == 2 and factory.of("a")[1].ready.is_set(), 1, "a's new child")
    assert factory.of("a")[1].ready.is_set() and factory.of("b")[0].returncode is None  # a is up, b exits
    assert m.state("a") is State.STARTING and not back.done()
    await asyncio.wait_for(back, 2)
    order = []
    while not events.empty():
        msg = events.get_nowait()
        if msg["event"] == "status_change":
            order.append((msg["model"], msg["data"]["status"]))
    assert order == [("a", "loading"), ("b", "unloaded"), ("a", "loaded")]
    await m.shutdown()
