"""The front's view of the cluster: one agent per Ray node, their reports, and
the lease of each request.

`ClusterManager` follows Ray's node table (a node that joins gets an agent, a
node that leaves is forgotten at once: its models count as unloaded, requests
waiting on it are placed elsewhere, and the connections of requests streaming
from it are closed, so their clients get a clean 502 instead of a hang), asks
every agent for its report twice a second, and places each request with the
pure `choose_host` (cluster/placement.py). Only small dicts cross Ray: the
reply itself comes from the child over HTTP (cluster/app.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from typing import Any

import aiohttp
import ray
from ray.exceptions import ActorDiedError, ActorUnschedulableError, RayActorError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from router.catalogue.config import Config
from router.cluster.agent import HostAgent
from router.cluster.nodes import NodeLabelError, NodeSettings, node_settings
from router.cluster.placement import HostView, NoPlacement, Resident, choose_host
from router.core.manager import ModelUnavailable

log = logging.getLogger("router.cluster")

NODE_POLL_S = 1.0  # how often Ray's node table is read
REPORT_S = 0.5  # how often each agent reports
CALL_TIMEOUT_S = 10.0  # a report or a stop that takes longer: the agent is not answering
PLACEMENTS = 4  # a request whose host leaves is placed again, at most this many times
AGENT_RESTARTS = 3


class Host:
    """One node's agent as the front knows it."""

    def __init__(self, node: NodeSettings, handle: Any, secret: str):
        self.node, self.handle = node, handle
        self.report: dict[str, Any] = {}
        self.gone = asyncio.Event()
        self.pending: Counter[str] = Counter()  # requests sent to its agent, not granted yet
        self.granted: dict[str, float] = {}  # when each model last got a lease here
        # One session per host: closing it cuts every stream from that host at once.
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, force_close=True),
            headers={"Authorization": f"Bearer {secret}"}, auto_decompress=False)

    @property
    def name(self) -> str:
        return self.node.name

    def view(self, model: str) -> HostView:
        r = self.report
        residents = {n: Resident(m["state"], m["inflight"], m["waiting"], m["last_used"], m["memory"],
                                 m["group"], m["pinned"], m["keep"]) for n, m in r.get("models", {}).items()}
        return HostView(self.name, residents, r.get("budget"), r.get("figures", {}).get(model, {}),
                        r.get("models_max", 0), self.pending[model], model in r.get("serves", ()))


class RemoteLease:
    """A request granted on one host: the child's URL, released exactly once."""

    def __init__(self, host: Host, model: str, grant: dict[str, Any]):
        self.host, self.model = host, model
        self.lease_id: int = grant["lease"]
        self.base_url: str = grant["base_url"]
        self.child_id: str | None = grant.get("child_id")
        self.pid: int | None = grant.get("pid")
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            if not self.host.gone.is_set():
                self.host.handle.release.remote(self.lease_id)


