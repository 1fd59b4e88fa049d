"""The front's side of selectors and profiles, without Ray or processes: a selector's
target chosen from every host's state and tried like a model and its fallbacks
(router/cluster/selectors.py), the model a request names resolved with those states
(http/request.resolve_name), and the profile routes served over a holder that is not
a ModelManager (api/profiles.py, as the front's ClusterManager). End to end:
test_cluster_ray.py."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from router.api.profiles import add_profile_routes
from router.catalogue.parse import parse_config
from router.cluster.fallbacks import Unplaced, first_that_serves
from router.cluster.host import RemoteLease
from router.cluster.selectors import cluster_states
from router.core.events import EventBus
from router.core.manager import ModelUnavailable, through_selector
from router.core.profiles import ActiveProfile
from router.core.scheduler import State
from router.core.selector import Reservations
from router.http.access import admin_app, require_auth
from router.http.app_keys import ROUTER_SETTINGS
from router.http.errors import HTTPError, json_errors
from router.http.request import pinned_request, resolve_name
from tests.cluster.test_fallbacks_unit import Hosts as PlacedHosts


def catalogue(tmp_path: Path, strategy: str = "warm", **extra: Any) -> Any:
    """Selector `sel` over a, b, c; a falls back to d. Profile `work` pins `chat` to sel, turns `c` off."""
    models: dict[str, dict[str, Any]] = {"a": {"fallbacks": ["d"]}, "b": {}, "c": {}, "d": {}}
    for n in models:
        (tmp_path / f"{n}.gguf").write_bytes(b"GGUF")
    return parse_config({
        "router": {"memory": {"ram": "off", "gpu": "off"}, **extra},
        "models": {n: {"path": str(tmp_path / f"{n}.gguf"), **m} for n, m in models.items()},
        "selectors": {"sel": {"strategy": strategy, "targets": ["a", "b", "c"],
                              **({"spillover": 1} if strategy == "spillover" else {})}},
        "profiles": {"work": {"description": "at work", "pins": {"chat": "sel", "c": None}},
                     "home": {"pins": {"chat": "b"}}}})


class Hosts(PlacedHosts):
    """test_fallbacks_unit's, with leases that release nothing remote (their host is gone)."""

    async def acquire(self, name: str) -> RemoteLease:
        lease = await super().acquire(name)
        lease.host = SimpleNamespace(name="n1", gone=SimpleNamespace(is_set=lambda: True))  # type: ignore[assignment]
        return lease


def report(**models: str) -> dict[str, Any]:
    return {"models": {n: {"state": s, "inflight": 0, "waiting": 0} for n, s in models.items()}}


def test_a_targets_state_is_its_best_on_any_host():
    states = cluster_states([report(a="loading", b="unloading"), report(a="loaded"), report(c="loading")],
                            ["a", "b", "c", "d"])
    assert states == {"a": State.READY, "b": State.STOPPED, "c": State.STARTING, "d": State.STOPPED}


async def serve(config: Any, hosts: Hosts, states: dict[str, State], reservations: Reservations | None = None,
                may_serve: Any = None) -> RemoteLease:
    async def chain(names: list[str]) -> RemoteLease:
        return await first_that_serves(config, names[0], hosts.acquire, lambda n: n in hosts.loaded, names)

    return await through_selector(config, reservations or Reservations(), config.selectors["sel"], states,
                                  chain, may_serve)


async def test_warm_takes_the_target_loaded_on_some_host_and_names_the_selector(tmp_path):
    hosts = Hosts({})
    lease = await serve(catalogue(tmp_path), hosts, {"b": State.STARTING, "c": State.READY})
    assert hosts.sent == ["c"] and lease.model == "c" and lease.selector == "sel" and lease.fell_from is None


async def test_a_target_no_host_can_serve_falls_through_to_the_next_after_its_fallbacks(tmp_path):
    """a fits on no host: its fallback d is placed, then b (d's host refused it)."""
    hosts = Hosts({"a": Unplaced("a fits on no host", cause="too_big"),
                   "d": ModelUnavailable("d failed to load", cause="load_failed")})
    lease = await serve(catalogue(tmp_path), hosts, {})
    assert hosts.sent == ["a", "d", "b"]
    assert (lease.model, lease.selector, lease.fell_from, lease.fallback_reason) == ("b", "sel", "a", "too_big")


