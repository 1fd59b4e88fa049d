"""Carries out the scheduler's decisions with real processes.

Longer than 300 lines because it owns every step of a child's life around the
scheduler's effects (start with bind retries, readiness, hooks, watch, stop,
shutdown), and those steps share the manager's state.

All scheduler calls happen on the event loop; slow work (spawn, wait for
ready, stop) runs in tasks that report back as scheduler events.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Protocol, TypeVar

from router.backend.argv import given_slots
from router.backend.child import ChildFactory, ChildProcess, LoadError, free_port
from router.backend.container import make_child, port_answers
from router.backend.launch import LaunchPlan, SpawnError, build_launch, slot_save_dir
from router.backend.logring import LogRing
from router.backend.memory_measure import gpu_used_by, tree_pids, tree_rss_bytes
from router.catalogue.config import Config, ModelSpec, SelectorSpec
from router.catalogue.sources import gguf_meta
from router.core import fallback
from router.core.events import EventBus
from router.core.external import ExternalModels
from router.core.memory_book import MemoryBook
from router.core.profiles import ActiveProfile
from router.core.queue_order import DEFAULT_PRIORITY
from router.core.scheduler import Effect, Grant, Reject, Scheduler, Start, State, Stop
from router.core.selector import Reservations
from router.core.status import ModelStatus
from router.upstream.client import ChildClient
from router.upstream.pool import UpstreamError

log = logging.getLogger("router.manager")

Hook = Callable[[str, ChildProcess], Awaitable[None]]
BIND_RETRIES = 3
PROPS_TIMEOUT_S = 5.0  # a child's /props, read for its slot count


class ModelUnavailable(RuntimeError):
    """A request's model could not be loaded, or (busy) its queue is full. `cause`: why, as
    the scheduler's Reject says it, or "file_missing" (router/core/fallback.py)."""

    def __init__(self, reason: str, busy: bool = False, expired: bool = False, cause: str | None = None):
        super().__init__(reason)
        self.busy = busy
        self.expired = expired  # it waited past its deadline
        self.cause = cause or ("queue_full" if busy else fallback.DEADLINE if expired else "unavailable")


class Lease:
    """A granted request: the child to talk to, released exactly once. `model`: the model
    that serves it; `fell_from` and `fallback_reason` when a fallback of the one asked for
    does (router/core/fallback.py); `selector` when the request named a selector
    (router/core/selector.py)."""

    def __init__(self, manager: ModelManager, ticket: int, child: ChildProcess, model: str = ""):
        self.manager, self.ticket, self.child, self.model = manager, ticket, child, model
        self.fell_from: str | None = None
        self.fallback_reason: str | None = None
        self.selector: str | None = None
        self.on_release: Callable[[], None] | None = None  # a spillover reservation given back
        self._released = False

    @property
    def stands_in(self) -> bool:
        """Another model than the one the request named serves it (a fallback, or a selector's
        target): the reply names `model`, and the metrics and keep_alive follow it."""
        return self.fell_from is not None or self.selector is not None

    def release(self) -> None:
        if not self._released:
            self._released = True
            self.manager._release(self.ticket)
            if self.on_release is not None:
                self.on_release()

    async def __aenter__(self) -> Lease:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.release()


class _SelectorLease(Protocol):
    model: str
    selector: str | None
    on_release: Callable[[], None] | None


L = TypeVar("L", bound=_SelectorLease)


async def through_selector(config: Config, reservations: Reservations, selector: SelectorSpec,
                           states: Mapping[str, State], serve: Callable[[list[str]], Awaitable[L]],
                           may_serve: Callable[[str], bool] | None = None) -> L:
    """The lease of the first of the selector's targets (in its strategy's order, given the
    targets' `states`; each followed by its fallbacks) that serves the request: `serve` tries
    a list of models in order (one host's ModelManager, or the cluster front's placement).
    `may_serve` (the API key's) skips the models the request may not use. The lease names the
    selector; spillover's reservation is held until the lease is released."""
    targets, reserved = reservations.choose(selector, states)
    tried = [n for n in dict.fromkeys(n for t in targets for n in fallback.chain(config, t))
             if may_serve is None or may_serve(n)]
    try:
        if not tried:
            raise ModelUnavailable(f"selector {selector.id!r}: none of its targets may be used")
        lease = await serve(tried)
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


