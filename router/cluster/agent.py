"""The host agent: this project's single-host core, run on one Ray node.

One `HostAgent` per node, a Ray actor pinned there (NodeAffinity, restarted
if its worker dies). Inside it runs an unchanged `ModelManager` over the
shared catalogue with the node's port range and RAM budget (nodes.py), so
every single-host rule - one swap at a time, busy models never evicted,
concurrency limits, KV save/restore, idle TTL - holds per host as it does
on one machine. What the cluster adds is small:

- children bind to the node's address instead of loopback, and require the
  cluster's secret (llama-server's `LLAMA_API_KEY`, set in the child's
  environment only: never in argv, so never in `ps` or the logs);
- a request's lease is held here on the front's behalf, under its queue terms
  (`acquire` returns the child's base URL, `release` ends it): the front streams from the
  child over HTTP itself, and nothing but this small dict crosses Ray;
- `report()` tells the front what placement needs.

The agent starts its manager on its first call, so a restarted actor comes
back by itself (its children died with the old worker: PR_SET_PDEATHSIG and
stdin EOF).

Agents are detached, named actors (`llama-router-agent-<node id>`): they outlive
the front that started them, so a front that crashes and comes back finds them
with their models loaded (`hello` adopts them: the new front takes their secret,
hands them its catalogue, and the old front's leases are released). A front
that says goodbye (`shutdown`) stops them. One that never comes back leaves
them for `cluster.front_grace` seconds after its last call; then each stops
its children and ends itself.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
import uuid
from dataclasses import replace
from typing import Any

from router.backend.child import Child, EventSink
from router.backend.launch import LaunchPlan
from router.backend.logring import LogRing
from router.catalogue.config import Config
from router.cluster.nodes import NodeSettings, node_config, rebind
from router.cluster.places import Places
from router.cluster.terms import HostTerms
from router.core.kv_persistence import KVPersistence
from router.core.lifecycle import unload_idle
from router.core.manager import Lease, ModelManager, ModelUnavailable
from router.core.reload import apply_config
from router.core.scheduler import State
from router.upstream.client import ChildClient
from router.upstream.pool import UpstreamPool

log = logging.getLogger("router.cluster")

SECRET_ENV = "LLAMA_API_KEY"  # llama-server's --api-key, read from the environment
GONE_WAIT_S = 2.0  # how long a lost connection may take to show as the child's exit
AGENT_PREFIX = "llama-router-agent-"


def agent_name(node_id: str) -> str:
    """The agent's Ray actor name: how a restarted front finds the agent of each node."""
    return AGENT_PREFIX + node_id


