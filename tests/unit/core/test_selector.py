"""Selectors (issue #27, llama-swap's `selectors`): the catalogue's checks, the pure choice
(llama-swap's internal/server/selector_test.go, ported), and the manager trying a selector's
targets like a fallback chain, with fake children (no subprocess). A model's `priority`
is here too: it is the other half of llama-swap's routing. The e2e test with real
llama-servers is tests/e2e/test_selectors.py."""

from __future__ import annotations

import asyncio

import pytest

from router.api.model_api import selector_entries
from router.catalogue.config import ApiKey, ConfigError, SelectorSpec
from router.core.manager import ModelUnavailable
from router.core.scheduler import State
from router.core.selector import Reservations, order
from router.http.errors import HTTPError
from router.http.request import resolve_model
from tests.support.waiting import until
from tests.unit.core.conftest import MakeManager, fake_catalogue
from tests.unit.core.fakechild import Behaviour

pytestmark = pytest.mark.timeout(10)

READY, STARTING, STOPPED, STOPPING = State.READY, State.STARTING, State.STOPPED, State.STOPPING


@pytest.fixture(autouse=True)
def _kept_files(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))


def sel(strategy: str, *targets: str, spillover: int = 1) -> SelectorSpec:
    return SelectorSpec(id="s", strategy=strategy, targets=targets, spillover=spillover)


# ----- the catalogue -------------------------------------------------------------

def test_targets_are_kept_as_model_names_and_the_keys_are_read(tmp_path):
    config = fake_catalogue(tmp_path, {"a": {"aliases": ["aa"]}, "b": {}}, {
        "pick": {"strategy": "warm", "targets": ["aa", "b"], "name": "Pick", "description": "d",
                 "unlisted": True, "metadata": {"purpose": "x"}},
        "pool": {"strategy": "spillover", "targets": ["a", "b"], "spillover": 3}})
    pick, pool = config.selectors["pick"], config.selectors["pool"]
    assert (pick.targets, pick.display_name, pick.description, pick.unlisted, pick.metadata) == (
        ("a", "b"), "Pick", "d", True, {"purpose": "x"})
    assert (pool.strategy, pool.spillover, pick.spillover) == ("spillover", 3, 1)


@pytest.mark.parametrize(("selectors", "where", "says"), [
    ({"s": {"targets": ["a"]}}, "selectors.s.strategy", "is required: one of warm, pin, spillover"),
    ({"s": {"strategy": "fair", "targets": ["a"]}}, "selectors.s.strategy", "expected one of warm, pin, spillover"),
    ({"s": {"strategy": "pin"}}, "selectors.s.targets", "expected at least one model name or alias"),
    ({"s": {"strategy": "pin", "targets": []}}, "selectors.s.targets", "expected at least one model name or alias"),
    ({"s": {"strategy": "pin", "targets": ["nope"]}}, "selectors.s.targets[0]",
     "'nope' is not a model of this catalogue"),
    ({"s": {"strategy": "pin", "targets": ["t"]}, "t": {"strategy": "pin", "targets": ["a"]}},
     "selectors.s.targets[0]", "'t' is a selector; a selector's targets are models (selectors do not chain)"),
    ({"a": {"strategy": "pin", "targets": ["b"]}}, "selectors.a", "the id is already the name of model 'a'"),
    ({"aa": {"strategy": "pin", "targets": ["b"]}}, "selectors.aa", "the id is already the alias of model 'a'"),
    ({"s": {"strategy": "spillover", "targets": ["a", "b"], "spillover": 0}}, "selectors.s.spillover",
     "expected a value >= 1, got 0"),
    ({"s": {"strategy": "spillover", "targets": ["a", "aa"]}}, "selectors.s.targets",
     "model 'a' is named twice (a spillover selector's targets are each a different model)"),
    ({"s": {"strategy": "pin", "targets": ["a"], "settings": {"spillover": 2}}}, "selectors.s.settings",
     "unknown key"),
    ({"s/..": {"strategy": "pin", "targets": ["a"]}}, "selectors.s/..", "expected a selector id of letters"),
    (["s"], "selectors", "expected a mapping of id: selector, got a list"),
])
def test_a_selector_that_cannot_work_is_a_clear_config_error(tmp_path, selectors, where, says):
    with pytest.raises(ConfigError) as e:
        fake_catalogue(tmp_path, {"a": {"aliases": ["aa"]}, "b": {}}, selectors)
    assert f"{where}: {says}" in str(e.value)


def test_duplicate_targets_are_allowed_where_order_is_all_that_matters(tmp_path):
    config = fake_catalogue(tmp_path, {"a": {"aliases": ["aa"]}, "b": {}},
                       {"s": {"strategy": "warm", "targets": ["a", "aa", "b"]}})
    assert config.selectors["s"].targets == ("a", "b")