async def test_a_scoped_key_is_served_only_by_the_targets_it_may_use(tmp_path):
    hosts = Hosts({})
    lease = await serve(catalogue(tmp_path), hosts, {"a": State.READY}, may_serve=lambda n: n == "c")
    assert hosts.sent == ["c"] and lease.model == "c"
    with pytest.raises(ModelUnavailable, match="none of its targets"):
        await serve(catalogue(tmp_path), Hosts({}), {}, may_serve=lambda n: False)


async def test_spillover_spreads_the_fronts_requests_and_gives_each_back_when_released(tmp_path):
    config, reservations = catalogue(tmp_path, "spillover"), Reservations()
    states = {"a": State.READY}
    first = await serve(config, Hosts({}), states, reservations)
    second = await serve(config, Hosts({}), states, reservations)  # a holds its 1 in flight: b is loaded
    assert (first.model, second.model) == ("a", "b")
    assert reservations.inflight("sel") == {"a": 1, "b": 1}
    first.release()
    first.release()  # once only
    assert reservations.inflight("sel") == {"a": 0, "b": 1}
    third = await serve(config, Hosts({}), states, reservations)
    assert third.model == "a"
    nobody = Unplaced("no host is up in the cluster")  # no target can serve: nothing stays reserved
    with pytest.raises(Unplaced):
        await serve(config, Hosts(dict.fromkeys("abc", nobody)), states, reservations)
    assert {t: n for t, n in reservations.inflight("sel").items() if n} == {"a": 1, "b": 1}


def test_a_selector_resolves_to_the_target_its_states_choose(tmp_path):
    config = catalogue(tmp_path)
    assert resolve_name(config, "sel").name == "a"
    assert resolve_name(config, "sel", None, {"b": State.READY}).name == "b"


def test_the_fronts_pins_come_from_its_own_active_profile(tmp_path):
    config = catalogue(tmp_path)
    front = SimpleNamespace(config=config, profile=ActiveProfile(), events=EventBus())
    body = {"model": "chat"}
    assert pinned_request(front, "chat", body) == ("chat", False)
    front.profile.select(config, "work")
    assert pinned_request(front, "chat", body) == ("sel", True) and body == {"model": "sel"}
    with pytest.raises(HTTPError) as off:
        pinned_request(front, "c", None)
    assert off.value.status == 404


ADMIN_TOKEN = "admin-token-0123456789abcdef"


@pytest.fixture
async def profiles_client(tmp_path):
    config = catalogue(tmp_path, admin_token=ADMIN_TOKEN)
    front = SimpleNamespace(config=config, profile=ActiveProfile(), events=EventBus())
    app = web.Application(middlewares=[json_errors, require_auth])
    app[ROUTER_SETTINGS] = lambda: config.router
    admin = admin_app()
    add_profile_routes(admin, app, front)  # type: ignore[arg-type]
    app.add_subapp("/admin", admin)
    client = TestClient(TestServer(app), headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    await client.start_server()
    try:
        yield client, front
    finally:
        await client.close()


async def test_the_profile_routes_switch_a_holder_that_is_not_a_model_manager(profiles_client):
    client, front = profiles_client
    r = await client.get("/admin/profiles")
    listed = await r.json()
    assert r.status == 200 and listed["active"] is None
    assert [p["id"] for p in listed["profiles"]] == ["home", "work"]
    r = await client.put("/api/profiles/active", json={"name": "work"})
    assert r.status == 200 and (await r.json()) == {"active": "work"} and front.profile.name == "work"
    r = await client.put("/admin/profiles/active", json={"name": "nope"})
    assert r.status == 404 and (await r.json())["error"]["code"] == "profile_not_found"
    r = await client.put("/admin/profiles/active", json={"name": None})
    assert r.status == 200 and front.profile.spec is None
