"""The scheduler: every decision about which model runs, and nothing else.

Longer than 300 lines because the policy is one state machine: its invariants
(one swap at a time, busy models never stopped, waiters served before a swap)
hold across every event handler, and splitting it would spread them over files.

It is a pure state machine. Events come in as method calls (a request
arrives, a load finished, a child stopped...) and each returns the effects
the caller must carry out (`Start`, `Stop`, `Grant`, `Reject`). It never
sleeps, spawns or does I/O, so tests drive it directly.

Policy:
- A request for a ready model is granted at once, unless that model is
  being drained for a swap or an unload (then it waits, so the drain ends).
- A request for a model that is not running queues; the oldest queued
  request picks the next model to swap in. Requests for a model already
  loading join that load.
- One swap at a time: victims (see `plan_evictions`) are stopped once they
  are idle, then the target starts. Two loads never race for memory.
- Every waiting request of a ready model is served before it is swapped
  out, because requests that arrived before the swap was decided are
  granted first. A model that is still busy when a swap away from it is
  decided also keeps taking new requests for `swap_patience` seconds: the
  rest of a burst rides along instead of forcing another swap soon after.
  Past that window new requests wait, so the swap is never starved.
"""

from __future__ import annotations

import enum
import itertools
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field


class State(enum.StrEnum):
    STOPPED = "unloaded"
    STARTING = "loading"
    READY = "loaded"
    STOPPING = "unloading"


@dataclass(frozen=True)
class Start:
    model: str


@dataclass(frozen=True)
class Stop:
    model: str
    reason: str  # "swap" | "unload" | "ttl" | "reload" | "shutdown"


@dataclass(frozen=True)
class Grant:
    ticket: int
    model: str


@dataclass(frozen=True)
class Reject:
    ticket: int
    model: str
    reason: str


Effect = Start | Stop | Grant | Reject


@dataclass
class ModelView:
    """What eviction needs to know about a running model."""

    name: str
    group: str
    last_used: int
    busy: bool


def plan_evictions(target: str, target_group: str, running: Iterable[ModelView], models_max: int) -> list[str]:
    """Which running models must stop before `target` can start.

    Models of another group always go (groups are exclusive). Within the
    target's group, the least recently used idle models go first until the
    total fits `models_max` (0 means no limit).
    """
    running = [m for m in running if m.name != target]
    victims = [m.name for m in running if m.group != target_group]
    mates = [m for m in running if m.group == target_group]
    if models_max > 0:
        excess = len(mates) + 1 - models_max
        if excess > 0:
            mates.sort(key=lambda m: (m.busy, m.last_used))
            victims += [m.name for m in mates[:excess]]
    return victims


@dataclass
class _Model:
    name: str
    group: str
    state: State = State.STOPPED
    inflight: set[int] = field(default_factory=set)
    last_used: int = 0
    idle_since: float = 0.0
    unload_reason: str | None = None


@dataclass
class _Swap:
    target: str
    victims: list[str]
    decided_at: float = 0.0
    started: bool = False


