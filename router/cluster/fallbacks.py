"""Fallbacks across hosts: a request whose model no host can take is served by
the first of the model's `fallbacks` that can (router/core/fallback.py: the
same causes, the same order, as on one host).

Each host's own manager tries a model's fallbacks when the model cannot serve
a request there (its load failed, its queue is full, the request's deadline
passed while it waited): the grant says which model served and why. What is
left to the front is a model that no host can take at all - too big for every
host's budget, or its file on none of them (placement's NoPlacement). Then its
fallbacks are placed in turn, each by its own placement rules. A fallback that
a host refused was followed there by its own fallbacks, so those are not sent
again; past the request's deadline only a fallback loaded somewhere is tried
(a load for a request that has stopped waiting would be a swap for nobody).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from router.catalogue.config import Config
from router.cluster.host import RemoteLease
from router.core.fallback import chain, falls_back
from router.core.manager import ModelUnavailable

log = logging.getLogger("router.cluster")


class Unplaced(ModelUnavailable):
    """No host can take the model at all (placement's NoPlacement); `cause` says why."""


async def first_that_serves(config: Config, model: str, acquire: Callable[[str], Awaitable[RemoteLease]],
                            loaded: Callable[[str], bool], names: list[str] | None = None) -> RemoteLease:
    """The lease of the first of `model` and its fallbacks that serves the request: `acquire`
    places one model and waits for its lease, `loaded` says whether a model is loaded on some
    host. `names`: the models to try, in order (default: `model`'s chain; a selector's targets,
    each followed by its fallbacks: cluster/selectors.py). When none serves, the error is the
    one the first gave."""
    first: ModelUnavailable | None = None
    sent: set[str] = set()  # the models some host or the placement already refused
    late = False  # the request's deadline passed while it waited for one of them
    for name in chain(config, model) if names is None else names:
        if name in sent or (late and not loaded(name)):
            continue
        try:
            lease = await acquire(name)
        except ModelUnavailable as e:
            if not falls_back(e.cause):
                raise
            first, late = first or e, late or e.expired
            sent.update([name] if isinstance(e, Unplaced) else chain(config, name))
            continue
        if first is not None:
            lease.fell_from, lease.fallback_reason = model, first.cause
            log.info("[%s] served by its fallback %s on %s (%s)", model, lease.model, lease.host.name, first.cause)
        return lease
    assert first is not None
    raise first
