"""The router's own metrics for Prometheus, at GET /metrics (without ?model=),
with every running llama-server child's own metrics merged in under a
`model` label, so one scrape sees all models. GET /metrics?model=X still
forwards to that child unchanged.

Recording a request is a few dictionary lookups and additions (prometheus_client
metrics, no lock contention on one event loop); the state of the models (in
flight, queued, loaded, KV cache, memory) is read only when Prometheus scrapes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Iterator

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from router.api.activity import ActivityLog
from router.core.events import EventBus
from router.core.manager import ModelManager
from router.core.scheduler import State
from router.http.access import READ, Models, declare
from router.http.app_keys import MANAGER
from router.upstream.client import ChildClient
from router.upstream.pool import UpstreamError

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
LOAD_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300)
CHILD_SCRAPE_TIMEOUT_S = 2.0
class RouterMetrics:
    """The metrics, and the activity log fed by the same observation of each request."""

    def __init__(self, activity: ActivityLog) -> None:
        self.activity = activity
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("llama_router_requests", "Requests routed to a model, by endpoint and status.",
                                ["model", "endpoint", "status"], registry=r)
        self.duration = Histogram("llama_router_request_duration_seconds", "Whole request time, as the client saw it.",
                                  ["model", "endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.ttft = Histogram("llama_router_time_to_first_token_seconds",
                              "Time to the first byte of the reply body (streams and whole replies alike).",
                              ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.queue_wait = Histogram("llama_router_queue_wait_seconds", "Time waiting for a load or a slot.",
                                    ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.tokens = Counter("llama_router_tokens", "Tokens in replies' usage, prompt and completion.",
                              ["model", "kind"], registry=r)
        self.loads = Counter("llama_router_model_loads", "Child loads, by result (ok, failed).",
                             ["model", "result"], registry=r)
        self.load_duration = Histogram("llama_router_model_load_duration_seconds", "Spawn to ready.",
                                       ["model"], buckets=LOAD_BUCKETS, registry=r)
        self.unloads = Counter("llama_router_model_unloads",
                               "Child stops, by reason (swap, ttl, unload, reload, crash, shutdown, memory...).",
                               ["model", "reason"], registry=r)
        self.cancelled = Counter("llama_router_requests_cancelled",
                                 "Requests cancelled by an operator (DELETE /admin/requests/{id}), by the state "
                                 "they were in (waiting, in_flight).", ["model", "state"], registry=r)
        self._manager: ModelManager | None = None

    def watch(self, manager: ModelManager) -> None:
        self._manager = manager
        self.registry.register(_ModelState(manager))

    def observe(self, model: str, endpoint: str, status: int, started: float, first_byte: float | None,
                waited: float | None, head: bytes = b"", tail: bytes = b"", streamed: bool = False,
                request_id: str = "") -> None:
        """One request ended. `head`, `tail`, `streamed`: its reply as forward() saw it (router/http/proxy.py)."""
        now = time.perf_counter()
        row = self.activity.record(request_id=request_id, model=model, endpoint=endpoint, status=status,
                                   started=started, first_byte=first_byte, waited=waited, head=head, tail=tail,
                                   streamed=streamed, now=now)
        self.requests.labels(model, endpoint, str(status)).inc()
        self.duration.labels(model, endpoint).observe(now - started)
        if first_byte is not None:
            self.ttft.labels(model).observe(first_byte - started)
        if waited is not None:
            self.queue_wait.labels(model).observe(waited)
        if row.prompt_tokens is not None:
            self.tokens.labels(model, "prompt").inc(row.prompt_tokens)
        if row.completion_tokens is not None:
            self.tokens.labels(model, "completion").inc(row.completion_tokens)

    async def follow(self, events: EventBus) -> None:
        """Count loads and unloads from the manager's events, for the router's life."""
        q = events.subscribe()
        try:
            while True:
                msg = await q.get()
                if msg["event"] != "status_change":
                    continue
                data, model = msg["data"], msg["model"]
                status = data.get("status")
                if status == "loaded":
                    self.loads.labels(model, "ok").inc()
                    if isinstance(data.get("load_seconds"), (int, float)):
                        self.load_duration.labels(model).observe(data["load_seconds"])
                elif status == "unloaded":
                    if data.get("failed") and data.get("reason") != "crash":
                        self.loads.labels(model, "failed").inc()
                    else:
                        self.unloads.labels(model, str(data.get("reason") or "unload")).inc()
        finally:
            events.unsubscribe(q)

    async def exposition(self, client: ChildClient) -> bytes:
        """The router's metrics, then each running child's own under a `model` label."""
        own = generate_latest(self.registry)
        children = await self._children_text(client)
        if not children:
            return own
        merged = CollectorRegistry()
        merged.register(_Relabeled(children))
        return own + generate_latest(merged)

    async def _children_text(self, client: ChildClient) -> list[tuple[str, str]]:
        manager = self._manager
        if manager is None:
            return []
        ready = [(n, c) for n, c in manager.children.items() if c.plan.native and manager.state(n) is State.READY]

        async def scrape(name: str, base_url: str) -> tuple[str, str] | None:
            try:
                answer = await client.get(base_url, "/metrics", timeout=CHILD_SCRAPE_TIMEOUT_S)
            except (UpstreamError, TimeoutError):
                return None
            return (name, answer.text()) if answer.status == 200 else None

        got = await asyncio.gather(*(scrape(n, c.base_url) for n, c in ready))
        return [g for g in got if g is not None]


class _ModelState(Collector):
    """Read at scrape time: nothing is recorded on the request path for these."""

    def __init__(self, manager: ModelManager):
        self.manager = manager

    def collect(self) -> Iterable[Metric]:
        m = self.manager
        inflight = GaugeMetricFamily("llama_router_requests_in_flight", "Requests a child is answering.",
                                     labels=["model"])
        queued = GaugeMetricFamily("llama_router_requests_queued", "Requests waiting for a load or a slot.",
                                   labels=["model"])
        loaded = GaugeMetricFamily("llama_router_model_loaded", "1 when the model's child is ready.",
                                   labels=["model"])
        kv_saves = GaugeMetricFamily("llama_router_kv_cache_saves_total", "KV cache saves.", labels=["model"])
        kv_restores = GaugeMetricFamily("llama_router_kv_cache_restores_total", "KV cache restores.",
                                        labels=["model"])
        memory = GaugeMetricFamily("llama_router_model_memory_bytes",
                                   "Each model's memory figure per device (estimate or measured).",
                                   labels=["model", "device", "kind"])
        for name in m.config.models:
            try:
                running = m.scheduler.inflight(name)
            except KeyError:
                running = 0
            inflight.add_metric([name], running)
            queued.add_metric([name], m.scheduler.waiting(name))
            loaded.add_metric([name], 1 if m.state(name) is State.READY else 0)
            st = m.status.get(name)
            if st is not None and st.kv.enabled:
                kv_saves.add_metric([name], st.kv.saves)
                kv_restores.add_metric([name], st.kv.restores)
            est = m.memory.estimates.get(name)
            if est is not None:
                for device, n in est.devices.items():
                    memory.add_metric([name, device, "estimate"], n)
            measured = m.memory.measured(name)
            for device, n in (measured or {}).get("devices", {}).items():
                memory.add_metric([name, device, "measured"], n)
        budget = GaugeMetricFamily("llama_router_memory_budget_bytes", "The memory budget per device.",
                                   labels=["device"])
        used = GaugeMetricFamily("llama_router_memory_used_bytes", "What the running models take, per device.",
                                 labels=["device"])
        view = m.memory_view()
        for device, n in view["budget"].items():
            budget.add_metric([device], n)
        for device, n in view["used"].items():
            used.add_metric([device], n)
        yield from (inflight, queued, loaded, kv_saves, kv_restores, memory, budget, used)


class _Relabeled(Collector):
    """Children's metric families with a `model` label added to every sample."""

    def __init__(self, texts: list[tuple[str, str]]):
        self.texts = texts

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        for model, text in self.texts:
            try:
                parsed = list(text_string_to_metric_families(text))
            except ValueError:
                continue
            for fam in parsed:
                out = families.get(fam.name)
                if out is None:
                    out = families[fam.name] = Metric(fam.name, fam.documentation, fam.type, fam.unit)
                for s in fam.samples:
                    out.add_sample(s.name, {**s.labels, "model": model}, s.value, s.timestamp, s.exemplar)
        yield from families.values()


async def metrics_response(metrics: RouterMetrics, client: ChildClient) -> web.Response:
    return web.Response(body=await metrics.exposition(client), headers={"Content-Type": CONTENT_TYPE})


@declare(READ, Models.EVERY, when={"model": (READ, Models.NAMED)})
async def handle_metrics(request: web.Request) -> web.StreamResponse:
    """GET /metrics: the router's own, every model's; ?model=X is that child's own, relayed."""
    if request.query.get("model"):
        from router.api.inference import handle_inference  # which records into METRICS: not at import

        return await handle_inference(request)
    return await metrics_response(request.app[METRICS], request.app[MANAGER].client)


def add_metrics_route(app: web.Application) -> None:
    app.router.add_get("/metrics", handle_metrics)


# The one RouterMetrics of an application (router/app.py sets it; the routes record into it).
METRICS = web.AppKey("metrics", RouterMetrics)