def test_a_models_priority_is_a_whole_number_of_a_range(tmp_path):
    assert fake_catalogue(tmp_path, {"a": {"priority": -5}, "b": {}}).models["a"].priority == -5
    assert fake_catalogue(tmp_path, {"a": {}}).models["a"].priority == 0
    with pytest.raises(ConfigError, match=r"models\.a\.priority: expected a whole number from -1000 to 1000"):
        fake_catalogue(tmp_path, {"a": {"priority": 5000}})


# ----- the choice (llama-swap's selector_test.go) ------------------------------

def test_pin_is_always_the_first_target():
    assert order(sel("pin", "first", "second"), {"second": READY}) == ["first", "second"]


def test_warm_takes_a_ready_target_then_a_starting_one_then_the_first():
    s = sel("warm", "a", "b", "c")
    assert order(s, {"a": STARTING, "c": READY})[0] == "c"
    assert order(s, {"a": STARTING, "b": READY, "c": READY})[0] == "b"
    assert order(s, {"a": STARTING, "b": STARTING})[0] == "a"
    assert order(s, {}) == ["a", "b", "c"]
    assert order(s, {"b": READY}) == ["b", "a", "c"]  # the rest follow, in order, for what b cannot serve


def test_spillover_fills_a_target_to_its_count_then_starts_the_next():
    s, book = sel("spillover", "a", "b", "c", spillover=2), Reservations()
    firsts = [book.choose(s, {})[0][0] for _ in range(3)]
    assert firsts == ["a", "a", "b"]
    book.release("s", "a")
    ordered, reserved = book.choose(s, {"a": READY, "b": READY, "c": READY})
    assert ordered[0] == reserved == "c"  # a and b have one in flight each, c none


def test_spillover_with_every_target_stopping_tries_them_in_order_and_reserves_none():
    # llama-swap answers 503 ("no available spillover targets"); here the request waits for a's next load.
    s = sel("spillover", "a", "b", "c")
    assert Reservations().choose(s, {"a": STOPPING, "b": STOPPING, "c": STOPPING}) == (["a", "b", "c"], None)


def test_spillover_takes_turns_among_equally_busy_targets():
    s, book = sel("spillover", "a", "b", spillover=5), Reservations()
    ready = {"a": READY, "b": READY}
    assert [book.choose(s, ready)[1] for _ in range(4)] == ["a", "b", "a", "b"]
    assert book.inflight("s") == {"a": 2, "b": 2}


def test_spillover_past_every_count_with_none_cold_takes_the_least_busy():
    s, book = sel("spillover", "a", "b", spillover=1), Reservations()
    ready = {"a": READY, "b": READY}
    assert [book.choose(s, ready)[1] for _ in range(3)] == ["a", "b", "a"]


# ----- the manager: targets tried like fallbacks ------------------------------

@pytest.fixture
def make(fake_managers: MakeManager) -> MakeManager:
    return fake_managers


WARM = {"pick": {"strategy": "warm", "targets": ["a", "b"]}}


async def test_warm_serves_from_the_loaded_target_without_loading_the_first(make):
    manager, factory = make({"a": {}, "b": {}}, WARM)
    (await manager.acquire("b")).release()
    lease = await manager.acquire("pick")
    assert (lease.model, lease.selector, lease.fell_from) == ("b", "pick", None)
    assert [c.name for c in factory.made] == ["b"]
    lease.release()


async def test_warm_with_nothing_loaded_loads_the_first_target(make):
    manager, factory = make({"a": {}, "b": {}}, WARM)
    lease = await manager.acquire("pick")
    assert (lease.model, lease.selector) == ("a", "pick")
    assert factory.alive() == ["a"]
    lease.release()


async def test_a_target_that_cannot_serve_hands_the_request_to_the_next(make):
    manager, _ = make({"a": {}, "b": {}}, WARM, a=Behaviour(load="fail"))
    lease = await manager.acquire("pick")
    assert (lease.model, lease.selector, lease.fell_from, lease.fallback_reason) == ("b", "pick", "a", "load_failed")
    lease.release()


async def test_a_targets_own_fallbacks_follow_it(make):
    manager, _ = make({"a": {"fallbacks": ["c"]}, "b": {}, "c": {}}, WARM, a=Behaviour(load="fail"))
    lease = await manager.acquire("pick")
    assert (lease.model, lease.fell_from) == ("c", "a")
    lease.release()


async def test_a_selector_whose_targets_all_fail_gives_the_first_ones_error(make):
    manager, _ = make({"a": {}, "b": {}}, WARM, a=Behaviour(load="fail"), b=Behaviour(load="fail"))
    with pytest.raises(ModelUnavailable) as refused:
        await manager.acquire("pick")
    assert str(refused.value).startswith("model 'a' failed to load")


