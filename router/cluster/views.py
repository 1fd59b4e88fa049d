"""What the front shows of the cluster: each model with the hosts that hold it
(`/v1/models`, `/models`; then the selectors and the active profile's pins, as one
host lists them) and the dashboard's rows, built from the agents' last reports.
Pure reads of `ClusterManager.hosts`; no Ray call."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlsplit

from router.api.model_api import selector_entries
from router.api.profiles import profile_entries
from router.catalogue.config import ApiKey
from router.cluster.front import ClusterManager
from router.core.scheduler import State
from router.core.snapshot import listed_status
from router.http.api_keys import may_use

HELD = ("loaded", "loading", "unloading")


def model_entries(cluster: ClusterManager, key: ApiKey | None) -> list[dict[str, Any]]:
    """Each model once, with where it runs: `host` (where it is loaded, else loading)
    and `hosts` (every host that holds it, with its state there); each selector, with the
    status of the target it would choose now; the active profile's pins."""
    now = int(time.time())
    out = []
    for name, spec in cluster.config.models.items():
        if spec.unlisted or not may_use(key, spec):
            continue
        held = [{"host": h.name, "status": m["state"], "in_flight": m["inflight"], "waiting": m["waiting"]}
                for h in cluster.hosts.values() for n, m in h.report.get("models", {}).items() if n == name]
        states = [x["status"] for x in held]
        value = listed_status(State(next((s for s in HELD if s in states), "unloaded")))  # llama.cpp's values
        host = next((x["host"] for x in held if x["status"] == value), None)
        out.append({"id": name, "name": spec.display_name or name, "aliases": list(spec.aliases),
                    "object": "model", "owned_by": "llama-router", "created": now,
                    "status": {"value": value, "args": list(spec.args)}, "host": host, "hosts": held})
    if cluster.config.selectors:
        out += selector_entries(cluster.config, cluster.states(cluster.config.models), key, now)
    return out + profile_entries(cluster, key, out, now)


def dashboard_rows(cluster: ClusterManager) -> list[dict[str, Any]]:
    """The dashboard's table in cluster mode: one row per model and host holding it,
    and one row (no host) for each model held nowhere."""
    rows = []
    for name, spec in cluster.config.models.items():
        held: list[tuple[str | None, Any]] = sorted(((h.name, m) for h in cluster.hosts.values()
                                                     for n, m in h.report.get("models", {}).items() if n == name),
                                                    key=lambda x: x[0] or "")
        for host, m in held or [(None, None)]:
            port = urlsplit(m["base_url"]).port if m and m.get("base_url") else None
            rows.append({
                "name": name, "aliases": list(spec.aliases), "group": spec.group, "host": host,
                "state": m["state"] if m else "unloaded", "port": port, "pid": m.get("pid") if m else None,
                "rss_bytes": None, "vram_bytes": None, "inflight": m["inflight"] if m else 0,
                "waiting": m["waiting"] if m else 0, "progress": None, "ready_since": None,
                "loads": m.get("loads", 0) if m else 0, "last_load_s": None, "failed": False, "exit_code": None,
                "last_error": None, "missing": False, "memory": {"figure": m["memory"]} if m else {},
            })
    return rows
