"""The front's Prometheus metrics in cluster mode: the single-host names, with a
`host` label where a host is known (docs/observability.md lists the names).
Host state is read from the agents' last reports when Prometheus scrapes."""

from __future__ import annotations

import time
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from router.cluster.front import ClusterManager

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class ClusterMetrics:
    def __init__(self, cluster: ClusterManager) -> None:
        self.registry = r = CollectorRegistry()
        self.requests = Counter("llama_router_requests", "Requests routed to a model, by endpoint, status and host.",
                                ["model", "endpoint", "status", "host"], registry=r)
        self.duration = Histogram("llama_router_request_duration_seconds", "Whole request time, as the client saw it.",
                                  ["model", "endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.ttft = Histogram("llama_router_time_to_first_token_seconds", "Time to the first byte of the reply body.",
                              ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.queue_wait = Histogram("llama_router_queue_wait_seconds", "Waiting for a placement, load or slot.",
                                    ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.cancelled = Counter("llama_router_requests_cancelled",
                                 "Requests cancelled by an operator (DELETE /admin/requests/{id}), by the state "
                                 "they were in (waiting, in_flight).", ["model", "state"], registry=r)
        r.register(_Hosts(cluster))

    def observe(self, model: str, endpoint: str, status: int, host: str, started: float,
                first_byte: float | None, waited: float | None) -> None:
        self.requests.labels(model, endpoint, str(status), host).inc()
        self.duration.labels(model, endpoint).observe(time.perf_counter() - started)
        if first_byte is not None:
            self.ttft.labels(model).observe(first_byte - started)
        if waited is not None:
            self.queue_wait.labels(model).observe(waited)


class _Hosts(Collector):
    def __init__(self, cluster: ClusterManager):
        self.cluster = cluster

    def collect(self) -> Iterable[Metric]:
        hosts = GaugeMetricFamily("llama_router_cluster_hosts", "Hosts whose agent reports.")
        loaded = GaugeMetricFamily("llama_router_model_loaded", "1 while the model is ready on that host.",
                                   labels=["model", "host"])
        inflight = GaugeMetricFamily("llama_router_requests_in_flight", "Requests being served.",
                                     labels=["model", "host"])
        queued = GaugeMetricFamily("llama_router_requests_queued", "Requests waiting for a load or a slot.",
                                   labels=["model", "host"])
        budget = GaugeMetricFamily("llama_router_memory_budget_bytes", "Each host's budget per device.",
                                   labels=["host", "device"])
        used = GaugeMetricFamily("llama_router_memory_used_bytes", "What the models running on a host take.",
                                 labels=["host", "device"])
        live = [h for h in self.cluster.hosts.values() if h.report]
        hosts.add_metric([], len(live))
        for h in live:
            for model, m in h.report.get("models", {}).items():
                loaded.add_metric([model, h.name], 1 if m["state"] == "loaded" else 0)
                inflight.add_metric([model, h.name], m["inflight"])
                queued.add_metric([model, h.name], m["waiting"])
            for device, n in (h.report.get("budget") or {}).items():
                budget.add_metric([h.name, device], n)
            for device, n in (h.report.get("used") or {}).items():
                used.add_metric([h.name, device], n)
        return [hosts, loaded, inflight, queued, budget, used]