async def test_targets_the_request_may_not_use_are_skipped(make):
    manager, factory = make({"a": {}, "b": {}}, WARM)
    lease = await manager.acquire("pick", may_serve=lambda n: n != "a")
    assert lease.model == "b" and [c.name for c in factory.made] == ["b"]
    lease.release()


async def test_spillover_reservations_spread_requests_and_end_with_them(make):
    manager, _ = make({"a": {}, "b": {}}, {"pool": {"strategy": "spillover", "targets": ["a", "b"]}},
                      {"models_max": 2})
    first = await manager.acquire("pool")
    second = await manager.acquire("pool")
    assert (first.model, second.model) == ("a", "b")
    assert manager.reservations.inflight("pool") == {"a": 1, "b": 1}
    first.release()
    second.release()
    assert manager.reservations.inflight("pool") == {"a": 0, "b": 0}
    third = await manager.acquire("pool")
    assert third.model == "a"
    third.release()


async def test_a_spillover_request_that_gives_up_waiting_gives_its_reservation_back(make):
    manager, _ = make({"a": {}}, {"pool": {"strategy": "spillover", "targets": ["a"]}},
                      a=Behaviour(load="hold"))
    waiting = asyncio.ensure_future(manager.acquire("pool"))
    await until(lambda: manager.reservations.inflight("pool") == {"a": 1}, 2, "the reservation")
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert manager.reservations.inflight("pool") == {"a": 0}


# ----- a model's priority -----------------------------------------------------

async def test_a_request_for_a_model_of_higher_priority_is_served_first(make):
    manager, factory = make({"a": {"concurrency_limit": 1}, "b": {}, "c": {"priority": 5}}, {})
    held = await manager.acquire("a")
    for_b = asyncio.ensure_future(manager.acquire("b"))
    await until(lambda: manager.scheduler.waiting("b") == 1, 2, "the request for b to wait")
    for_c = asyncio.ensure_future(manager.acquire("c"))  # later, but c's priority is higher
    await until(lambda: manager.scheduler.waiting("c") == 1, 2, "the request for c to wait")
    held.release()
    (await asyncio.wait_for(for_c, 5)).release()
    (await asyncio.wait_for(for_b, 5)).release()
    assert [c.name for c in factory.made] == ["a", "c", "b"]


# ----- names and API keys (http/request.resolve_model), and the listing -------

def _key(*models: str) -> ApiKey:
    return ApiKey(key="sk-test-key-1234", models=models)


async def test_a_selector_resolves_to_the_target_its_strategy_would_try_first(make):
    manager, _ = make({"a": {}, "b": {}}, WARM)
    assert resolve_model(manager, "pick").name == "a"
    (await manager.acquire("b")).release()
    assert resolve_model(manager, "pick").name == "b"


async def test_a_key_uses_a_selector_only_by_its_id_and_through_targets_it_may_use(make):
    manager, _ = make({"a": {}, "b": {}}, WARM)
    assert resolve_model(manager, "pick", _key("pick", "b")).name == "b"  # a is not the key's: skipped
    for key in (_key("a", "b"), _key("pick")):  # not the id; none of the targets
        with pytest.raises(HTTPError) as e:
            resolve_model(manager, "pick", key)
        assert e.value.status == 404


async def test_selectors_are_listed_with_their_strategy_and_targets(make):
    manager, _ = make({"a": {}, "b": {}}, {
        "pick": {"strategy": "warm", "targets": ["a", "b"], "name": "Pick", "description": "d",
                 "metadata": {"purpose": "x"}},
        "pool": {"strategy": "spillover", "targets": ["a", "b"], "spillover": 2},
        "hidden": {"strategy": "pin", "targets": ["a"], "unlisted": True}})
    (await manager.acquire("b")).release()
    states = {n: manager.state(n) for n in manager.config.models}
    listed = {e["id"]: e for e in selector_entries(manager.config, states, None, 0)}
    assert set(listed) == {"pick", "pool"}
    assert listed["pick"]["name"] == "Pick" and listed["pick"]["description"] == "d"
    assert listed["pick"]["status"] == {"value": "loaded"}  # b, which it would choose
    assert listed["pick"]["metadata"] == {"purpose": "x", "type": "selector", "strategy": "warm",
                                          "targets": ["a", "b"]}
    assert listed["pool"]["metadata"]["spillover"] == 2 and "spillover" not in listed["pick"]["metadata"]
    assert [e["id"] for e in selector_entries(manager.config, states, _key("pick", "a"), 0)] == ["pick"]
