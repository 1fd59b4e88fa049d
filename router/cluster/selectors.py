"""Selectors at the cluster front: a virtual model id served by one of its targets
(router/core/selector.py; docs/scheduling.md#selectors), chosen with every host's state.

A target's state across the cluster is its best on any host: loaded on one host is
loaded (warm prefers it, and placement sends the request to that host), else
loading on one is loading, else it is stopped (a target unloading on one host can
be placed on another). Spillover counts the requests the front has in flight
through the selector, with the same `Reservations` as one host. The targets are
then tried in the strategy's order like a model and its fallbacks
(cluster/fallbacks.py): a target no host can place, or whose host cannot serve it,
hands the request to the next.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from router.catalogue.config import Config, SelectorSpec
from router.cluster.host import RemoteLease
from router.core.fallback import chain
from router.core.manager import ModelUnavailable
from router.core.scheduler import State
from router.core.selector import Reservations

_BEST = (("loaded", State.READY), ("loading", State.STARTING))


def cluster_states(reports: Iterable[Mapping[str, Any]], names: Iterable[str]) -> dict[str, State]:
    """Each of `names`' state as a selector's strategy reads it, from the hosts' last reports:
    READY when loaded on some host, else STARTING when loading on one, else STOPPED."""
    held: dict[str, set[str]] = {}
    for report in reports:
        for name, model in report.get("models", {}).items():
            held.setdefault(name, set()).add(model.get("state"))
    return {n: next((s for value, s in _BEST if value in held.get(n, ())), State.STOPPED) for n in names}


async def through_selector(config: Config, reservations: Reservations, selector: SelectorSpec,
                           states: Mapping[str, State], serve: Callable[[list[str]], Awaitable[RemoteLease]],
                           may_serve: Callable[[str], bool] | None = None) -> RemoteLease:
    """The lease of the first of the selector's targets (in its strategy's order, each followed by
    its fallbacks) that serves the request: `serve` tries a list of models in order
    (fallbacks.first_that_serves). `may_serve` (the API key's) skips the models the request may
    not use. The lease names the selector; spillover's reservation is held until it is released."""
    targets, reserved = reservations.choose(selector, states)
    names = [n for n in dict.fromkeys(n for t in targets for n in chain(config, t))
             if may_serve is None or may_serve(n)]
    try:
        if not names:
            raise ModelUnavailable(f"selector {selector.id!r}: none of its targets may be used")
        lease = await serve(names)
    except BaseException:
        if reserved is not None:
            reservations.release(selector.id, reserved)
        raise
    lease.selector = selector.id
    if reserved is not None:
        target = lease.model if lease.model in selector.targets else reserved
        if target != reserved:
            reservations.move(selector.id, reserved, target)
        lease.on_release = lambda: reservations.release(selector.id, target)
    return lease
