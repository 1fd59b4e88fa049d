"""A model's life beyond single requests: the start-up model, idle unloads,
and the memory each running child grows to."""

from __future__ import annotations

import asyncio
import logging
import time

from router.core.manager import ModelManager
from router.core.scheduler import State

log = logging.getLogger("router.lifecycle")

TTL_TICK_MAX_S = 1.0


class StartupError(RuntimeError):
    """router.startup_model could not be loaded; the router does not start."""


async def load_startup_model(manager: ModelManager) -> None:
    """Load router.startup_model and wait for it, so the port opens with it ready."""
    name = manager.config.router.startup_model
    if not name:
        return
    spec = manager.config.resolve(name)
    if spec is None:
        raise StartupError(f"router.startup_model {name!r} is not in the catalogue")
    log.info("[%s] loading the start-up model before opening the port", spec.name)
    manager.load(spec.name)
    timeout = manager.config.router.health_timeout + manager.config.router.stop_timeout + 5
    # Loading -> loaded, or loading -> unloaded (failed): wait until it leaves STARTING.
    await manager.wait_state(spec.name, {State.STARTING}, 5)
    await manager.wait_state(spec.name, {State.READY, State.STOPPED}, timeout)
    if manager.state(spec.name) is not State.READY:
        st = manager.status.get(spec.name)
        reason = (st.last_error if st else None) or "it did not become ready"
        raise StartupError(f"start-up model {spec.name!r} failed to load: {reason}")


def preload_models(manager: ModelManager) -> None:
    """router.preload (a preset's load-on-startup, llama-swap's hooks.on_startup.preload):
    loaded in the background once the port is open, as the scheduler allows."""
    for name in manager.config.router.preload:
        spec = manager.config.resolve(name)
        if spec is None:
            log.warning("router.preload: %r is not in the catalogue", name)
        elif manager.state(spec.name) is State.STOPPED:
            log.info("[%s] preloading", spec.name)
            manager.load(spec.name)


def ttls(manager: ModelManager) -> dict[str, float]:
    """Each model's idle limit: a request's keep_alive, else its own ttl, else the
    global one (0 = never)."""
    default = manager.config.router.ttl
    out = {name: spec.ttl if spec.ttl is not None else default for name, spec in manager.config.models.items()}
    out.update((n, t) for n, t in manager.ttl_overrides.items() if n in out)
    return out


async def unload_idle(manager: ModelManager) -> None:
    """Runs for the router's life: unload models idle past their ttl (never busy ones)."""
    while True:
        limits = {n: t for n, t in ttls(manager).items() if t > 0}
        tick = min([TTL_TICK_MAX_S, *(t / 4 for t in limits.values())])
        await asyncio.sleep(max(tick, 0.05))
        manager.sample_memory()  # a child grown past its figure: placement learns it
        for name in manager.scheduler.expired(time.monotonic(), limits):
            log.info("[%s] idle for %g s: unloading (ttl)", name, limits[name])
            manager.unload(name, "ttl")
