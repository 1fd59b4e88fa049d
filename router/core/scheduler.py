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
- A request for a model that is not running queues; the first queued
  request (in the queue discipline's order, `queue_order`: higher priority
  first, then tenants take turns, then first come first served) picks the
  next model to swap in. Requests for a model already loading join that load.
- One swap at a time: victims (see `plan_evictions`) are stopped once they
  are idle, then the target starts. Two loads never race for memory. Every
  request in flight makes its model busy, light ones (tokenize, props...)
  too. A swap that nobody waits for any more is called off before it starts.
  A target that starts while its victims exit is READY once they are gone.
- Every waiting request of a ready model is served before it is swapped
  out, because requests that arrived before the swap was decided are
  granted first. A model that is still busy when a swap away from it is
  decided also keeps taking new requests for `swap_patience` seconds: the
  rest of a burst rides along instead of forcing another swap soon after.
  Past that window new requests wait, so the swap is never starved.
- Priorities: "arrived before the swap" means ahead of the request the swap
  was decided for (`served_before_swap`): a lower priority waits for the swap
  back, and rides along within `swap_patience` only at the same priority. A
  swap that has not started yet yields to waiting work of a higher priority.
- Fair share: `swap_patience` is for one tenant's burst. Another tenant's
  request whose turn comes after the swap's never rides along: a swap decided
  for a tenant's turn waits only for the requests in flight and the turns
  before it.
- A waiting request may carry a deadline; `expire` refuses those past it.
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field

from router.core.queue_order import DEFAULT_PRIORITY, QueuePosition, Waiter, WaitQueue, served_before_swap


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
    busy: bool = False  # the model's queue is full: try again later (429), not a failure
    expired: bool = False  # it waited past its deadline: try again later (503 with Retry-After)
    # Why, for a fallback (router/core/fallback.py): "too_big", "load_failed", "queue_full",
    # "deadline", or "unavailable" (removed, shutting down).
    cause: str = field(default="unavailable", compare=False)


Effect = Start | Stop | Grant | Reject


Memory = dict[str, int]  # bytes per device: "ram", "gpu0", ...


@dataclass
class ModelView:
    """What eviction needs to know about a running model."""

    name: str
    group: str
    last_used: int
    busy: bool
    memory: Memory = field(default_factory=dict)
    pinned: bool = False
    keep: bool = False  # asked to stay loaded (keep_alive -1): evicted after every other candidate


def fits(target_memory: Memory, staying: Iterable[ModelView], budget: Memory | None) -> bool:
    """Whether the target's figure fits every device it uses next to the models that stay."""
    if not budget:
        return True
    staying = list(staying)
    for device, cap in budget.items():
        need = target_memory.get(device, 0)
        if need and need + sum(m.memory.get(device, 0) for m in staying) > cap:
            return False
    return True


def too_big(target_memory: Memory, budget: Memory | None) -> str | None:
    """The device whose whole budget is smaller than the target's figure, if any."""
    for device, cap in (budget or {}).items():
        if target_memory.get(device, 0) > cap:
            return device
    return None


def plan_evictions(target: str, target_group: str, running: Iterable[ModelView], models_max: int,
                   target_memory: Memory | None = None, budget: Memory | None = None) -> list[str] | None:
    """Which running models must stop before `target` can start; None when no
    choice of stops makes room (pinned models are never stopped).

    Models of another group always go (groups are exclusive). Within the
    target's group (models without one share a pool), models stop until the
    count fits `models_max` (0: no limit) and the target's memory figure fits
    every device's budget: one model when one is enough (the coldest such),
    else the least recently used first; idle before busy (a busy victim is
    waited for, never cut off), and models asked to stay loaded last.
    """
    running = [m for m in running if m.name != target]
    victims = [m for m in running if m.group != target_group]
    if any(m.pinned for m in victims):
        return None
    staying = [m for m in running if m.group == target_group]
    need = target_memory or {}

    def room(stay: list[ModelView]) -> bool:
        return (models_max <= 0 or len(stay) + 1 <= models_max) and fits(need, stay, budget)

    candidates = sorted((m for m in staying if not m.pinned), key=lambda m: (m.busy, m.keep, m.last_used))
    if not room(staying):
        single = next((c for c in candidates if not c.busy and room([m for m in staying if m is not c])), None)
        if single is not None:
            staying.remove(single)
            victims.append(single)
        while not room(staying):
            if not candidates:
                return None
            c = candidates.pop(0)
            if c in staying:
                staying.remove(c)
                victims.append(c)
    return [m.name for m in victims]