class NodeChild(Child):
    """A llama-server child reachable from other hosts: bound to the node's address."""

    def __init__(self, name: str, plan: LaunchPlan, port: int, logs: LogRing, on_event: EventSink | None,
                 address: str):
        super().__init__(name, plan, port, logs, on_event)
        self.address = address

    @property
    def base_url(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"http://{host}:{self.port}"


class HostAgent:
    """Wrapped by `ray.remote` in cluster/front.py; every method is a coroutine on the actor's loop."""

    def __init__(self, config: Config, node: NodeSettings, secret: str, front_port: int):
        self.node = node
        self.config = node_config(config, node)
        self._secret = secret
        self._front_port = front_port
        self._manager: ModelManager | None = None
        self._pool: UpstreamPool | None = None  # the manager's client to its children
        self._tasks: list[asyncio.Task[Any]] = []
        self._leases: dict[int, Lease] = {}
        self._unload_after: set[int] = set()  # leases whose request asked keep_alive 0
        self._places = Places()  # where the front's listed requests wait here (cluster/places.py)
        self._ids = itertools.count(1)
        self._figured: set[str] = set()
        self._lock = asyncio.Lock()
        self._front: str | None = None  # the front this agent answers to (its id)
        self._contact = time.monotonic()  # the last call of any front
        self._watchdog: asyncio.Task[None] | None = None
        self.incarnation = uuid.uuid4().hex  # a restarted worker is a new agent

    def _touch(self) -> None:
        self._contact = time.monotonic()
        if self._watchdog is None:
            self._watchdog = asyncio.create_task(self._watch_front())

    async def _watch_front(self) -> None:
        """No word from any front for `cluster.front_grace`: stop the children and end."""
        while True:
            grace = self.config.cluster.front_grace
            left = self._contact + grace - time.monotonic()
            if left > 0:
                await asyncio.sleep(min(left, 1.0))
                continue
            log.warning("host %s: no front for %g s: stopping its models and leaving", self.node.name, grace)
            await self.shutdown()
            import ray

            ray.kill(ray.get_runtime_context().current_actor, no_restart=True)
            return

    async def hello(self, front: str, config: Config, secret: str) -> dict[str, Any]:
        """A front (the first, or one restarted) takes this agent over: the catalogue
        becomes its own (running models that did not change keep running), requests
        of an earlier front are forgotten, and the children's secret is returned (a
        new front adopts the one they were started with)."""
        self._touch()
        if front != self._front:
            if self._front is not None:
                log.info("host %s: adopted by a new front; %d lease(s) of the old one released", self.node.name,
                         len(self._leases))
                for lease in self._leases.values():
                    lease.release()
                self._leases.clear()
                self._unload_after.clear()
            self._front = front
        new = node_config(config, self.node)
        if self._manager is None:
            self.config, self._secret = new, secret
        elif new != self._manager.config:
            apply_config(self._manager, new, "a front's catalogue")
            self.config = new
        running = sorted(n for n, c in (self._manager.children.items() if self._manager else ()) if c.pid)
        return {"secret": self._secret, "incarnation": self.incarnation, "running": running}

    def _child(self, name: str, plan: LaunchPlan, port: int, logs: LogRing, on_event: EventSink) -> Child:
        env = {**plan.env, SECRET_ENV: self._secret}
        return NodeChild(name, replace(plan, argv=rebind(plan.argv, self.node.address), env=env), port, logs,
                         on_event, self.node.address)

    async def _ready(self) -> ModelManager:
        async with self._lock:
            if self._manager is None:
                # Every call of this agent's manager to its children (KV slots, /props) carries the secret.
                self._pool = UpstreamPool(headers={"Authorization": f"Bearer {self._secret}"})
                manager = ModelManager(self.config, ChildClient(self._pool), self._front_port,
                                       child_factory=self._child)
                KVPersistence(manager).install()
                self._tasks.append(asyncio.create_task(unload_idle(manager)))
                self._manager = manager
            return self._manager

    # ----- requests --------------------------------------------------------
    async def acquire(self, model: str, light: bool = False, keep_alive: float | None = None,
                      terms: HostTerms | None = None, rid: str | None = None) -> dict[str, Any]:
        """Wait until `model` is ready here and hold one request's lease on it, under the
        request's `terms` (priority, tenant, the seconds it may still wait: cluster/terms.py).
        The model's `fallbacks` serve it here as on one host: the grant names the model that
        serves (`model`) and why (`fell_from`, `fallback_reason`). A request's `keep_alive`
        applies here as on one host (0: unload once this request is done). `rid`: a request the
        front lists: its place while it waits is in `report`, where it joined in the grant."""
        self._touch()
        terms = terms or HostTerms()
        manager = await self._ready()
        try:
            lease = await manager.acquire(model, light, priority=terms.priority, tenant=terms.tenant,
                                          deadline=terms.deadline(time.monotonic()),
                                          queued=self._places.watch(rid, manager.scheduler),
                                          may_serve=terms.may_serve())
        except ModelUnavailable as e:
            return {"error": str(e), "busy": e.busy, "expired": e.expired, "cause": e.cause}
        finally:  # granted, refused, or abandoned by the front (ray.cancel)
            joined = self._places.done(rid)
        if keep_alive:
            manager.keep_alive(lease.model or model, keep_alive)  # the model that serves: a fallback's
        lease_id = next(self._ids)
        self._leases[lease_id] = lease
        if keep_alive == 0:
            self._unload_after.add(lease_id)
        child = lease.child
        return {"lease": lease_id, "base_url": child.base_url, "pid": child.pid,
                "child_id": child.ready_info.get("id") if child.plan.native else None,
                "model": lease.model or model, "fell_from": lease.fell_from, "fallback_reason": lease.fallback_reason,
                "joined": joined}

    async def release(self, lease_id: int) -> None:
        self._touch()
        lease = self._leases.pop(lease_id, None)
        if lease is not None:
            lease.release()
            if lease_id in self._unload_after:
                self._unload_after.discard(lease_id)
                lease.manager.unload(lease.child.name, "keep_alive")

    async def child_gone(self, model: str, pid: int | None) -> bool:
        """Has the child `pid` of `model` exited, and has the manager taken note (so a
        new lease starts a new child)? Waits up to GONE_WAIT_S for both."""
        manager = await self._ready()
        child = manager.children.get(model)
        if child is None or child.pid != pid:
            return True
        return await manager.child_gone(model, child, GONE_WAIT_S)

    async def load(self, model: str, extra_args: tuple[str, ...] = ()) -> bool:
        """Start `model` here without a request (POST /models/load)."""
        self._touch()
        manager = await self._ready()
        if model not in manager.config.models:
            return False
        manager.load(model, tuple(extra_args))
        return True

    async def logs(self, model: str, mark: int | None = None) -> dict[str, Any]:
        """`model`'s output lines kept here (its children's, newest last): all of them, or
        those after `mark` (a `total` this returned before)."""
        self._touch()
        manager = await self._ready()
        ring = manager.logs.get(model)
        if ring is None:
            return {"total": 0, "lines": []}
        return {"total": ring.total, "lines": list(ring) if mark is None else ring.since(mark)}

    async def unload(self, model: str) -> None:
        self._touch()
        manager = await self._ready()
        if model in manager.config.models:
            manager.unload(model)

    # ----- what the front needs ----------------------------------------------
    async def report(self) -> dict[str, Any]:
        """Models held (loading, loaded, unloading, or queued for), memory, queue, places (cluster/places.py)."""
        self._touch()
        manager = await self._ready()
        sched = manager.scheduler
        figures: dict[str, dict[str, int]] = {}
        serves = []
        for name, spec in manager.config.models.items():
            if spec.model_file is not None and not os.path.exists(spec.model_file):
                continue  # not on this node's disk
            serves.append(name)
            if name not in self._figured and manager.memory.budget is not None:
                manager.place(name)  # the estimate from its header, read here
                self._figured.add(name)
            figures[name] = sched.memory(name)
        models = {}
        for name, spec in manager.config.models.items():
            state, waiting = manager.state(name), sched.waiting(name)
            if state is State.STOPPED and not waiting:
                continue
            child = manager.children.get(name)
            models[name] = {
                "state": State.STARTING.value if state is State.STOPPED else state.value,
                "inflight": sched.inflight(name), "waiting": waiting, "last_used": sched.last_used(name),
                "memory": sched.memory(name), "group": spec.group_key, "pinned": spec.pinned,
                "keep": manager.ttl_overrides.get(name) == 0.0,
                "loads": manager.status[name].loads if name in manager.status else 0,
                "pid": child.pid if child is not None else None,
                "base_url": child.base_url if child is not None else None,
            }
        return {"node_id": self.node.node_id, "name": self.node.name, "address": self.node.address,
                "pid": os.getpid(), "budget": manager.memory.budget, "used": sched.used(),
                "models_max": manager.config.router.models_max, "models": models, "figures": figures,
                "serves": serves, "queue": sched.waiting(), "places": self._places.now(sched),
                "incarnation": self.incarnation}

    async def pids(self) -> list[int]:
        """The children's process ids (tests check none survives)."""
        manager = await self._ready()
        return [c.pid for c in manager.children.values() if c.pid is not None]

    async def shutdown(self) -> None:
        """Stop every child (KV caches saved), by pid."""
        if self._manager is None:
            return
        manager, self._manager = self._manager, None
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await manager.shutdown()
        if self._pool is not None:
            await self._pool.close()
