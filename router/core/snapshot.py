"""One model's state as every view shows it: the model list, the admin
status and the dashboard all render from `snapshot()`, so none of them reads
the manager's internals and they can never disagree."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from router.backend.memory_measure import rss_bytes
from router.catalogue.config import ModelSpec
from router.core.manager import ModelManager
from router.core.scheduler import State
from router.core.status import KVStatus


@dataclass(frozen=True)
class ModelSnapshot:
    name: str
    spec: ModelSpec | None  # None: a child still running for a model removed from the catalogue
    state: State
    pid: int | None  # of a child that has not exited
    port: int | None
    started_at: float | None
    ready_at: float | None
    progress: float | None
    argv: tuple[str, ...] | None
    ready_info: dict[str, Any]
    in_flight: int
    waiting: int
    loads: int
    last_load_s: float | None
    last_error: str | None
    exit_code: int | None
    failed: bool  # the last load or run failed, and it is not running
    kv: KVStatus | None  # KV persistence, when it is on for this model
    missing: bool  # its file is gone (found at the last rescan)
    memory: dict[str, Any]  # estimate (parts and devices), measured, and the figure placement uses
    # A model served at its `url` (never started here): its server and last health check (core/external.py).
    external: dict[str, Any] | None = None

    @property
    def rss_bytes(self) -> int | None:
        """Read on demand: the operating system's figure, now."""
        return rss_bytes(self.pid)

    @property
    def uptime_s(self) -> float | None:
        return round(time.time() - self.started_at, 3) if self.started_at is not None else None


def listed_status(state: State) -> str:
    """The status llama.cpp's model list gives a model (`GET /models`, `/v1/models`, the
    cluster's list), which has no `unloading`: a model reads `unloaded` once its process has
    exited, as in llama.cpp, and until then `loaded`. A swap's target reads `loaded` only
    after the models it replaces read `unloaded` (Scheduler.loaded)."""
    return State.READY.value if state is State.STOPPING else state.value


def snapshot(manager: ModelManager, name: str) -> ModelSnapshot:
    child = manager.children.get(name)
    state = manager.state(name)
    st = manager.status.get(name)
    sched = manager.scheduler
    try:
        in_flight = sched.inflight(name)
    except KeyError:  # not in the scheduler: never loaded since a reload, or an external model
        in_flight = manager.external.in_flight(name)
    return ModelSnapshot(
        name=name,
        spec=manager.config.models.get(name),
        state=state,
        pid=child.pid if child is not None and child.returncode is None else None,
        port=child.port if child is not None else None,
        started_at=child.started_at if child is not None else None,
        ready_at=child.ready_at if child is not None else None,
        progress=child.progress if child is not None else None,
        argv=tuple(child.plan.argv) if child is not None else None,
        ready_info=dict(child.ready_info) if child is not None and state is State.READY else {},
        in_flight=in_flight,
        waiting=sched.waiting(name),
        loads=st.loads if st else 0,
        last_load_s=st.last_load_s if st else None,
        last_error=st.last_error if st else None,
        exit_code=st.exit_code if st else None,
        failed=bool(st and st.failed and state is State.STOPPED),
        kv=st.kv if st is not None and st.kv.enabled else None,
        missing=name in manager.config.missing,
        memory=_memory(manager, name),
        external=manager.external.view(name),
    )


def _memory(manager: ModelManager, name: str) -> dict[str, Any]:
    book = manager.memory
    if book.budget is not None and name not in book.estimates:
        manager.place(name)  # an estimate for a model not loaded yet
    est = book.estimates.get(name)
    measured = book.measured(name)
    figure = manager.scheduler.memory(name)
    return {
        "estimate": {**est.parts(), "devices": dict(est.devices)} if est is not None else None,
        "measured": {"devices": measured["devices"], "at": measured.get("at")} if measured else None,
        "figure": figure or None,
    }


def snapshots(manager: ModelManager, *, include_removed: bool = False) -> list[ModelSnapshot]:
    """Every catalogued model in catalogue order; with `include_removed`, also
    children still running for models a reload removed."""
    names = list(manager.config.models)
    if include_removed:
        names += [n for n in manager.children if n not in manager.config.models]
    return [snapshot(manager, n) for n in names]
