"""One host as the front knows it: its agent's handle, last report and the
client that reaches its children; and the lease of one request there."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from typing import Any

from router.catalogue.config import ModelSpec
from router.cluster.nodes import NodeSettings
from router.cluster.placement import HostView, Resident
from router.upstream.pool import UpstreamPool


class Host:
    """One node's agent as the front knows it."""

    def __init__(self, node: NodeSettings, handle: Any):
        self.node, self.handle = node, handle
        self.report: dict[str, Any] = {}
        self.gone = asyncio.Event()
        self.pending: Counter[str] = Counter()  # requests sent to its agent, not granted yet
        self.granted: dict[str, float] = {}  # when each model last got a lease here
        self.incarnation: str | None = None  # the agent worker this front greeted (None: not yet)
        self.states: dict[str, str] = {}  # model -> state, as its agent last reported it
        self._client: UpstreamPool | None = None
        self._secret: str | None = None
        self._reaping: set[asyncio.Task[None]] = set()  # abandoned calls, their leases to release

    def changes(self, report: dict[str, Any]) -> list[tuple[str, str]]:
        """(model, state) for each model whose state differs from the agent's previous
        report (`unloaded`: no longer held); `report` becomes the previous one."""
        now = {n: m["state"] for n, m in report.get("models", {}).items()}
        before, self.states = self.states, now
        return [(m, now.get(m, "unloaded")) for m in sorted(set(before) | set(now))
                if now.get(m, "unloaded") != before.get(m, "unloaded")]

    async def greeted(self, secret: str, incarnation: str) -> None:
        """The agent answered `hello`: its children require `secret`."""
        self.incarnation = incarnation
        if self._client is None or secret != self._secret:  # a new agent worker may take a new secret
            old, self._secret = self._client, secret
            # One client per host: closing it cuts every stream from that host at once.
            self._client = UpstreamPool(headers={"Authorization": f"Bearer {secret}"})
            if old is not None:  # its children died with the old worker
                await old.close()

    def note(self, model: str, spec: ModelSpec, state: str) -> None:
        """Until the next report: `model` counts as `loaded` here (a lease was granted:
        stickiness) or `loading` (a load was asked for)."""
        models = self.report.setdefault("models", {})
        m = models.get(model)
        if m is None:
            models[model] = {"state": state, "inflight": int(state == "loaded"), "waiting": 0, "last_used": 0,
                             "memory": self.report.get("figures", {}).get(model, {}), "group": spec.group_key,
                             "pinned": spec.pinned, "keep": False, "noted": True}
        elif state == "loaded":
            m.update(state="loaded", inflight=m["inflight"] + 1, noted=True)
        elif m["state"] not in ("loaded", "loading"):
            m.update(state=state, noted=True)

    async def call(self, ref: Any) -> Any:
        """The result of an agent call, or None when this host left first. A call nobody waits
        for any more (the client left, or the host) is cancelled, and a lease it got anyway is
        released. Ray's own errors (the agent died) are the caller's."""
        call = asyncio.ensure_future(awaitable(ref))
        gone = asyncio.ensure_future(self.gone.wait())
        try:
            done, _ = await asyncio.wait({call, gone}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            self._abandon(ref, call)  # the client left: the agent drops the ticket
            raise
        finally:
            gone.cancel()
        if call not in done:
            self._abandon(ref, call)
            return None
        return call.result()

    def _abandon(self, ref: Any, call: asyncio.Future[Any]) -> None:
        import ray  # here: placement and its tests import this module without Ray

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
            if lease is not None and not self.gone.is_set():
                self.handle.release.remote(lease)
        task = asyncio.ensure_future(reap())
        self._reaping.add(task)
        task.add_done_callback(self._reaping.discard)

    @property
    def client(self) -> UpstreamPool:
        assert self._client is not None, "a host is used only once its agent answered"
        return self._client

    async def close(self) -> None:
        for task in list(self._reaping):
            task.cancel()
        await asyncio.gather(*self._reaping, return_exceptions=True)
        if self._client is not None:
            await self._client.close()

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
    """A request granted on one host: the child's URL, released exactly once. `model`: the
    model that serves it; `fell_from` and `fallback_reason` when a fallback of the one asked
    for does (router/core/fallback.py), and `selector` when the request named a selector
    (cluster/selectors.py), as a single host's Lease says."""

    def __init__(self, host: Host, model: str, grant: dict[str, Any]):
        self.host = host
        self.model: str = grant.get("model") or model
        self.fell_from: str | None = grant.get("fell_from")
        self.fallback_reason: str | None = grant.get("fallback_reason")
        self.lease_id: int = grant["lease"]
        self.base_url: str = grant["base_url"]
        self.child_id: str | None = grant.get("child_id")
        self.pid: int | None = grant.get("pid")
        self.joined: int = grant.get("joined", 0)  # its place in the host's queue when it joined (0: at once)
        self.selector: str | None = None
        self.on_release: Callable[[], None] | None = None  # a spillover selector's reservation
        self._released = False

    @property
    def stands_in(self) -> bool:
        """Another model than the one the request named serves it (a fallback, or a selector's
        target): the reply names `model`, and the metrics and keep_alive follow it."""
        return self.fell_from is not None or self.selector is not None

    def release(self) -> None:
        if not self._released:
            self._released = True
            if self.on_release is not None:
                self.on_release()
            if not self.host.gone.is_set():
                self.host.handle.release.remote(self.lease_id)


def awaitable(ref: Any) -> asyncio.Future[Any]:
    """A Ray object ref as an asyncio future."""
    return asyncio.wrap_future(ref.future())