class ModelManager:
    def __init__(self, config: Config, client: ChildClient, router_port: int,
                 events: EventBus | None = None, child_factory: ChildFactory = make_child):
        """`client`: the manager's own calls to its children (health, /props, KV slots)."""
        self.config = config
        self.client = client
        self.router_port = router_port
        self.events = events or EventBus()
        self.memory = MemoryBook(config.router.memory, slot_save_dir(config).parent)
        self.scheduler = Scheduler(self._groups(config), config.router.models_max, config.router.swap_patience,
                                   budget=self.memory.budget)
        self.scheduler.set_pinned(n for n, s in config.models.items() if s.pinned)
        self._slots: dict[str, int] = {}  # each running llama-server child's slots
        self._set_limits()
        self._figured: set[str] = set()  # models whose memory figure the scheduler has
        self.ttl_overrides: dict[str, float] = {}  # from requests' keep_alive
        self.child_factory = child_factory
        self.children: dict[str, ChildProcess] = {}
        self.external = ExternalModels(config, client)  # `url` models: outside the scheduler
        self.status: dict[str, ModelStatus] = {n: ModelStatus() for n in config.models}
        self.after_ready: list[Hook] = []
        self.before_stop: list[Hook] = []
        self.last_spawned: str | None = None
        self.profile = ActiveProfile()  # the catalogue's profile switched on now, if any (core/profiles.py)
        # Each model's output outlives its child (a crash's last words stay readable).
        self.logs: dict[str, LogRing] = {}
        self.log_events = EventBus()
        self._futures: dict[int, asyncio.Future[ChildProcess]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False
        self._extra_args: dict[str, tuple[str, ...]] = {}
        self._announce: dict[str, float] = {}  # ready children not READY yet: their load time
        self.reservations = Reservations()  # spillover selectors' requests in flight

    @staticmethod
    def _groups(config: Config) -> dict[str, str]:
        """The models the scheduler runs: every one but those served at their `url`."""
        return {name: spec.group_key for name, spec in config.models.items() if spec.url is None}

    # ----- requests --------------------------------------------------------
    async def acquire(self, model: str, light: bool = False, priority: int = DEFAULT_PRIORITY,
                      tenant: str | None = None, deadline: float | None = None,
                      queued: Callable[[int], None] | None = None,
                      may_serve: Callable[[str], bool] | None = None) -> Lease:
        """Wait until `model` is ready for one more request; the lease must be released.
        A `light` request (tokenize, props...) takes none of the child's slots. `priority`
        and `tenant` (the API key's identity) place it in the queue (router/core/queue_order);
        past `deadline` (time.monotonic()) it stops waiting: ModelUnavailable(expired=True).
        `queued` is told the request's ticket once it is submitted (for scheduler.queue_position).
        When `model` cannot serve it, the first of its fallbacks that can does (the lease
        says which, and why); when none can, the error is the one `model` gave.
        `model` may be a selector: its targets, in the order its strategy chooses, are tried
        the same way, each followed by its fallbacks; `may_serve` (the API key's) skips the
        targets and fallbacks the request may not use."""
        selector = self.config.selectors.get(model)
        if selector is None:
            chain = fallback.chain(self.config, model)
            tried = chain if may_serve is None or len(chain) == 1 else \
                [model, *(n for n in chain[1:] if may_serve(n))]  # the model asked for was checked already
            return await self._acquire_chain(model, tried, light, priority, tenant, deadline, queued,
                                             check_files=len(chain) > 1)
        return await through_selector(
            self.config, self.reservations, selector, {t: self.state(t) for t in selector.targets},
            lambda tried: self._acquire_chain(tried[0], tried, light, priority, tenant, deadline, queued,
                                              check_files=True), may_serve)

    async def _acquire_chain(self, model: str, tried: list[str], light: bool, priority: int, tenant: str | None,
                             deadline: float | None, queued: Callable[[int], None] | None,
                             check_files: bool = False) -> Lease:
        """The first of `tried` that serves the request (`model`: the one asked for, tried first)."""
        first: ModelUnavailable | None = None
        for name in tried:
            if first is not None and first.cause == fallback.DEADLINE and self.state(name) is not State.READY:
                continue  # past its deadline: only a model that serves without a load
            try:
                # Without fallbacks (or a selector) a missing file is the routes' 404
                # (http/request.servable_model); `check_files` for a model that has some.
                running = self.state(name) is not State.STOPPED
                if check_files and fallback.file_missing(self.config, name, running):
                    spec = self.config.models[name]
                    raise ModelUnavailable(f"model {name!r} is missing: its file {spec.path} was moved or deleted",
                                           cause=fallback.FILE_MISSING)
                lease = await self._acquire_one(name, light, priority, tenant, deadline, queued)
            except ModelUnavailable as e:
                if not fallback.falls_back(e.cause):
                    raise
                first = first or e
                continue
            if first is not None:
                lease.fell_from, lease.fallback_reason = model, first.cause
                log.info("[%s] served by its fallback %s (%s)", model, name, first.cause)
            return lease
        assert first is not None
        raise first

    async def _acquire_one(self, model: str, light: bool, priority: int, tenant: str | None,
                           deadline: float | None, queued: Callable[[int], None] | None) -> Lease:
        if self._closing:
            raise ModelUnavailable("router is shutting down")
        if model in self.external:  # a server someone else runs: never queued, never loaded
            return Lease(self, *self.external.enter(model), model=model)
        if model not in self._figured and self.memory.budget is not None:
            self.place(model)
        spec = self.config.models.get(model)
        if spec is not None:
            priority += spec.priority  # the model's own (models.<m>.priority)
        ticket = self.scheduler.new_ticket()
        fut: asyncio.Future[ChildProcess] = asyncio.get_running_loop().create_future()
        self._futures[ticket] = fut
        self._apply(self.scheduler.submit(ticket, model, time.monotonic(), light, priority, tenant, deadline))
        if queued is not None:
            queued(ticket)
        timer = None if deadline is None or fut.done() else asyncio.get_running_loop().call_later(
            max(0.0, deadline - time.monotonic()), self._expire, deadline)
        try:
            child = await fut
        except asyncio.CancelledError:
            self._futures.pop(ticket, None)
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                self._apply(self.scheduler.release(ticket, time.monotonic()))
            else:
                self._apply(self.scheduler.cancel(ticket))
            raise
        finally:
            self._futures.pop(ticket, None)
            if timer is not None:
                timer.cancel()
        return Lease(self, ticket, child, model)

    def lease_now(self, model: str) -> Lease | None:
        """A light request's lease when `model` (a catalogue model, not a selector) serves it
        at once (Scheduler.take_light): no queue, no wait. None: acquire it as usual."""
        child = self.children.get(model)
        if child is None or self._closing:
            return None
        ticket = self.scheduler.new_ticket()
        if not self.scheduler.take_light(ticket, model, time.monotonic()):
            return None
        return Lease(self, ticket, child, model)

    def _expire(self, deadline: float) -> None:
        # Never earlier than the deadline the timer was set for, whatever the loop's clock resolution.
        self._apply(self.scheduler.expire(max(time.monotonic(), deadline)))

    def _release(self, ticket: int) -> None:
        if ticket < 0:  # an external model's (ExternalModels.enter)
            self.external.leave(ticket)
            return
        self._apply(self.scheduler.release(ticket, time.monotonic()))

    def load(self, model: str, extra_args: tuple[str, ...] = ()) -> None:
        """Load without a request; `extra_args` (already whitelisted) apply to this child only.
        An external model has nothing to load: its server is checked now instead."""
        if model in self.external:
            self.external.check_soon(model)
            return
        if extra_args:
            self._extra_args[model] = extra_args
        else:
            self._extra_args.pop(model, None)
        if self.memory.budget is not None:
            self.place(model)
        self._apply(self.scheduler.load(model))

    def place(self, model: str) -> None:
        """Tell the scheduler how much memory `model` takes with its launch plan."""
        spec = self.config.models.get(model)
        if spec is None or spec.url is not None:
            return
        try:
            plan = build_launch(self.config, spec, 0, extra_args=self._extra_args.get(model, ()),
                                router_port=self.router_port, meta_of=gguf_meta)
        except SpawnError:
            return  # the load will fail with this error; nothing to place
        self.scheduler.set_memory(model, self.memory.figure(spec, plan))
        self._figured.add(model)

    def _set_limits(self) -> None:
        """Each model's concurrency limit: its own, else its child's slots, so the
        child is handed only what it can serve and the rest waits here, in order."""
        self.scheduler.set_limits({n: (s.concurrency_limit or self._slots.get(n, 0), s.max_queue)
                                   for n, s in self.config.models.items()})

    def _learn_slots(self, model: str, child: ChildProcess) -> None:
        """The child's slot count: from its --parallel when given (at once), else
        from its /props (off the load's critical path)."""
        if not child.plan.native:
            return
        given = given_slots(child.plan.argv)
        if given is not None:
            self._slots[model] = given
            self._set_limits()
        else:
            self._spawn_task(self._read_slots(model, child))

    async def _read_slots(self, model: str, child: ChildProcess) -> None:
        try:
            answer = await self.client.get(child.base_url, "/props", timeout=PROPS_TIMEOUT_S)
            data = answer.json() if answer.status == 200 else {}
        except (TimeoutError, UpstreamError):
            return
        slots = data.get("total_slots") if isinstance(data, dict) else None
        if isinstance(slots, int) and slots > 0:
            self._slots[model] = slots
            self._set_limits()

    def keep_alive(self, model: str, seconds: float) -> None:
        """A request's keep_alive: its idle TTL from now on (seconds > 0), or keep it
        loaded and evict it last (< 0); 0 (unload after the reply) is the caller's."""
        if seconds > 0:
            self.ttl_overrides[model] = seconds
            self.scheduler.set_keep(model, False)
        elif seconds < 0:
            self.ttl_overrides[model] = 0.0  # never idle-unloaded
            self.scheduler.set_keep(model, True)

    def unload(self, model: str, reason: str = "unload") -> None:
        if model in self.external:
            return  # never stopped by the router
        self._apply(self.scheduler.unload(model, reason))

    def set_config(self, config: Config, restart: Iterable[str] = ()) -> None:
        """Switch to a new catalogue (hot reload) without dropping traffic: new
        models appear, removed ones stop once idle, and `restart` ones stop
        once idle and load again (requests meanwhile wait for the new child)."""
        self.config = config
        self.profile.follow(config, self.events)  # kept while the catalogue has it, else none
        self.external.update(config)
        self.scheduler.swap_patience = config.router.swap_patience
        self.memory.set_settings(config.router.memory)
        self.scheduler.budget = self.memory.budget
        self.scheduler.set_pinned(n for n, s in config.models.items() if s.pinned)
        self._figured.clear()
        for name in config.models:
            self.status.setdefault(name, ModelStatus())
        self._apply(self.scheduler.set_models(self._groups(config), config.router.models_max))
        self._set_limits()
        for name in restart:
            if name in config.models and self.state(name) in (State.READY, State.STARTING):
                self._apply(self.scheduler.unload(name, "reload"))
                self._apply(self.scheduler.load(name))

    def state(self, model: str) -> State:
        try:
            return self.scheduler.state(model)
        except KeyError:
            return State.STOPPED

    async def wait_state(self, model: str, states: set[State], timeout: float) -> bool:
        """For callers that must see a load or unload finish (preload, tests)."""
        deadline = time.monotonic() + timeout
        q = self.events.subscribe()
        try:
            while self.state(model) not in states:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                try:
                    await asyncio.wait_for(q.get(), min(left, 0.5))
                except TimeoutError:
                    pass
            return True
        finally:
            self.events.unsubscribe(q)

    # ----- effects ---------------------------------------------------------
    def _apply(self, effects: list[Effect]) -> None:
        for e in effects:
            if isinstance(e, Grant):
                fut = self._futures.get(e.ticket)
                child = self.children.get(e.model)
                if fut is None or fut.done() or child is None:
                    # The waiter left between the decision and now.
                    self._apply(self.scheduler.release(e.ticket, time.monotonic()))
                else:
                    fut.set_result(child)
            elif isinstance(e, Reject):
                fut = self._futures.get(e.ticket)
                if fut is not None and not fut.done():
                    fut.set_exception(ModelUnavailable(e.reason, e.busy, e.expired, e.cause))
            elif isinstance(e, Start):
                self._spawn_task(self._start(e.model))
            elif isinstance(e, Stop):
                self._spawn_task(self._stop(e.model, e.reason))
        if self._announce:
            self._announce_ready()

    def _announce_ready(self) -> None:
        """`loaded` on /models/sse once the scheduler holds the model READY: the target of a
        swap that started next to its exiting victims waits for them (Scheduler.loaded)."""
        for model in [m for m in self._announce if self.state(m) is State.READY]:
            self._emit(model, "loaded", load_seconds=self._announce.pop(model))

    def _spawn_task(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _emit(self, model: str, status: str, **extra: Any) -> None:
        """A state change on /models/sse, with the memory snapshot of that moment
        (budget and use per device) when placement knows memory."""
        if self.memory.budget is not None:
            extra["memory"] = self.memory_view()
        self.events.emit(model, "status_change", {"status": status, **extra})

    async def _start(self, model: str) -> None:
        spec = self.config.models.get(model)
        status = self.status.setdefault(model, ModelStatus())
        t0 = time.monotonic()
        self._emit(model, "loading", progress=0.0)
        error: Exception | None = None
        child: ChildProcess | None = None
        extra = self._extra_args.pop(model, ())
        try:
            if spec is None:
                raise SpawnError(f"model {model!r} is not in the catalogue")
            # Ports in use, and the fixed ports of other models' servers (`port`).
            used = {c.port for c in self.children.values()} | {s.port for s in self.config.models.values() if s.port}
            plan0 = build_launch(self.config, spec, 0, extra_args=extra, router_port=self.router_port,
                                 meta_of=gguf_meta)
            if spec.port and await port_answers(spec.port):
                raise LoadError(f"model {model!r}: port {spec.port} is already in use (is its server still running "
                                f"from before? {'its stop_command stops it' if spec.stop_command else 'stop it'})")
            for attempt in range(BIND_RETRIES):
                port = spec.port or free_port(*self.config.router.port_range, avoid=used)
                plan = build_launch(self.config, spec, port, extra_args=extra, router_port=self.router_port,
                                    meta_of=gguf_meta, report_memory=self.memory.needs_report(spec, plan0))
                child = self.child_factory(model, plan, port, self._log_ring(model),
                                           lambda kind, data: self._on_child_event(model, kind, data))
                self.children[model] = child
                await child.start()
                try:
                    await child.wait_ready(self.client, self.config.router.health_timeout)
                    break
                except LoadError as e:
                    if e.bind_failed and attempt + 1 < BIND_RETRIES and not spec.port:
                        log.warning("[%s] port %d was taken; retrying on another", model, port)
                        used.add(port)
                        continue
                    raise
            assert child is not None
            self._measure(model, spec, plan0, child)
            self._memory_step(model, "loaded")
            self._learn_slots(model, child)
            for hook in self.after_ready:
                await hook(model, child)
        except asyncio.CancelledError:
            if child:
                await child.kill()
            raise
        except Exception as e:  # any failure to start is a failed load, never a crash
            error = e
        if error is not None or child is None or self._closing:
            if child is not None:
                await child.kill()
            self.children.pop(model, None)
            reason = str(error) if error else "router is shutting down"
            status.failed, status.last_error = True, reason
            status.exit_code = child.returncode if child else None
            log.error("[%s] load failed: %s", model, reason)
            self._emit(model, "unloaded", failed=True, exit_code=status.exit_code, reason=reason)
            self._apply(self.scheduler.load_failed(model, f"model {model!r} failed to load: {reason}",
                                                   out_of_memory=_out_of_memory(reason)))
            return
        status.failed, status.last_error, status.exit_code = False, None, None
        status.loads += 1
        status.last_load_s = time.monotonic() - t0
        self.last_spawned = model
        log.info("[%s] ready in %.2f s (pid %s, port %d)", model, status.last_load_s, child.pid, child.port)
        self._announce[model] = round(status.last_load_s, 3)
        self._spawn_task(self._watch(model, child))
        self._apply(self.scheduler.loaded(model, time.monotonic()))

    def _measure(self, model: str, spec: ModelSpec, plan: LaunchPlan, child: ChildProcess) -> None:
        """Record what the load used; from now on it is the model's figure."""
        if self.memory.budget is None:
            return
        self.memory.estimate(spec, plan)
        figure = self.memory.record(model, plan, child.own_log(), tree_rss_bytes(child.pid),
                                    gpu_used_by(tree_pids(child.pid)) if child.pid and self.memory.gpus else None)
        self.scheduler.set_memory(model, figure)
        self._figured.add(model)

    def sample_memory(self) -> None:
        """A running child whose memory grew past its figure: that peak is its figure."""
        if self.memory.budget is None:
            return
        for model, child in list(self.children.items()):
            rss = tree_rss_bytes(child.pid) if child.ready.is_set() else None
            figure = self.memory.raise_ram(model, rss) if rss else None
            if figure is not None:
                self.scheduler.set_memory(model, figure)

    def memory_view(self, gone: str | None = None) -> dict[str, Any]:
        """The budget and what the running models take, per device (less `gone`'s figure)."""
        used = self.scheduler.used()
        if gone is not None:
            for device, n in self.scheduler.memory(gone).items():
                used[device] = max(used.get(device, 0) - n, 0)
        return {"budget": self.memory.budget or {}, "used": used}

    def _memory_step(self, model: str, step: str, gone: str | None = None) -> None:
        """A memory snapshot on /models/sse at a step of a swap: stopping, stopped (the
        process is gone), loaded."""
        if self.memory.budget is not None:
            self.events.emit(model, "memory", {"step": step, **self.memory_view(gone)})

    def _log_ring(self, model: str) -> LogRing:
        ring = self.logs.get(model)
        if ring is None:
            ring = self.logs[model] = LogRing(self.config.router.log_lines)
        ring.resize(self.config.router.log_lines)
        return ring

    def _on_child_event(self, model: str, kind: str, data: dict[str, Any]) -> None:
        if kind == "log":
            self.log_events.emit(model, "log", data)
        elif kind == "loading":
            value = data.get("value")
            self._emit(model, "loading", progress=value if isinstance(value, (int, float)) else None)

    async def _watch(self, model: str, child: ChildProcess) -> None:
        await child.exited.wait()
        if child.stopping or self.children.get(model) is not child:
            return
        code = child.returncode
        reason = f"model {model!r} exited unexpectedly with code {code}"
        log.error("[%s] %s", model, reason)
        status = self.status.setdefault(model, ModelStatus())
        status.failed, status.exit_code, status.last_error = True, code, reason
        self.children.pop(model, None)
        self._announce.pop(model, None)
        self._emit(model, "unloaded", failed=True, exit_code=code, reason="crash")
        self._apply(self.scheduler.stopped(model))

    async def child_gone(self, model: str, child: ChildProcess, timeout: float) -> bool:
        """Has `child` of `model` exited within `timeout`, and has this manager taken note
        (so the next lease starts a new child)? For replaying a request it lost."""
        try:
            await asyncio.wait_for(child.exited.wait(), timeout)
        except TimeoutError:
            return False
        for _ in range(100):  # _watch wakes on the same event: let it run
            if self.children.get(model) is not child:
                return True
            await asyncio.sleep(0.01)
        return False

    async def _before_stop(self, model: str, child: ChildProcess) -> None:
        """Run the before-stop hooks (KV cache save) of a child that is still healthy."""
        if child.returncode is not None or not child.ready.is_set():
            return
        for hook in self.before_stop:
            try:
                await hook(model, child)
            except Exception as e:  # a failed hook must never block a stop
                log.warning("[%s] before-stop hook failed: %s", model, e)

    def _stop_timeout(self, model: str) -> float:
        """The model's own stop_timeout (one removed by a reload: the router's)."""
        spec = self.config.models.get(model)
        return self.config.router.stop_timeout if spec is None else self.config.stop_timeout(spec)

    async def _stop(self, model: str, reason: str) -> None:
        child = self.children.get(model)
        if child is not None:
            child.stopping = True
            self._memory_step(model, "stopping")
            await self._before_stop(model, child)
            code = await child.stop(self._stop_timeout(model))
            self._memory_step(model, "stopped", gone=model)
            log.info("[%s] stopped (%s), exit code %s", model, reason, code)
            if self.children.get(model) is child:
                del self.children[model]
            self._emit(model, "unloaded", reason=reason, exit_code=code)
        self._apply(self.scheduler.stopped(model))
        if model not in self.config.models:
            self.scheduler.forget_removed(self._groups(self.config))

    # ----- shutdown --------------------------------------------------------
    async def shutdown(self) -> None:
        """Stop every child, by pid; nothing outlives the router."""
        self._closing = True
        for fut in self._futures.values():
            if not fut.done():
                fut.set_exception(ModelUnavailable("router is shutting down"))
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.external.close()
        children = list(self.children.items())
        self.children.clear()

        async def stop(name: str, child: ChildProcess) -> None:
            child.stopping = True
            try:
                await self._before_stop(name, child)  # conversations survive a router restart too
                await child.stop(self._stop_timeout(name))
            except Exception as e:
                log.warning("[%s] stop failed (%s); killing", name, e)
                await child.kill()

        await asyncio.gather(*(stop(n, c) for n, c in children))

    async def kill_all(self) -> None:
        """A forced exit: kill every child now (no KV cache save, no drain), by pid."""
        self._closing = True
        await asyncio.gather(*(child.kill() for child in list(self.children.values())), return_exceptions=True)


_OOM = ("out of memory", "failed to allocate", "cannot allocate", "bad_alloc", "unable to allocate",
        "not enough memory")


def _out_of_memory(reason: str) -> bool:
    """Whether a failed load's last log lines say it ran out of memory."""
    text = reason.lower()
    return any(s in text for s in _OOM)
