"""Selectors at the cluster front: a virtual model id served by one of its targets
(router/core/selector.py; docs/scheduling.md#selectors), chosen with every host's state.

A target's state across the cluster is its best on any host: loaded on one host is
loaded (warm prefers it, and placement sends the request to that host), else
loading on one is loading, else it is stopped (a target unloading on one host can
be placed on another). Spillover counts the requests the front has in flight
through the selector, with the same `Reservations` as one host. The targets are
then tried in the strategy's order like a model and its fallbacks, by the same
`through_selector` as one host's (router/core/manager.py) over the front's
fallback loop (cluster/fallbacks.py): a target no host can place, or whose host
cannot serve it, hands the request to the next.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from router.core.scheduler import State

_BEST = (("loaded", State.READY), ("loading", State.STARTING))


def cluster_states(reports: Iterable[Mapping[str, Any]], names: Iterable[str]) -> dict[str, State]:
    """Each of `names`' state as a selector's strategy reads it, from the hosts' last reports:
    READY when loaded on some host, else STARTING when loading on one, else STOPPED."""
    held: dict[str, set[str]] = {}
    for report in reports:
        for name, model in report.get("models", {}).items():
            held.setdefault(name, set()).add(model.get("state"))
    return {n: next((s for value, s in _BEST if value in held.get(n, ())), State.STOPPED) for n in names}
