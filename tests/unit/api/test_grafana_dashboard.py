"""The Grafana dashboard in docs/ only asks for metrics the router exports."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

from router.api.activity import ActivityLog
from router.api.metrics import RouterMetrics

DASHBOARD = Path(__file__).resolve().parents[3] / "docs" / "grafana-llama-router.json"


def exported_names() -> set[str]:
    metrics = RouterMetrics(ActivityLog(10, asyncio.Event()))
    names = set()
    for family in metrics.registry.collect():
        names |= {s.name for s in family.samples} | {family.name, family.name + "_total"}
        if family.type == "histogram":
            names |= {family.name + suffix for suffix in ("_bucket", "_count", "_sum")}
    return names | {  # read at scrape time from the model state
        "llama_router_model_loaded", "llama_router_requests_in_flight", "llama_router_requests_queued",
        "llama_router_memory_budget_bytes", "llama_router_memory_used_bytes",
    }


def test_every_query_names_an_exported_metric():
    panels = json.loads(DASHBOARD.read_text())["panels"]
    asked = {name for p in panels for t in p["targets"] for name in re.findall(r"llama_router_[a-z_]+", t["expr"])}
    assert asked and asked <= exported_names(), asked - exported_names()
