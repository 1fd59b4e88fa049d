"""The front's side of fallbacks and queue terms, without Ray or processes: which of a
model's fallbacks the front sends where no host can take the model
(router/cluster/fallbacks.py), and a deadline crossing from the front's clock to a
host's (router/cluster/terms.py). End to end: test_cluster_ray.py."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from router.catalogue.parse import parse_config
from router.cluster.fallbacks import Unplaced, first_that_serves
from router.cluster.host import RemoteLease
from router.cluster.terms import HostTerms
from router.core.manager import ModelUnavailable
from router.core.queue_order import DEFAULT_PRIORITY, priority_value


@dataclass
class FakeHost:
    name: str = "n1"


def catalogue(tmp_path: Path) -> Any:
    """a falls back to b then c; b to d (the order tried for a: a, b, d, c)."""
    models = {"a": {"fallbacks": ["b", "c"]}, "b": {"fallbacks": ["d"]}, "c": {}, "d": {}}
    for n in models:
        (tmp_path / f"{n}.gguf").write_bytes(b"GGUF")
    return parse_config({"router": {"memory": {"ram": "off", "gpu": "off"}},
                         "models": {n: {"path": str(tmp_path / f"{n}.gguf"), **m} for n, m in models.items()}})


def too_big(name: str) -> Unplaced:
    return Unplaced(f"model {name!r} fits on no host", cause="too_big")


class Hosts:
    """What placing each model gives: an error, or a lease (from `served`, when a host's own
    fallback served it); `sent` records the models asked for, in order."""

    def __init__(self, answers: dict[str, Exception | str], loaded: tuple[str, ...] = ()):
        self.answers, self.loaded, self.sent = answers, loaded, []

    async def acquire(self, name: str) -> RemoteLease:
        self.sent.append(name)
        answer = self.answers.get(name, name)
        if isinstance(answer, Exception):
            raise answer
        grant = {"lease": len(self.sent), "base_url": "http://127.0.0.1:1", "model": answer}
        if answer != name:
            grant.update(fell_from=name, fallback_reason="load_failed")
        return RemoteLease(FakeHost(), name, grant)

    async def serve(self, config: Any, model: str) -> RemoteLease:
        return await first_that_serves(config, model, self.acquire, lambda n: n in self.loaded)


async def test_a_model_that_fits_on_no_host_is_served_by_its_first_fallback(tmp_path):
    hosts = Hosts({"a": too_big("a")})
    lease = await hosts.serve(catalogue(tmp_path), "a")
    assert hosts.sent == ["a", "b"]
    assert (lease.model, lease.fell_from, lease.fallback_reason) == ("b", "a", "too_big")


async def test_a_model_served_where_it_was_placed_keeps_what_its_host_said(tmp_path):
    hosts = Hosts({"a": "c"})  # the host's own manager fell back (its load failed there)
    lease = await hosts.serve(catalogue(tmp_path), "a")
    assert hosts.sent == ["a"]
    assert (lease.model, lease.fell_from, lease.fallback_reason) == ("c", "a", "load_failed")


async def test_a_fallback_its_host_refused_is_not_followed_again_by_the_front(tmp_path):
    """b's host tried b and d already: the front goes on with c; the reason is a's."""
    hosts = Hosts({"a": too_big("a"), "b": ModelUnavailable("b failed to load", cause="load_failed")})
    lease = await hosts.serve(catalogue(tmp_path), "a")
    assert hosts.sent == ["a", "b", "c"]
    assert (lease.model, lease.fell_from, lease.fallback_reason) == ("c", "a", "too_big")


async def test_a_fallback_no_host_can_take_is_passed_for_its_own_fallbacks(tmp_path):
    hosts = Hosts({"a": too_big("a"), "b": Unplaced("b's file is on no host", cause="file_missing")})
    lease = await hosts.serve(catalogue(tmp_path), "a")
    assert hosts.sent == ["a", "b", "d"]
    assert (lease.model, lease.fell_from, lease.fallback_reason) == ("d", "a", "too_big")


async def test_past_its_deadline_a_request_goes_only_to_a_fallback_loaded_somewhere(tmp_path):
    expired = ModelUnavailable("waited 1 s for model 'b' (its deadline)", expired=True)
    config = catalogue(tmp_path)
    hosts = Hosts({"a": expired})  # a waited on its host past the deadline: its chain was tried there
    with pytest.raises(ModelUnavailable) as refused:
        await hosts.serve(config, "a")
    assert refused.value is expired and hosts.sent == ["a"]
    late = Hosts({"a": too_big("a"), "b": expired})
    with pytest.raises(Unplaced):  # c is loaded nowhere: no load for a request that stopped waiting
        await late.serve(config, "a")
    assert late.sent == ["a", "b"]
    warm = Hosts({"a": too_big("a"), "b": expired}, loaded=("c",))
    assert (await warm.serve(config, "a")).model == "c"


async def test_when_no_fallback_serves_the_error_is_the_one_the_model_gave(tmp_path):
    first = too_big("a")
    hosts = Hosts({"a": first, "b": ModelUnavailable("b: queue full", busy=True), "c": too_big("c")})
    with pytest.raises(ModelUnavailable) as refused:
        await hosts.serve(catalogue(tmp_path), "a")
    assert refused.value is first and hosts.sent == ["a", "b", "c"]


async def test_refusals_no_fallback_serves_are_the_answer_at_once(tmp_path):
    """No host is up, or the model was removed: nothing falls back."""
    nobody = Unplaced("no host is up in the cluster")
    hosts = Hosts({"a": nobody})
    with pytest.raises(Unplaced) as refused:
        await hosts.serve(catalogue(tmp_path), "a")
    assert refused.value is nobody and hosts.sent == ["a"]


def test_a_deadline_crosses_to_a_host_as_the_seconds_left_on_that_hosts_clock():
    # The front's clock reads 1000.0 and the request may wait until 1012.5 there;
    # the agent's clock reads 7.0 when the call arrives.
    terms = HostTerms.sent(priority_value("low"), "key:abc", 1012.5, 1000.0)
    assert terms == HostTerms(priority_value("low"), "key:abc", 12.5)
    assert terms.deadline(7.0) == 19.5
    assert HostTerms.sent(DEFAULT_PRIORITY, None, 999.0, 1000.0).deadline(7.0) == 7.0  # past: no time left
    assert HostTerms.sent(DEFAULT_PRIORITY, None, None, 1000.0).deadline(7.0) is None  # no limit
    assert HostTerms().deadline(7.0) is None and HostTerms().priority == DEFAULT_PRIORITY
