"""Which host serves a request: a pure function of the agents' reports.

No Ray, no I/O, no logging: the front builds a `HostView` per live host from
the last report of its agent (plus the requests it has sent there and not
heard back about), and `choose_host` names one. The eviction decision inside
a host stays the core's: `plan_evictions` (router/core/scheduler.py) is asked
what each host would have to stop, so the front ranks hosts by exactly the
choice the host's own scheduler then makes.

Order of preference:
1. a host where the model is loaded: the one with the fewest requests in
   flight and queued for it (stickiness: a loaded model is never loaded twice);
   except that when every copy has `queue_threshold` requests or more and
   fewer than `replicas` copies exist, one more copy starts on a host where it
   fits without waiting for a busy model (a replica; one starts at a time);
2. a host where it is loading: the load in progress is joined (one load per
   model per host at a time, and no second load elsewhere while one runs);
3. a host where it fits: the fewest evictions, then the fewest busy ones (a
   busy victim is waited for), then the most memory left free, then the name
   (a stable order);
4. none: the reason names each host's obstacle.

`round_robin` is the naive baseline the benchmark compares with (and a
choice for users who want load spread whatever it costs in loads): hosts in
turn, skipping only those the model cannot fit on at all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from router.core.fallback import FILE_MISSING
from router.core.scheduler import Memory, ModelView, plan_evictions, too_big

LOADED, LOADING = "loaded", "loading"


@dataclass(frozen=True)
class Resident:
    """A model a host holds (loading, loaded or stopping), as its agent reported it."""

    state: str  # "loading" | "loaded" | "unloading"
    inflight: int = 0
    waiting: int = 0
    last_used: int = 0
    memory: Memory = field(default_factory=dict)
    group: str = "pool"
    pinned: bool = False
    keep: bool = False


@dataclass(frozen=True)
class HostView:
    """One live host: its budget, what it runs, and what the target would take there."""

    name: str
    models: Mapping[str, Resident] = field(default_factory=dict)
    budget: Memory | None = None
    figure: Memory = field(default_factory=dict)  # the target's figure on this host (its own estimate)
    models_max: int = 0
    pending: int = 0  # requests for the target sent here and not granted yet (the front's own count)
    serves: bool = True  # False: the target is not in this host's catalogue (or its file is missing here)


@dataclass(frozen=True)
class Placement:
    host: str
    why: str  # "loaded" | "loading" | "fits" | "evicts" | "replica" | "turn"
    evictions: tuple[str, ...] = ()


@dataclass(frozen=True)
class NoPlacement:
    reason: str
    # Why, as a fallback reads it (router/core/fallback.py): "too_big" (it fits on no host),
    # "file_missing" (its file is on no host), "unavailable" (no host is up: nothing falls back).
    cause: str = "unavailable"


TOO_BIG = "too_big"


def choose_host(model: str, group: str, hosts: Sequence[HostView], replicas: int = 1,
                queue_threshold: int = 4) -> Placement | NoPlacement:
    """The host for one request for `model` (of placement group `group`)."""
    if not hosts:
        return NoPlacement("no host is up in the cluster")
    serving = [h for h in hosts if h.serves]
    if not serving:
        return NoPlacement(f"no host can serve model {model!r} (its file is on none of them)", FILE_MISSING)
    copies = [h for h in serving if _state(h, model) in (LOADED, LOADING) or (h.pending and _state(h, model) is None)]
    loaded = [h for h in serving if _state(h, model) == LOADED]
    if loaded:
        best = min(loaded, key=lambda h: (_queued(h, model), h.name))
        if len(copies) == len(loaded) < replicas and _queued(best, model) >= queue_threshold:
            spare = [o for o in _options(model, group, serving) if o[1] == 0]  # waits for no busy model
            if spare:
                *_, name, chosen = min(spare)
                return Placement(name, "replica", chosen)
        return Placement(best.name, LOADED)
    if copies:
        best = min(copies, key=lambda h: (_queued(h, model), h.name))
        return Placement(best.name, LOADING)
    obstacles: list[str] = []
    options = _options(model, group, serving, obstacles)
    if not options:
        return NoPlacement(f"model {model!r} fits on no host ({'; '.join(obstacles)})", TOO_BIG)
    n, _, _, name, chosen = min(options)
    return Placement(name, "evicts" if n else "fits", chosen)


def round_robin(model: str, group: str, hosts: Sequence[HostView], turn: int) -> Placement | NoPlacement:
    """The `turn`-th host in name order among those `model` can fit on at all."""
    if not hosts:
        return NoPlacement("no host is up in the cluster")
    serving = [h for h in hosts if h.serves]
    if not serving:
        return NoPlacement(f"no host can serve model {model!r} (its file is on none of them)", FILE_MISSING)
    obstacles: list[str] = []
    able = sorted({o[3]: o for o in _options(model, group, serving, obstacles, holding_ok=True)}.values(),
                  key=lambda o: o[3])
    if not able:
        return NoPlacement(f"model {model!r} fits on no host ({'; '.join(obstacles)})", TOO_BIG)
    *_, name, chosen = able[turn % len(able)]
    return Placement(name, "turn", chosen)


Option = tuple[int, int, int, str, tuple[str, ...]]  # evictions, busy ones, -free after, host, victims


def _options(model: str, group: str, serving: Sequence[HostView], obstacles: list[str] | None = None,
             holding_ok: bool = False) -> list[Option]:
    """Every host `model` could be started on, with what starting it there costs."""
    options: list[Option] = []
    for h in serving:
        state = _state(h, model)
        if state is not None and not holding_ok:  # unloading there (or a copy already): not a new copy
            _note(obstacles, f"{h.name}: unloading it" if state not in (LOADED, LOADING) else "")
            continue
        if state in (LOADED, LOADING):
            options.append((0, 0, 0, h.name, ()))
            continue
        device = too_big(h.figure, h.budget)
        if device is not None:
            _note(obstacles, f"{h.name}: needs {_mib(h.figure.get(device, 0))} of {device}, "
                             f"budget {_mib((h.budget or {}).get(device, 0))}")
            continue
        victims = plan_evictions(model, group, _views(h, model), h.models_max, h.figure, h.budget)
        if victims is None:
            _note(obstacles, f"{h.name}: only pinned models could make room")
            continue
        busy = sum(1 for v in victims if h.models[v].inflight)  # a busy victim is waited for
        options.append((len(victims), busy, -_free_after(h, victims), h.name, tuple(victims)))
    return options


def _note(obstacles: list[str] | None, why: str) -> None:
    if obstacles is not None and why:
        obstacles.append(why)


def _state(h: HostView, model: str) -> str | None:
    r = h.models.get(model)
    return r.state if r is not None else None


def _queued(h: HostView, model: str) -> int:
    r = h.models.get(model)
    return (r.inflight + r.waiting if r is not None else 0) + h.pending


def _views(h: HostView, target: str) -> list[ModelView]:
    return [ModelView(name, r.group, r.last_used, r.inflight > 0, dict(r.memory), r.pinned, r.keep)
            for name, r in h.models.items() if name != target]


def _free_after(h: HostView, victims: Sequence[str]) -> int:
    """RAM left on `h` once the victims stopped and the target started (0 without a budget)."""
    if not h.budget:
        return 0
    used = sum(r.memory.get("ram", 0) for n, r in h.models.items() if n not in victims)
    return h.budget.get("ram", 0) - used - h.figure.get("ram", 0)


def _mib(n: int) -> str:
    return f"{n / 1024 ** 2:.0f} MiB"