@dataclass
class _Model:
    name: str
    group: str
    state: State = State.STOPPED
    inflight: set[int] = field(default_factory=set)
    last_used: int = 0
    idle_since: float = 0.0
    unload_reason: str | None = None
    memory: Memory = field(default_factory=dict)
    pinned: bool = False
    keep: bool = False
    limit: int = 0  # requests in flight at once (0: no limit)
    max_queue: int = 0  # requests waiting at once (0: no limit)
    retried: bool = False  # a load that ran out of memory was retried once
    heavy: set[int] = field(default_factory=set)  # in flight and counted against `limit`


@dataclass
class _Swap:
    target: str
    victims: list[str]
    decided_at: float = 0.0
    started: bool = False
    marker: int = 0  # the newest ticket when the swap was decided: older ones are served first
    owed: set[int] = field(default_factory=set)  # tickets a busy victim took within swap_patience
    up: bool = False  # the target's child is ready; it waits for its victims to exit
    head: Waiter | None = None  # the request it was decided for (None: serve every older one first)


class Scheduler:
    def __init__(self, groups: dict[str, str], models_max: int, swap_patience: float = 0.0,
                 budget: Memory | None = None):
        self.models_max = models_max
        self.swap_patience = swap_patience
        self.budget = budget or None
        self._now = 0.0
        self._models: dict[str, _Model] = {n: _Model(n, g) for n, g in groups.items()}
        self._queue = WaitQueue()
        self._granted: dict[int, str] = {}
        self._preloads: set[int] = set()
        self._light: set[int] = set()  # tickets that never count against a concurrency limit
        self._swap: _Swap | None = None
        self._clock = itertools.count(1)
        self._tickets = itertools.count(1)

    # ----- queries -------------------------------------------------------
    def state(self, model: str) -> State:
        return self._models[model].state

    def inflight(self, model: str) -> int:
        return len(self._models[model].inflight)

    def waiting(self, model: str | None = None) -> int:
        return self._queue.count(model)

    def full(self, model: str) -> bool:
        """Whether every slot of `model` is taken (concurrency_limit): a new request would wait."""
        m = self._models[model]
        return bool(m.limit) and len(m.heavy) >= m.limit

    def queue_position(self, ticket: int) -> QueuePosition | None:
        """Where a waiting request stands: its place in its model's queue (1: next) and how many
        waiting requests, for any model, go before it. None once it is no longer waiting."""
        return self._queue.position(ticket)

    def next_deadline(self) -> float | None:
        """The earliest deadline of a waiting request: when `expire` has work next."""
        return self._queue.next_deadline()

    def running(self) -> list[str]:
        return [m.name for m in self._models.values() if m.state is not State.STOPPED]

    def last_used(self, model: str) -> int:
        return self._models[model].last_used

    def idle_for(self, model: str, now: float) -> float | None:
        """How long a ready `model` has had no request in flight (None: busy, or not ready),
        what its idle TTL counts against (Ollama's /api/ps shows when it expires)."""
        m = self._models.get(model)
        if m is None or m.state is not State.READY or m.inflight:
            return None
        return max(0.0, now - m.idle_since)

    def evictions_for(self, model: str) -> list[str]:
        """The models that stop before `model` starts: those of the swap in
        progress towards it, else those a swap decided now would pick."""
        if self._swap is not None and self._swap.target == model:
            return list(self._swap.victims)
        m = self._models[model]
        return plan_evictions(model, m.group, self._views(), self.models_max, m.memory, self.budget) or []

    def _views(self) -> list[ModelView]:
        return [ModelView(o.name, o.group, o.last_used, bool(o.inflight), o.memory, o.pinned, o.keep)
                for o in self._models.values() if o.state is not State.STOPPED]

    def memory(self, model: str) -> Memory:
        """The figure placement uses for `model` (empty when not known yet)."""
        m = self._models.get(model)
        return dict(m.memory) if m is not None else {}

    def used(self) -> Memory:
        """The figures of every model holding memory (loading, loaded, or still stopping)."""
        total: Memory = {}
        for o in self._models.values():
            if o.state is not State.STOPPED:
                for device, n in o.memory.items():
                    total[device] = total.get(device, 0) + n
        return total

    # ----- what placement knows ------------------------------------------
    def set_memory(self, model: str, figure: Memory) -> None:
        """The memory `model` takes (an estimate, or what its last load measured)."""
        if model in self._models:
            self._models[model].memory = dict(figure)

    def set_budget(self, budget: Memory | None) -> list[Effect]:
        self.budget = budget or None
        return self._pump()

    def set_pinned(self, pinned: Iterable[str]) -> None:
        names = set(pinned)
        for m in self._models.values():
            m.pinned = m.name in names

    def set_limits(self, limits: dict[str, tuple[int, int]]) -> None:
        """(concurrency_limit, max_queue) per model."""
        for name, (limit, max_queue) in limits.items():
            if name in self._models:
                self._models[name].limit, self._models[name].max_queue = limit, max_queue

    def set_keep(self, model: str, keep: bool) -> None:
        """keep_alive -1: evicted after every other candidate."""
        if model in self._models:
            self._models[model].keep = keep

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

    def submit(self, ticket: int, model: str, now: float | None = None, light: bool = False,
               priority: int = DEFAULT_PRIORITY, tenant: str | None = None,
               deadline: float | None = None) -> list[Effect]:
        """A request wants `model`; a `light` one (tokenize, props...) takes no slot
        of the child, so no concurrency limit holds it back. `priority` and `tenant`
        (the API key's identity; None: unauthenticated) place it in the queue
        (`queue_order`); past `deadline` (the caller's monotonic clock) `expire` refuses it."""
        if light and self.take_light(ticket, model, now):
            return [Grant(ticket, model)]
        self._tick(now)
        m = self._models.get(model)
        if light:
            self._light.add(ticket)
        device = too_big(m.memory, self.budget) if m is not None and m.state is State.STOPPED else None
        if device is not None and m is not None:
            return [Reject(ticket, model, self._too_big_reason(m, device), cause="too_big")]
        if m is not None and m.max_queue and self.waiting(model) >= m.max_queue:
            return [Reject(ticket, model, f"model {model!r} has {m.max_queue} requests waiting already "
                                          "(max_queue); try again shortly", busy=True, cause="queue_full")]
        w = self._queue.add(ticket, model, priority, tenant, self._now, deadline)
        swap = self._swap
        if swap is not None and m is not None and model in swap.victims and self._rides_along(m, swap, w):
            swap.owed.add(ticket)  # its model serves this one before stopping
        return self._pump()

    def take_light(self, ticket: int, model: str, now: float | None = None) -> bool:
        """Grant a light request at once when its model serves it now whatever waits: it is
        ready, and no swap or unload holds it back (a light request takes no slot). True when
        granted (the ticket is in flight, released as any); False: submit it as usual."""
        m = self._models.get(model)
        if m is None or m.state is not State.READY or self._swap is not None or m.unload_reason is not None:
            return False
        self._tick(now)
        m.inflight.add(ticket)
        self._granted[ticket] = model
        return True

    def _rides_along(self, m: _Model, swap: _Swap, w: Waiter) -> bool:
        """Does a victim of `swap` serve a request that arrives now before it stops? Within
        swap_patience while busy, at the priority of the swap when its turn comes before the
        swap's (its own tenant's burst); above that priority, while the victim runs."""
        if swap.head is None:
            return not self._draining(m)
        if not served_before_swap(w, swap.head):
            return False  # a lower priority, or another tenant whose turn comes after the swap's
        if w.priority == swap.head.priority:
            return not self._draining(m)
        return m.state is State.READY and m.unload_reason is None

    def _too_big_reason(self, m: _Model, device: str) -> str:
        budget = self.budget or {}
        return (f"model {m.name!r} needs {_gib(m.memory.get(device, 0))} of {device} but the {device} budget "
                f"is {_gib(budget.get(device, 0))} (router.memory): it can never be loaded here")

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
        self._queue.remove(ticket)
        self._preloads.discard(ticket)
        self._light.discard(ticket)
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
            m.heavy.discard(ticket)
            m.last_used = next(self._clock)
            if not m.inflight:
                m.idle_since = now
        return self._pump()

    def loaded(self, model: str, now: float = 0.0) -> list[Effect]:
        """The child is ready. The target of a swap that started next to its exiting
        victims (`_overlap_exit`) becomes READY only once they are gone, so a model never
        reads loaded while one it replaced still does (llama.cpp's router loads only after
        the exit)."""
        self._tick(now)
        swap = self._swap
        if swap is not None and swap.target == model and not self._victims_gone(swap):
            swap.up = True
            return self._pump()
        return self._ready(model, now)

    def _ready(self, model: str, now: float) -> list[Effect]:
        m = self._models[model]
        m.state = State.READY
        m.retried = False
        m.last_used = next(self._clock)
        m.idle_since = now
        if self._swap and self._swap.target == model:
            self._swap = None
        return self._pump()

    def load_failed(self, model: str, reason: str, out_of_memory: bool = False) -> list[Effect]:
        """A load failed. Out of memory (the figure was too low), the first time:
        stop one more idle model and try again, the waiters still waiting."""
        m = self._models[model]
        m.state = State.STOPPED
        if out_of_memory and not m.retried:
            victim = self._one_more_victim(model)
            if victim is not None:
                m.retried = True
                victim.state = State.STOPPING
                self._swap = _Swap(model, [victim.name], decided_at=self._now,
                                   marker=max(self._queue.tickets(), default=0))
                return [Stop(victim.name, "memory"), *self._pump()]
        m.retried = False
        effects = self._reject_waiting(model, reason, "load_failed")
        if self._swap and self._swap.target == model:
            self._swap = None
        return effects + self._pump()

    def _one_more_victim(self, target: str) -> _Model | None:
        idle = [o for o in self._models.values()
                if o.name != target and o.state is State.READY and not o.inflight and not o.pinned]
        return min(idle, key=lambda o: (o.keep, o.last_used), default=None)

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
        m.heavy.clear()
        swap = self._swap
        if swap is not None and swap.up and self._victims_gone(swap):
            return self._ready(swap.target, self._now)  # its last victim is gone
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
            effects += self._reject_waiting(name, f"model {name!r} was removed")
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

    def _held(self, w: Waiter, m: _Model) -> bool:
        """Whether ready `m` must not serve `w` now: `m` is about to stop and owes `w` nothing.
        Patience or not, a victim holds what comes after the swap's request in queue order
        (a lower priority, or another tenant's later turn): swap_patience lets one tenant's
        burst ride along, never delays another tenant's turn."""
        swap = self._swap
        after = (swap is not None and swap.head is not None and m.name in swap.victims
                 and not served_before_swap(w, swap.head))
        return (after or self._draining(m)) and not self._arrived_before_swap(w, m)

    def _arrived_before_swap(self, w: Waiter, m: _Model) -> bool:
        swap = self._swap
        if m.unload_reason is not None or swap is None or m.name not in swap.victims:
            return False
        if w.ticket in swap.owed:
            return True
        return w.ticket <= swap.marker and (swap.head is None or served_before_swap(w, swap.head))

    def _owed(self, m: _Model) -> bool:
        """Requests that arrived before the swap away from `m` and still wait for it."""
        return any(w.model == m.name and self._arrived_before_swap(w, m) for w in self._queue.in_order())

    def _reject_waiting(self, model: str, reason: str, cause: str = "unavailable") -> list[Effect]:
        out: list[Effect] = []
        for w in self._queue.in_order():
            if w.model == model:
                out += self._refuse(w, reason, cause=cause)
        return out

    def _refuse(self, w: Waiter, reason: str, expired: bool = False, cause: str = "unavailable") -> list[Effect]:
        self._queue.remove(w.ticket)
        self._light.discard(w.ticket)
        if w.ticket in self._preloads:
            self._preloads.discard(w.ticket)
            return []
        return [Reject(w.ticket, w.model, reason, expired=expired, cause="deadline" if expired else cause)]

    def expire(self, now: float) -> list[Effect]:
        """Waiting requests whose deadline has come give up: each is refused with why it still waited."""
        self._tick(now)
        effects: list[Effect] = []
        for w in self._queue.past_deadline(now):
            effects += self._refuse(w, f"waited {now - w.since:.0f} s for model {w.model!r} (its deadline); "
                                       f"{self._why_waiting(w)}", expired=True)
        return effects + self._pump() if effects else effects

    def _why_waiting(self, w: Waiter) -> str:
        m = self._models.get(w.model)
        swap = self._swap
        if m is None:
            return "the model is gone"
        if m.state is State.STARTING:
            return "it was still loading"
        if swap is not None and swap.target == w.model:
            busy = [n for n in swap.victims if n in self._models and self._models[n].state is not State.STOPPED]
            return f"it waited for {', '.join(map(repr, busy))} to stop first" if busy else "it was about to load"
        if m.unload_reason is not None:
            return f"it was being unloaded ({m.unload_reason})"
        if swap is not None and m.name in swap.victims:
            return f"it was being swapped out for {swap.target!r}"
        if m.state is State.READY:
            at = self._queue.position(w.ticket)
            return (f"all {m.limit} of its slots were busy (concurrency_limit), "
                    f"{at.position - 1 if at else 0} requests ahead of this one")
        if swap is not None:
            return f"the swap to {swap.target!r} came first (one swap at a time)"
        return f"it was {m.state.value}"

    def _no_room_reason(self, m: _Model) -> str:
        pinned = sorted(o.name for o in self._models.values() if o.pinned and o.state is not State.STOPPED)
        need = ", ".join(f"{_gib(n)} of {d}" for d, n in m.memory.items()) or "a slot"
        budget = ", ".join(f"{_gib(n)} of {d}" for d, n in (self.budget or {}).items())
        return (f"model {m.name!r} needs {need}; the models that may not be stopped (pinned: "
                f"{', '.join(pinned) or 'none'}) leave too little of the budget ({budget or 'models_max'})")

    def _victims_gone(self, swap: _Swap) -> bool:
        return all(self._models[n].state is State.STOPPED for n in swap.victims if n in self._models)

    def _overlap_exit(self, swap: _Swap) -> bool:
        """May the target start while its victims are still exiting? Only when each was told
        to stop already and the memory budget holds the target's figure next to everything
        still in memory, the exiting victims included (a victim's exit takes tens of ms:
        the models_max swap of a box with room to spare need not wait for it). Without a
        budget, or without a figure for the target, nothing says it is safe: it waits."""
        target = self._models[swap.target]
        if not self.budget or not target.memory or not swap.victims:
            return False
        if any(self._models[n].state is not State.STOPPING for n in swap.victims if n in self._models):
            return False
        holding = [ModelView(o.name, o.group, o.last_used, False, o.memory) for o in self._models.values()
                   if o.state is not State.STOPPED and o is not target]
        return all(device in self.budget for device in target.memory) and fits(target.memory, holding, self.budget)

    def _pump(self) -> list[Effect]:
        effects: list[Effect] = []
        # 1. Serve what can be served now: requests that arrived before a swap away from
        #    their model was decided are served by it first, as its slots allow.
        for w in self._queue.in_order():
            ticket, model = w.ticket, w.model
            m = self._models.get(model)
            if not m or m.state is not State.READY:
                continue
            if (self._swap is not None or m.unload_reason is not None) and self._held(w, m):
                continue
            light = ticket in self._light
            if not light and m.limit and len(m.heavy) >= m.limit:
                continue
            self._queue.remove(ticket, served=True)
            self._light.discard(ticket)
            if ticket in self._preloads:
                self._preloads.discard(ticket)
                continue
            m.inflight.add(ticket)
            if not light:
                m.heavy.add(ticket)
            self._granted[ticket] = model
            effects.append(Grant(ticket, model))
        # 2. Stop idle models that were asked to unload (outside a swap).
        for m in self._models.values():
            if m.unload_reason and m.state is State.READY and not m.inflight:
                m.state = State.STOPPING
                effects.append(Stop(m.name, m.unload_reason))
        # 3. A swap that nobody waits for any more (its clients left before it started) is
        #    dropped: victims already told to stop go on stopping, the others stay loaded.
        #    So is one not started yet when another model's waiting work has a higher priority.
        #    Then decide the next swap from the first request (in queue order) that cannot be served.
        if self._swap is not None and not self._swap.started:
            heads = self._unservable_heads()
            mine = next((w for w in heads if w.model == self._swap.target), None)
            if mine is None or (heads and heads[0].priority > mine.priority):
                self._swap = None
        if self._swap is None:
            for w in self._unservable_heads():
                m = self._models[w.model]
                victims = plan_evictions(w.model, m.group, self._views(), self.models_max, m.memory, self.budget)
                if victims is None:  # only stopping a pinned model would make room
                    effects += self._reject_waiting(w.model, self._no_room_reason(m), "too_big")
                    continue
                self._swap = _Swap(w.model, victims, decided_at=self._now,
                                   marker=max(self._queue.tickets(), default=0), head=w)
                break
        # 4. Advance the swap: stop idle victims, start the target when all are gone.
        swap = self._swap
        if swap and not swap.started:
            for name in swap.victims:
                v = self._models.get(name)
                if v and v.state is State.READY and not v.inflight and not self._owed(v):
                    v.state = State.STOPPING
                    effects.append(Stop(name, "swap"))
            target = self._models[swap.target]
            if (self._victims_gone(swap) or self._overlap_exit(swap)) and target.state is State.STOPPED:
                target.state = State.STARTING
                target.unload_reason = None
                swap.started = True
                effects.append(Start(swap.target))
        return effects

    def _unservable_heads(self) -> list[Waiter]:
        """The first waiting request of each model that is not loaded, in queue order."""
        heads: dict[str, Waiter] = {}
        if not self._queue:
            return []
        for w in self._queue.in_order():
            m = self._models.get(w.model)
            if m is not None and m.state is not State.READY and w.model not in heads:
                heads[w.model] = w
        return list(heads.values())


def _gib(n: int) -> str:
    return f"{n / 1024 ** 3:.2f} GiB" if n >= 1024 ** 3 else f"{n / 1024 ** 2:.0f} MiB"