class ClusterManager:
    def __init__(self, config: Config, secret: str, front_port: int):
        self.config = config
        self._secret, self._front_port = secret, front_port
        self.hosts: dict[str, Host] = {}
        self._dead: set[str] = set()  # node ids that left (Ray never reuses one)
        self._refused: dict[str, str] = {}  # node id -> why it runs no agent (a bad label)
        self._background: set[asyncio.Task[Any]] = set()
        self._agent = ray.remote(HostAgent)

    # ----- nodes and reports -------------------------------------------------
    async def run(self) -> None:
        """For the front's life: follow the node table and the agents' reports."""
        next_nodes = 0.0
        while True:
            if time.monotonic() >= next_nodes:
                await self.sync_nodes()
                next_nodes = time.monotonic() + NODE_POLL_S
            await asyncio.gather(*(self._refresh(h) for h in list(self.hosts.values())))
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
        handle = self._agent.options(
            num_cpus=0, max_restarts=AGENT_RESTARTS, max_task_retries=0,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
        ).remote(self.config, settings, self._secret, self._front_port)
        self.hosts[node_id] = Host(settings, handle, self._secret)
        log.info("host %s joined (address %s, ports %s, ram %s)", settings.name, settings.address,
                 "{}-{}".format(*settings.port_range) if settings.port_range else "from the catalogue",
                 settings.ram if settings.ram_given else "from the catalogue")

    async def _refresh(self, host: Host) -> None:
        asked = time.monotonic()
        try:
            report = await asyncio.wait_for(_awaitable(host.handle.report.remote()), CALL_TIMEOUT_S)
        except TimeoutError:
            log.warning("host %s: no report for %g s", host.name, CALL_TIMEOUT_S)
            return
        except (RayActorError, ActorUnschedulableError) as e:
            self._actor_lost(host, e)
            return
        if host.gone.is_set():
            return
        host.report = report
        for model, at in host.granted.items():
            if at >= asked:  # granted while this report was on its way: it may not show it yet
                self._note_grant(host, model)

    def host_gone(self, node_id: str, why: str) -> None:
        """Forget a host at once: its models are unloaded as far as placement knows,
        requests waiting on it are placed again, its streams are cut (502)."""
        host = self.hosts.pop(node_id, None)
        self._dead.add(node_id)
        if host is None:
            return
        log.warning("host %s left (%s): %s placed elsewhere from now on", host.name, why,
                    ", ".join(host.report.get("models", {})) or "no model")
        host.report = {}
        host.gone.set()
        self._spawn(host.session.close())
        try:
            ray.kill(host.handle, no_restart=True)
        except Exception:  # already gone with its node
            pass

    def _actor_lost(self, host: Host, error: Exception) -> None:
        """The agent's worker died: its children died with it (PDEATHSIG, stdin EOF)."""
        if isinstance(error, (ActorDiedError, ActorUnschedulableError)):
            self.host_gone(host.node.node_id, f"its agent died: {error}")
        else:  # restarting: nothing runs there until it reports again
            host.report = {}

    # ----- requests ----------------------------------------------------------
    def views(self, model: str) -> list[HostView]:
        return [h.view(model) for h in self.hosts.values() if h.report and not h.gone.is_set()]

    async def acquire(self, model: str, light: bool = False) -> RemoteLease:
        """Place one request for `model` and wait for its lease; a host that leaves
        meanwhile is forgotten and the request placed again."""
        spec = self.config.models[model]
        for _ in range(PLACEMENTS):
            choice = choose_host(model, spec.group_key, self.views(model))
            if isinstance(choice, NoPlacement):
                raise ModelUnavailable(choice.reason)
            host = next(h for h in self.hosts.values() if h.name == choice.host)
            host.pending[model] += 1
            try:
                grant = await self._call_on(host, host.handle.acquire.remote(model, light))
            finally:
                host.pending[model] -= 1
            if grant is None:
                continue  # the host left while the request waited: place it again
            if "error" in grant:
                raise ModelUnavailable(grant["error"], grant.get("busy", False))
            host.granted[model] = time.monotonic()
            self._note_grant(host, model)
            return RemoteLease(host, model, grant)
        raise ModelUnavailable(f"model {model!r}: hosts kept leaving while it was placed")

    def _note_grant(self, host: Host, model: str) -> None:
        """Until the next report, the model counts as loaded there (stickiness)."""
        models = host.report.setdefault("models", {})
        m = models.get(model)
        if m is None:
            spec = self.config.models[model]
            figure = host.report.get("figures", {}).get(model, {})
            models[model] = {"state": "loaded", "inflight": 1, "waiting": 0, "last_used": 0, "memory": figure,
                             "group": spec.group_key, "pinned": spec.pinned, "keep": False, "noted": True}
        else:
            m.update(state="loaded", inflight=m["inflight"] + 1, noted=True)

    async def _call_on(self, host: Host, ref: Any) -> Any:
        """The result of an agent call, or None when its host left first."""
        call = asyncio.ensure_future(_awaitable(ref))
        gone = asyncio.ensure_future(host.gone.wait())
        try:
            done, _ = await asyncio.wait({call, gone}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            self._abandon(host, ref, call)  # the client left: the agent drops the ticket
            raise
        finally:
            gone.cancel()
        if call not in done:
            self._abandon(host, ref, call)
            return None
        try:
            return call.result()
        except (RayActorError, ActorUnschedulableError) as e:
            self._actor_lost(host, e)
            return None

    def _abandon(self, host: Host, ref: Any, call: asyncio.Future[Any]) -> None:
        """Cancel an agent call nobody waits for; a lease it got anyway is released."""
        try:
            ray.cancel(ref)
        except Exception:
            pass

        async def reap() -> None:
            try:
                grant = await call
            except BaseException:
                return
            lease = grant.get("lease") if isinstance(grant, dict) else None
            if lease is not None and not host.gone.is_set():
                host.handle.release.remote(lease)
        self._spawn(reap())

    async def settle(self, lease: RemoteLease) -> bool:
        """After a connection lost before any byte: may the request be placed again?
        Yes when the host left, or its agent saw the child exit."""
        if lease.host.gone.is_set():
            return True
        try:
            ref = lease.host.handle.child_gone.remote(lease.model, lease.pid)
            return bool(await asyncio.wait_for(_awaitable(ref), CALL_TIMEOUT_S))
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
                await asyncio.wait_for(_awaitable(host.handle.shutdown.remote()),
                                       self.config.router.stop_timeout + CALL_TIMEOUT_S)
            except (TimeoutError, RayActorError, ActorUnschedulableError) as e:
                log.warning("host %s did not stop cleanly (%s); its children die with its agent", host.name, e)
            try:
                ray.kill(host.handle, no_restart=True)
            except Exception:
                pass
            await host.session.close()

        await asyncio.gather(*(stop(h) for h in hosts))
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)


def _awaitable(ref: Any) -> asyncio.Future[Any]:
    return asyncio.wrap_future(ref.future())
