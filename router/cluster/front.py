"""The front's view of the cluster: one agent per Ray node, their reports, and
the lease of each request.

`ClusterManager` follows Ray's node table (a node that joins gets an agent, a
node that leaves is forgotten at once: its models count as unloaded, requests
waiting on it are placed elsewhere, and the connections of requests streaming
from it are closed, so their clients get a clean 502 instead of a hang), asks
every agent for its report twice a second, and places each request with the
pure `choose_host` (cluster/placement.py). Only small dicts cross Ray: the
reply itself comes from the child over HTTP (cluster/app.py).

An agent that already runs on a node (a front before this one started it) is
adopted, not replaced: its loaded models stay loaded and the first reports
rebuild the placement view, so a restarted front causes no reload storm.

Longer than 300 lines because the hosts, their reports and every request's
placement are one object's state, read and changed together on the front's loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import ray
from ray.exceptions import ActorDiedError, ActorUnschedulableError, RayActorError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from router.catalogue.config import Config
from router.cluster.agent import HostAgent, agent_name
from router.cluster.fallbacks import Unplaced, first_that_serves
from router.cluster.host import Host, RemoteLease, awaitable
from router.cluster.nodes import NodeLabelError, node_settings
from router.cluster.placement import HostView, NoPlacement, choose_host, round_robin
from router.cluster.selectors import cluster_states
from router.cluster.startup import FirstReports
from router.cluster.terms import HostTerms
from router.core.events import EventBus
from router.core.fallback import chain
from router.core.manager import ModelUnavailable, through_selector
from router.core.profiles import ActiveProfile
from router.core.queue_order import DEFAULT_PRIORITY
from router.core.scheduler import State
from router.core.selector import Reservations

log = logging.getLogger("router.cluster")

NODE_POLL_S = 1.0  # how often Ray's node table is read
REPORT_S = 0.5  # how often each agent reports
CALL_TIMEOUT_S = 10.0  # a report or a stop that takes longer: the agent is not answering
PLACEMENTS = 4  # a request whose host leaves is placed again, at most this many times
AGENT_RESTARTS = 3


class ClusterManager:
    def __init__(self, config: Config, secret: str, front_port: int):
        self.config = config
        self._secret, self._front_port = secret, front_port
        self.hosts: dict[str, Host] = {}
        self._dead: set[str] = set()  # node ids that left (Ray never reuses one)
        self._refused: dict[str, str] = {}  # node id -> why it runs no agent (a bad label)
        self._background: set[asyncio.Task[Any]] = set()
        self._agent = ray.remote(HostAgent)
        self._id = uuid.uuid4().hex  # agents tell one front from the next by it
        # A model's state on a host changed (from the agents' reports): /models/sse, the dashboard.
        self.events = EventBus()
        self._turn = 0  # cluster.placement: round_robin
        self.first_reports = FirstReports(lambda: self.config.cluster.start_wait)  # until then, requests wait
        self.profile = ActiveProfile()  # the catalogue's profile switched on now, if any (core/profiles.py)
        self.reservations = Reservations()  # spillover selectors' requests in flight through the front

    async def set_config(self, config: Config) -> None:
        """A reloaded catalogue: every agent gets it (its unchanged models keep running
        there) and reports once more before requests are placed by it."""
        hosts = list(self.hosts.values())
        await asyncio.gather(*(self._greet(h, config) for h in hosts), return_exceptions=True)
        self.config = config
        self.profile.follow(config, self.events)  # kept while the catalogue has it, else none
        await asyncio.gather(*(self._refresh(h) for h in hosts))
        log.info("reload: %d model(s), handed to %d host(s)", len(config.models), len(hosts))

    # ----- nodes and reports -------------------------------------------------
    async def run(self) -> None:
        """For the front's life: follow the node table and the agents' reports."""
        next_nodes = 0.0
        while True:
            if time.monotonic() >= next_nodes:
                await self.sync_nodes()
                next_nodes = time.monotonic() + NODE_POLL_S
            await asyncio.gather(*(self._refresh(h) for h in list(self.hosts.values())))
            self.first_reports.saw([bool(h.report) for h in self.hosts.values()])
            await asyncio.sleep(REPORT_S)

    async def sync_nodes(self) -> None:
        nodes = await asyncio.to_thread(ray.nodes)
        alive = {str(n["NodeID"]): n for n in nodes if n.get("Alive")}
        for node_id in list(self.hosts):
            if node_id not in alive:
                self.host_gone(node_id, "the node left the cluster")
        for node_id, node in alive.items():
            if node_id not in self.hosts and node_id not in self._dead and node_id not in self._refused:
                self._start_agent(node_id, node)

    def _start_agent(self, node_id: str, node: dict[str, Any]) -> None:
        try:
            settings = node_settings(node)
        except NodeLabelError as e:
            log.error("%s: no models run there", e)
            self._refused[node_id] = str(e)
            return
        if not settings.serve:
            self._refused[node_id] = "llama-router/serve=false"
            return
        # Detached and named: a front that restarts finds it (and its loaded models) again.
        handle = self._agent.options(
            name=agent_name(node_id), lifetime="detached", get_if_exists=True,
            num_cpus=0, max_restarts=AGENT_RESTARTS, max_task_retries=0,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
        ).remote(self.config, settings, self._secret, self._front_port)
        self.hosts[node_id] = Host(settings, handle)
        log.info("host %s joined (address %s, ports %s, ram %s)", settings.name, settings.address,
                 "{}-{}".format(*settings.port_range) if settings.port_range else "from the catalogue",
                 settings.ram if settings.ram_given else "from the catalogue")

    async def _refresh(self, host: Host) -> None:
        asked = time.monotonic()
        try:
            if host.incarnation is None:
                await self._greet(host)
            report = await asyncio.wait_for(awaitable(host.handle.report.remote()), CALL_TIMEOUT_S)
        except TimeoutError:
            log.warning("host %s: no report for %g s", host.name, CALL_TIMEOUT_S)
            return
        except (RayActorError, ActorUnschedulableError) as e:
            self._actor_lost(host, e)
            return
        if host.gone.is_set():
            return
        if report.get("incarnation") != host.incarnation:  # Ray restarted its worker: greet the new one
            host.incarnation, host.report = None, {}
            return
        for model, state in host.changes(report):
            self.events.emit(model, "status_change", {"status": state, "host": host.name})
        host.report = report
        for model, at in host.granted.items():
            spec = self.config.models.get(model)  # (gone from a reloaded catalogue: not noted)
            if at >= asked and spec is not None:  # granted while this report was on its way: it may not show it
                host.note(model, spec, "loaded")

    async def _greet(self, host: Host, config: Config | None = None) -> None:
        """Hand the agent this front's catalogue and learn its children's secret; an
        agent a previous front started keeps its models (adopted)."""
        hello = host.handle.hello.remote(self._id, config or self.config, self._secret)
        hi = await asyncio.wait_for(awaitable(hello), CALL_TIMEOUT_S)
        await host.greeted(hi["secret"], hi["incarnation"])
        if hi["running"]:
            log.info("host %s: adopted with %s loaded", host.name, ", ".join(hi["running"]))

    def host_gone(self, node_id: str, why: str) -> None:
        """Forget a host at once: its models are unloaded as far as placement knows,
        requests waiting on it are placed again, its streams are cut (502)."""
        host = self.hosts.pop(node_id, None)
        self._dead.add(node_id)
        if host is None:
            return
        log.warning("host %s left (%s): %s placed elsewhere from now on", host.name, why,
                    ", ".join(host.report.get("models", {})) or "no model")
        for model, state in host.changes({}):
            self.events.emit(model, "status_change", {"status": state, "host": host.name})
        host.report = {}
        host.gone.set()
        self._spawn(host.close())
        try:
            ray.kill(host.handle, no_restart=True)
        except Exception:  # already gone with its node
            pass

    def _actor_lost(self, host: Host, error: Exception) -> None:
        """The agent's worker died: its children died with it (PDEATHSIG, stdin EOF)."""
        if isinstance(error, (ActorDiedError, ActorUnschedulableError)):
            self.host_gone(host.node.node_id, f"its agent died: {error}")
        else:  # restarting: nothing runs there until it is greeted and reports again
            host.report, host.incarnation = {}, None

    # ----- requests ----------------------------------------------------------
    def views(self, model: str) -> list[HostView]:
        return [h.view(model) for h in self.hosts.values() if h.report and not h.gone.is_set()]

    def states(self, names: Iterable[str]) -> dict[str, State]:
        """Each model's state across the hosts, as a selector reads it (cluster/selectors.py)."""
        return cluster_states([h.report for h in self.hosts.values() if not h.gone.is_set()], names)

    async def acquire(self, model: str, light: bool = False, keep_alive: float | None = None,
                      priority: int = DEFAULT_PRIORITY, tenant: str | None = None,
                      deadline: float | None = None, may_serve: Callable[[str], bool] | None = None,
                      rid: str | None = None, placed: Callable[[str], None] | None = None) -> RemoteLease:
        """Place one request for `model` and wait for its lease, under its queue terms as on one
        host: the host's queue orders it by `priority` and `tenant`, and past `deadline` (this
        process's time.monotonic()) it stops waiting: ModelUnavailable(expired=True). A model
        no host can take is served by its fallbacks (cluster/fallbacks.py); a selector by its
        targets, those `may_serve` (the API key's) allows (cluster/selectors.py). `rid`: the id of
        a request the front lists (cluster/requests.py), `placed` told each host it is sent to."""
        def allowed(name: str) -> frozenset[str] | None:
            """The models of `name`'s fallback chain the key may use (its host's fallbacks: terms.py)."""
            return None if may_serve is None else frozenset(n for n in chain(self.config, name) if may_serve(n))

        async def one(name: str) -> RemoteLease:
            return await self._acquire_one(name, light, keep_alive, priority, tenant, deadline, rid, placed,
                                           allowed(name))

        def loaded(name: str) -> bool:
            return any(h.report.get("models", {}).get(name, {}).get("state") == "loaded"
                       for h in list(self.hosts.values()))

        selector = self.config.selectors.get(model)
        if selector is None:
            names = chain(self.config, model)
            if may_serve is not None:  # the model asked for was checked already; its fallbacks the key's only
                names = [model, *(n for n in names[1:] if may_serve(n))]
            return await first_that_serves(self.config, model, one, loaded, names)
        await self.first_reports.wait(deadline)  # the states it chooses by come from the reports
        return await through_selector(self.config, self.reservations, selector, self.states(selector.targets),
                                      lambda names: first_that_serves(self.config, names[0], one, loaded, names),
                                      may_serve)

    async def _acquire_one(self, model: str, light: bool, keep_alive: float | None, priority: int,
                           tenant: str | None, deadline: float | None, rid: str | None = None,
                           placed: Callable[[str], None] | None = None,
                           allowed: frozenset[str] | None = None) -> RemoteLease:
        """The lease of `model` on the host placement picks; a host that leaves meanwhile is
        forgotten and the request placed again."""
        for _ in range(PLACEMENTS):
            host = await self._place(model, deadline)
            host.pending[model] += 1
            if placed is not None:
                placed(host.name)
            terms = HostTerms.sent(priority, tenant, deadline, time.monotonic(), allowed)  # seconds left: terms.py
            try:
                grant = await self._call_on(host, host.handle.acquire.remote(model, light, keep_alive, terms, rid))
            finally:
                host.pending[model] -= 1
            if grant is None:
                continue  # the host left while the request waited: place it again
            if "error" in grant:
                raise ModelUnavailable(grant["error"], grant.get("busy", False), grant.get("expired", False),
                                       grant.get("cause"))
            lease = RemoteLease(host, model, grant)  # lease.model: a fallback's, when the host chose one
            host.granted[lease.model] = time.monotonic()
            host.note(lease.model, self.config.models.get(lease.model) or self.config.models[model], "loaded")
            return lease
        raise ModelUnavailable(f"model {model!r}: hosts kept leaving while it was placed")

    async def _place(self, model: str, deadline: float | None = None) -> Host:
        """The host for the next request for `model`, by `cluster.placement`, once hosts reported
        (startup.py; a request waits for them until its deadline at most)."""
        await self.first_reports.wait(deadline)
        spec, c = self.config.models[model], self.config.cluster
        if c.placement == "round_robin":
            choice = round_robin(model, spec.group_key, self.views(model), self._turn)
            self._turn += 1
        else:
            choice = choose_host(model, spec.group_key, self.views(model), c.replicas, c.queue_threshold)
        if isinstance(choice, NoPlacement):
            raise Unplaced(choice.reason, cause=choice.cause)
        return next(h for h in self.hosts.values() if h.name == choice.host)

    async def load(self, model: str, extra_args: tuple[str, ...] = ()) -> str:
        """Start `model` where a request for it would go (POST /models/load); the host's name."""
        host = await self._place(model)
        if await self._call_on(host, host.handle.load.remote(model, extra_args)) is None:
            raise ModelUnavailable(f"host {host.name} left while {model!r} was being loaded there")
        host.note(model, self.config.models[model], "loading")  # until the next report: a load in progress
        return host.name

    async def unload(self, model: str) -> list[str]:
        """Stop `model` once idle on every host that holds it; their names."""
        await self.first_reports.wait()
        holding = [h for h in self.hosts.values()
                   if h.report.get("models", {}).get(model, {}).get("state") in ("loaded", "loading")]
        await asyncio.gather(*(self._call_on(h, h.handle.unload.remote(model)) for h in holding))
        return sorted(h.name for h in holding)

    async def _call_on(self, host: Host, ref: Any) -> Any:
        """The result of an agent call, or None when its host left first (Host.call)."""
        try:
            return await host.call(ref)
        except (RayActorError, ActorUnschedulableError) as e:
            self._actor_lost(host, e)
            return None

    async def settle(self, lease: RemoteLease) -> bool:
        """After a connection lost before any byte: may the request be placed again?
        Yes when the host left, or its agent saw the child exit."""
        if lease.host.gone.is_set():
            return True
        try:
            ref = lease.host.handle.child_gone.remote(lease.model, lease.pid)
            return bool(await asyncio.wait_for(awaitable(ref), CALL_TIMEOUT_S))
        except (TimeoutError, RayActorError, ActorUnschedulableError):
            return True

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # ----- shutdown ----------------------------------------------------------
    async def shutdown(self) -> None:
        """Every agent stops its children (by pid), then the agents go."""
        hosts = list(self.hosts.values())
        self.hosts.clear()

        async def stop(host: Host) -> None:
            try:
                await asyncio.wait_for(awaitable(host.handle.shutdown.remote()),
                                       self.config.router.stop_timeout + CALL_TIMEOUT_S)
            except (TimeoutError, RayActorError, ActorUnschedulableError) as e:
                log.warning("host %s did not stop cleanly (%s); its children die with its agent", host.name, e)
            try:
                ray.kill(host.handle, no_restart=True)
            except Exception:
                pass
            await host.close()

        await asyncio.gather(*(stop(h) for h in hosts))
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