class Scheduler:
    def __init__(self, groups: dict[str, str], models_max: int, swap_patience: float = 0.0):
        self.models_max = models_max
        self.swap_patience = swap_patience
        self._now = 0.0
        self._models: dict[str, _Model] = {n: _Model(n, g) for n, g in groups.items()}
        self._waiting: OrderedDict[int, str] = OrderedDict()
        self._granted: dict[int, str] = {}
        self._preloads: set[int] = set()
        self._swap: _Swap | None = None
        self._clock = itertools.count(1)
        self._tickets = itertools.count(1)

    # ----- queries -------------------------------------------------------
    def state(self, model: str) -> State:
        return self._models[model].state

    def inflight(self, model: str) -> int:
        return len(self._models[model].inflight)

    def waiting(self, model: str | None = None) -> int:
        return sum(1 for m in self._waiting.values() if model is None or m == model)

    def running(self) -> list[str]:
        return [m.name for m in self._models.values() if m.state is not State.STOPPED]

    def last_used(self, model: str) -> int:
        return self._models[model].last_used

    def evictions_for(self, model: str) -> list[str]:
        """The models that stop before `model` starts: those of the swap in
        progress towards it, else those a swap decided now would pick."""
        if self._swap is not None and self._swap.target == model:
            return list(self._swap.victims)
        return plan_evictions(model, self._models[model].group, self._views(), self.models_max)

    def _views(self) -> list[ModelView]:
        return [ModelView(o.name, o.group, o.last_used, bool(o.inflight))
                for o in self._models.values() if o.state is not State.STOPPED]

    @property
    def swap_target(self) -> str | None:
        return self._swap.target if self._swap else None

    def expired(self, now: float, ttls: dict[str, float]) -> list[str]:
        """Ready, idle models whose idle time reached their TTL."""
        out = []
        for name, ttl in ttls.items():
            m = self._models.get(name)
            if (m and ttl > 0 and m.state is State.READY and not m.inflight and m.unload_reason is None
                    and self.waiting(name) == 0 and now - m.idle_since >= ttl):
                out.append(name)
        return out

    # ----- events --------------------------------------------------------
    def new_ticket(self) -> int:
        return next(self._tickets)

    def submit(self, ticket: int, model: str, now: float | None = None) -> list[Effect]:
        """A request wants `model`."""
        self._tick(now)
        self._waiting[ticket] = model
        return self._pump()

    def _tick(self, now: float | None) -> None:
        if now is not None:
            self._now = max(self._now, now)

    def load(self, model: str) -> list[Effect]:
        """Load without a request (preload, /models/load)."""
        ticket = self.new_ticket()
        self._preloads.add(ticket)
        return self.submit(ticket, model)

    def cancel(self, ticket: int) -> list[Effect]:
        """A waiting request went away before it was granted."""
        self._waiting.pop(ticket, None)
        self._preloads.discard(ticket)
        return self._pump()

    def release(self, ticket: int, now: float = 0.0) -> list[Effect]:
        """A granted request finished."""
        self._tick(now)
        model = self._granted.pop(ticket, None)
        if model is None:
            return self.cancel(ticket)
        m = self._models.get(model)
        if m and ticket in m.inflight:
            m.inflight.discard(ticket)
            m.last_used = next(self._clock)
            if not m.inflight:
                m.idle_since = now
        return self._pump()

    def loaded(self, model: str, now: float = 0.0) -> list[Effect]:
        self._tick(now)
        m = self._models[model]
        m.state = State.READY
        m.last_used = next(self._clock)
        m.idle_since = now
        if self._swap and self._swap.target == model:
            self._swap = None
        return self._pump()

    def load_failed(self, model: str, reason: str) -> list[Effect]:
        m = self._models[model]
        m.state = State.STOPPED
        effects: list[Effect] = []
        for ticket, wanted in list(self._waiting.items()):
            if wanted == model:
                del self._waiting[ticket]
                if ticket not in self._preloads:
                    effects.append(Reject(ticket, model, reason))
                self._preloads.discard(ticket)
        if self._swap and self._swap.target == model:
            self._swap = None
        return effects + self._pump()

    def stopped(self, model: str) -> list[Effect]:
        """The child is gone: stopped as asked, or crashed."""
        m = self._models.get(model)
        if m is None:
            return self._pump()
        if m.state is State.STARTING:
            return self.load_failed(model, f"model {model!r} stopped while loading")
        m.state = State.STOPPED
        m.unload_reason = None
        for ticket in m.inflight:
            self._granted.pop(ticket, None)
        m.inflight.clear()
        return self._pump()

    def unload(self, model: str, reason: str = "unload") -> list[Effect]:
        """Stop `model` once idle; requests for it wait meanwhile."""
        m = self._models[model]
        if m.state in (State.READY, State.STARTING):
            m.unload_reason = reason
        return self._pump()

    def set_models(self, groups: dict[str, str], models_max: int | None = None) -> list[Effect]:
        """Apply a new catalogue: new models appear, removed ones stop when idle."""
        if models_max is not None:
            self.models_max = models_max
        effects: list[Effect] = []
        for name, group in groups.items():
            if name in self._models:
                self._models[name].group = group
            else:
                self._models[name] = _Model(name, group)
        for name in list(self._models):
            if name in groups:
                continue
            for ticket, wanted in list(self._waiting.items()):
                if wanted == name:
                    del self._waiting[ticket]
                    if ticket not in self._preloads:
                        effects.append(Reject(ticket, name, f"model {name!r} was removed"))
            if self._swap and self._swap.target == name and not self._swap.started:
                self._swap = None
            if self._models[name].state is State.STOPPED:
                del self._models[name]
            else:
                self._models[name].unload_reason = "reload"
        return effects + self._pump()

    def forget_removed(self, groups: dict[str, str]) -> None:
        """Drop stopped models that are no longer in the catalogue."""
        for name in list(self._models):
            if name not in groups and self._models[name].state is State.STOPPED:
                del self._models[name]

    # ----- the decision loop ---------------------------------------------
    def _draining(self, m: _Model) -> bool:
        """Whether new requests for `m` must wait because it is about to stop."""
        if m.unload_reason is not None:
            return True
        swap = self._swap
        if not swap or m.name not in swap.victims:
            return False
        # Busy anyway: let the rest of a burst ride along for a while.
        return not (m.inflight and self._now - swap.decided_at < self.swap_patience)

    def _pump(self) -> list[Effect]:
        effects: list[Effect] = []
        # 1. Serve what can be served now.
        for ticket, model in list(self._waiting.items()):
            m = self._models.get(model)
            if m and m.state is State.READY and not self._draining(m):
                del self._waiting[ticket]
                if ticket in self._preloads:
                    self._preloads.discard(ticket)
                    continue
                m.inflight.add(ticket)
                self._granted[ticket] = model
                effects.append(Grant(ticket, model))
        # 2. Stop idle models that were asked to unload (outside a swap).
        for m in self._models.values():
            if m.unload_reason and m.state is State.READY and not m.inflight:
                m.state = State.STOPPING
                effects.append(Stop(m.name, m.unload_reason))
        # 3. Decide the next swap from the oldest request that cannot be served.
        if self._swap is None:
            for model in self._waiting.values():
                m = self._models.get(model)
                if m and m.state is not State.READY:
                    self._swap = _Swap(model, plan_evictions(model, m.group, self._views(), self.models_max),
                                       decided_at=self._now)
                    break
        # 4. Advance the swap: stop idle victims, start the target when all are gone.
        swap = self._swap
        if swap and not swap.started:
            for name in swap.victims:
                v = self._models.get(name)
                if v and v.state is State.READY and not v.inflight:
                    v.state = State.STOPPING
                    effects.append(Stop(name, "swap"))
            target = self._models[swap.target]
            victims_gone = all(self._models[n].state is State.STOPPED
                               for n in swap.victims if n in self._models)
            if victims_gone and target.state is State.STOPPED:
                target.state = State.STARTING
                target.unload_reason = None
                swap.started = True
                effects.append(Start(swap.target))
        return effects
