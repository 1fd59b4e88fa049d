"""Cluster mode (docs/cluster.md) on one machine: a simulated three-node Ray
cluster (ray.cluster_utils), real llama-server children on six tiny GGUF
models, and `llama-router --cluster ADDRESS` in front of it.

Two rows:

* placement: a seeded trace of requests over the six models with Zipf-like
  popularity, sent one at a time, once with `cluster.placement: memory` (the
  default: the host where the model is loaded, else where it fits with the
  fewest evictions) and once with `round_robin` (hosts in turn: the naive
  baseline), each on a fresh Ray cluster, front and agents. Each node's RAM
  budget holds two tiny models, so the three nodes hold all six at once and
  only a placement that sends a model back where it is loaded avoids reloads.
  A load is a llama-server child start, counted exactly by a `llama-server`
  wrapper script in the spawn command that logs each start and execs the real
  binary (same pid, same arguments); the agents' own counts, polled from the
  front's `GET /cluster`, are kept in the JSON as a cross-check;
* added latency: the same tiny model, already loaded, behind a direct
  llama-server, a single-host llama-router and the cluster front; sequential
  non-streamed requests (max_tokens 1) interleaved across the three over one
  kept-alive connection each.

Everything stays on loopback: the Ray nodes, the front's driver, the agents and
their children bind to 127.0.0.1 (a child started anywhere else fails the run).

`python -m bench.cluster [--requests 200] [--latency-requests 200] [--json OUT]`
(`make bench-cluster`) prints one markdown table per row.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import shlex
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil
import yaml

from .measure import percentile
from .targets import _popen, free_port, stop_tree

MiB = 1 << 20
MODELS = tuple(f"tiny-{c}" for c in "abcdef")  # most popular first
CHILD_ARGS = ["--ctx-size", "512"]  # about 22 MiB each by the router's estimate
NODES = {  # name: (RAM budget: two tiny models, children's ports)
    "n1": ("50MiB", "55100-55149"),
    "n2": ("50MiB", "55150-55199"),
    "n3": ("50MiB", "55200-55249"),
}
SINGLE_PORTS = [55300, 55349]
LOOPBACK = "127.0.0.1"
# Read by Ray when it is imported: without it Ray takes "127.0.0.1" (in ray.init's address and a
# node's address) to mean this machine's own network address. The fronts inherit it.
RAY_LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
SPAWN_LOG = "spawns.log"
POLICIES = ("memory", "round_robin")
SEED = 20261124
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 60.0
REQUEST_TIMEOUT_S = 120.0
WARMUP = 5


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ----- pure helpers ----------------------------------------------------------
def trace(n: int, names: tuple[str, ...] = MODELS, seed: int = SEED) -> list[str]:
    """`n` model names, Zipf popularity (s = 1): the k-th name weighs 1/k."""
    weights = [1 / (rank + 1) for rank in range(len(names))]
    return random.Random(seed).choices(names, weights, k=n)


def parse_spawns(text: str) -> list[tuple[str, int]]:
    """(model, port) of every child start the spawn wrapper logged (one `PID ARGV...`
    line each; lines without --alias and --port, such as `--version`, are not starts)."""
    out = []
    for line in text.splitlines():
        args = line.split()
        if "--alias" in args and "--port" in args:
            alias, port = args.index("--alias") + 1, args.index("--port") + 1
            if port < len(args) and alias < len(args) and args[port].isdigit():
                out.append((args[alias], int(args[port])))
    return out


def spawn_hosts(text: str) -> set[str]:
    """The `--host` of every child start the spawn wrapper logged."""
    out = set()
    for line in text.splitlines():
        args = line.split()
        if "--alias" in args and "--host" in args[:-1]:
            out.add(args[args.index("--host") + 1])
    return out


def node_of(port: int) -> str:
    for name, (_, ports) in NODES.items():
        low, _, high = ports.partition("-")
        if int(low) <= port <= int(high):
            return name
    return "?"


def agents_count(snapshots: list[dict[str, Any]]) -> tuple[dict[str, int], dict[str, set[int]]]:
    """From successive `GET /cluster` answers: loads per model (each host's cumulative
    count of child starts, at its highest, summed over hosts) and every child pid seen.
    A host drops a stopped model from its report, so the last answer alone under-counts,
    and a child stopped within one report interval is never seen: both are lower bounds
    that cross-check the spawn log."""
    peak: dict[tuple[str, str], int] = {}
    pids: dict[str, set[int]] = {}
    for snap in snapshots:
        for h in snap.get("hosts", ()):
            for model, m in (h.get("models") or {}).items():
                if m.get("noted"):  # the front's own note of a grant, not the agent's word
                    continue
                key = (h.get("host", "?"), model)
                peak[key] = max(peak.get(key, 0), int(m.get("loads") or 0))
                if m.get("pid"):
                    pids.setdefault(model, set()).add(int(m["pid"]))
    loads: dict[str, int] = {}
    for (_, model), n in peak.items():
        loads[model] = loads.get(model, 0) + n
    return loads, pids


def held(snapshot: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per host of one `GET /cluster` answer: RAM budget and use (MiB), and the models it holds."""
    return {h.get("host", "?"): {"budget_mib": round((h.get("budget") or {}).get("ram", 0) / MiB, 1),
                                 "used_mib": round((h.get("used") or {}).get("ram", 0) / MiB, 1),
                                 "models": sorted(h.get("models") or {})}
            for h in snapshot.get("hosts", ())}


@dataclass
class TraceOutcome:
    policy: str
    requests: dict[str, int]
    loads: dict[str, int]  # child starts per model (the spawn wrapper's log: exact)
    loads_by_host: dict[str, dict[str, int]]
    agents_loads: dict[str, int]  # the agents' own counts, as polled from GET /cluster (a lower bound)
    children_seen: dict[str, int]  # distinct child pids GET /cluster showed per model (a lower bound)
    total_s: float
    failures: int
    errors: list[str] = field(default_factory=list)
    hosts_end: dict[str, dict[str, Any]] = field(default_factory=dict)  # what each host held at the end
    latency_ms: list[float] = field(default_factory=list)  # each request's, in trace order
    children_started: list[int] = field(default_factory=list)  # each request's: child starts it waited for

    def split(self, started: bool) -> list[float]:
        """The latencies of the requests that waited for a child start (or of those that did not)."""
        return [ms for ms, n in zip(self.latency_ms, self.children_started, strict=True) if (n > 0) is started]


@dataclass
class LatencyOutcome:
    label: str
    samples_ms: list[float]
    failures: int = 0

    @property
    def p50(self) -> float:
        return percentile(self.samples_ms, 50)

    @property
    def p90(self) -> float:
        return percentile(self.samples_ms, 90)


def trace_table(outcomes: list[TraceOutcome], n: int) -> str:
    head = " | ".join(f"loads, {o.policy}" for o in outcomes)
    lines = [f"Cluster placement: {n} requests over {len(MODELS)} tiny models (Zipf popularity, one at a time), "
             f"three nodes of {NODES['n1'][0]} RAM each (two models per node); loads = llama-server child starts.",
             "",
             f"| Model | requests | {head} |", "|---" * (2 + len(outcomes)) + "|"]
    requests = outcomes[0].requests if outcomes else {}
    for model in MODELS:
        cells = " | ".join(str(o.loads.get(model, 0)) for o in outcomes)
        lines.append(f"| {model} | {requests.get(model, 0)} | {cells} |")
    cells = " | ".join(f"**{sum(o.loads.values())}**" for o in outcomes)
    lines.append(f"| **all** | {sum(requests.values())} | {cells} |")
    lines.append("| total time | | " + " | ".join(f"{o.total_s:.1f} s" for o in outcomes) + " |")
    for label, started in (("request that started a child, p50 / p90", True),
                           ("request served by a loaded child, p50 / p90", False)):
        lines.append(f"| {label} | | " + " | ".join(_p50_p90(o.split(started)) for o in outcomes) + " |")
    lines.append("| failed | | " + " | ".join(str(o.failures) for o in outcomes) + " |")
    return "\n".join(lines)


def _p50_p90(ms: list[float]) -> str:
    return f"{percentile(ms, 50):.0f} / {percentile(ms, 90):.0f} ms ({len(ms)})" if ms else "-"


def latency_table(outcomes: list[LatencyOutcome]) -> str:
    n = len(outcomes[0].samples_ms) if outcomes else 0
    lines = [f"Added latency: {n} sequential non-streamed chat requests (max_tokens 1) per path to one tiny "
             "model already loaded, interleaved across the paths, one kept-alive connection each.", "",
             "| Path | p50 | p90 | added p50 | added p90 | failed |", "|---|---|---|---|---|---|"]
    base = outcomes[0] if outcomes else None
    for o in outcomes:
        added = ("-", "-") if o is base or base is None else (f"{o.p50 - base.p50:+.1f} ms",
                                                               f"{o.p90 - base.p90:+.1f} ms")
        lines.append(f"| {o.label} | {o.p50:.1f} ms | {o.p90:.1f} ms | {added[0]} | {added[1]} | {o.failures} |")
    return "\n".join(lines)


# ----- processes -------------------------------------------------------------
class Client:
    """One kept-alive HTTP connection: the same client for every path measured."""

    def __init__(self, url: str):
        host, _, port = url.removeprefix("http://").partition(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=REQUEST_TIMEOUT_S)

    def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        for attempt in range(2):
            try:
                self.conn.request("POST", path, body, {"Content-Type": "application/json"})
                r = self.conn.getresponse()
                return r.status, r.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.conn.close()  # the server closed the kept-alive connection: open another once
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.conn.close()


def chat_body(model: str, max_tokens: int) -> bytes:
    return json.dumps({"model": model, "messages": [{"role": "user", "content": "Hi"}],
                       "max_tokens": max_tokens, "temperature": 0}).encode()


def get_json(url: str, timeout: float = 5) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


class Server:
    """A process this bench started (front, router or llama-server), stopped by pid."""

    def __init__(self, label: str, url: str, argv: list[str], log_path: Path):
        self.label, self.url, self.log_path = label, url, log_path
        self.proc, self._log = _popen(argv, log_path)

    def wait(self, ready: Any, timeout: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.label} exited with {self.proc.returncode}; see {self.log_path}:\n"
                                   + self.log_path.read_text(errors="replace")[-3000:])
            try:
                if ready(get_json(self.url + "/health", 2)):
                    return
            except (OSError, ValueError):
                pass
            time.sleep(0.2)
        raise TimeoutError(f"{self.label} not ready in {timeout:g} s; see {self.log_path}")

    def stop(self) -> None:
        """SIGTERM (a front then stops every agent and child), then SIGKILL; then any
        child that survived, by pid."""
        stop_tree(self.proc, on_kill=lambda: log(f"{self.label} did not stop in {STOP_TIMEOUT_S:g} s: SIGKILL"))
        self._log.close()  # type: ignore[attr-defined]

    @classmethod
    def started(cls, label: str, url: str, argv: list[str], log_path: Path, ready: Any) -> Server:
        """Start it and wait until its /health satisfies `ready`; stopped again if it never does."""
        server = cls(label, url, argv, log_path)
        try:
            server.wait(ready)
        except BaseException:
            server.stop()
            raise
        return server


def write_models(folder: Path) -> Path:
    from tests.support.tinygguf import write_tiny_model

    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(MODELS):
        write_tiny_model(folder / f"{name}.gguf", name=name, seed=i)
    return folder


def spawn_wrapper(folder: Path, binary: str) -> Path:
    """A `llama-server` script that logs each start, then execs the real one (same pid,
    same arguments; named llama-server so the router treats it as one)."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "llama-server"
    script.write_text(f'#!/bin/sh\necho "$$ $*" >> {shlex.quote(str(folder / SPAWN_LOG))}\n'
                      f'exec {shlex.quote(binary)} "$@"\n')
    script.chmod(0o755)
    return script


def catalogue(server: Path, models: Path, work: Path, port: int, names: tuple[str, ...],
              cluster: dict[str, Any] | None = None) -> dict[str, Any]:
    """The catalogue the front and the single-host router read: the same children."""
    command = [str(server), "--model", "$path", "--alias", "$name", "--host", "$host", "--port", "$port", "-np", "1"]
    data: dict[str, Any] = {
        "router": {"host": "127.0.0.1", "port": port, "models_max": 0, "kv_persistence": False,
                   "watch_config": False, "health_timeout": 30, "port_range": SINGLE_PORTS,
                   "slot_save_path": str(work / "slots"), "memory": {"ram": NODES["n1"][0], "gpu": "off"}},
        "spawn": {"command": command},
        "models": {n: {"path": str(models / f"{n}.gguf"), "args": CHILD_ARGS} for n in names},
    }
    if cluster is not None:
        data["cluster"] = cluster
    return data


def write_yaml(path: Path, data: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


class RayCluster:
    """Three simulated nodes on this machine, each labelled with its name, budget and ports."""

    def __init__(self) -> None:
        os.environ.update(RAY_LOOPBACK_ENV)  # before Ray is imported
        from ray.cluster_utils import Cluster

        def labels(name: str) -> dict[str, str]:
            ram, ports = NODES[name]
            return {"llama-router/name": name, "llama-router/ram": ram, "llama-router/ports": ports,
                    "llama-router/address": LOOPBACK}

        first, *others = NODES
        node: dict[str, Any] = {"num_cpus": 1, "object_store_memory": 80 * MiB, "node_ip_address": LOOPBACK}
        self.cluster = Cluster(initialize_head=True, head_node_args={
            **node, "include_dashboard": False, "labels": labels(first)})
        try:
            for name in others:
                self.cluster.add_node(**node, labels=labels(name))
        except BaseException:
            self.cluster.shutdown()
            raise
        self.address: str = self.cluster.address
        if not self.address.startswith(f"{LOOPBACK}:"):
            self.cluster.shutdown()
            raise RuntimeError(f"the Ray head is not on loopback: {self.address}")

    def shutdown(self) -> None:
        self.cluster.shutdown()


def start_front(binary: str, models: Path, work: Path, address: str, policy: str) -> Server:
    port = free_port()
    server = spawn_wrapper(work / policy, binary)
    cfg = write_yaml(work / f"front-{policy}.yaml", catalogue(server, models, work / policy, port, MODELS,
                                                              {"placement": policy}))
    return Server.started(f"cluster front ({policy})", f"http://127.0.0.1:{port}",
                          [sys.executable, "-m", "router", "--config", str(cfg), "--cluster", address,
                           "--log-level", "info"], work / f"front-{policy}.log",
                          lambda h: h.get("hosts") == len(NODES))


def start_single(binary: str, models: Path, work: Path, model: str) -> Server:
    port = free_port()
    server = spawn_wrapper(work / "single", binary)
    cfg = write_yaml(work / "single.yaml", catalogue(server, models, work / "single", port, (model,)))
    return Server.started("single-host llama-router", f"http://127.0.0.1:{port}",
                          [sys.executable, "-m", "router", "--config", str(cfg), "--log-level", "info"],
                          work / "single.log", lambda h: h.get("status") == "ok")


def start_direct(binary: str, models: Path, work: Path, model: str) -> Server:
    port = free_port()
    argv = [binary, "--model", str(models / f"{model}.gguf"), "--alias", model, "--host", "127.0.0.1",
            "--port", str(port), "-np", "1", *CHILD_ARGS]
    return Server.started("direct llama-server", f"http://127.0.0.1:{port}", argv, work / "direct.log",
                          lambda h: h.get("status") == "ok")


def stray_children(models: Path) -> list[psutil.Process]:
    """llama-server processes on this run's model files (none should outlive their parent)."""
    out = []
    for p in psutil.process_iter(["cmdline"]):
        if any(str(models) in a for a in p.info["cmdline"] or ()):
            out.append(p)
    return out


def kill_strays(models: Path) -> None:
    strays = stray_children(models)
    if strays:
        log(f"killing {len(strays)} leftover llama-server child(ren): {[p.pid for p in strays]}")
    for p in strays:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(strays, timeout=10)


# ----- the two rows ----------------------------------------------------------
class ClusterWatch:
    """Polls the front's GET /cluster every 250 ms (the agents report every 500 ms)."""

    def __init__(self, url: str):
        self.url = url
        self.snapshots: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.poll()
            self._stop.wait(0.25)

    def poll(self) -> None:
        try:
            self.snapshots.append(get_json(self.url + "/cluster"))
        except (OSError, ValueError):
            pass

    def __enter__(self) -> ClusterWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        time.sleep(1.0)  # one more round of reports, then a last look
        self.poll()


def replay(front: Server, policy: str, requests: list[str], spawn_log: Path) -> TraceOutcome:
    client = Client(front.url)
    failures, errors, times, started = 0, [], [], []
    spawns = 0
    try:
        with ClusterWatch(front.url) as watch:
            t0 = time.perf_counter()
            for i, model in enumerate(requests):
                sent = time.perf_counter()
                try:
                    status, body = client.post("/v1/chat/completions", chat_body(model, 4))
                except OSError as e:
                    status, body = 0, str(e).encode()
                times.append((time.perf_counter() - sent) * 1e3)
                before, spawns = spawns, _starts(spawn_log)
                started.append(spawns - before)
                if status != 200:
                    failures += 1
                    errors.append(f"#{i} {model}: {status} {body[:200].decode(errors='replace')}")
                    client.close()
            total = time.perf_counter() - t0
    finally:
        client.close()
    spawned = spawn_log.read_text() if spawn_log.exists() else ""
    starts = parse_spawns(spawned)
    elsewhere = sorted(spawn_hosts(spawned) - {LOOPBACK})
    if elsewhere:  # the bench measures loopback only
        failures += 1
        errors.insert(0, f"children were started on {', '.join(elsewhere)}, not {LOOPBACK}")
    by_host: dict[str, dict[str, int]] = {}
    for model, port in starts:
        row = by_host.setdefault(model, {})
        row[node_of(port)] = row.get(node_of(port), 0) + 1
    agents, pids = agents_count(watch.snapshots)
    return TraceOutcome(policy, dict(Counter(requests)), dict(Counter(m for m, _ in starts)), by_host, agents,
                        {m: len(p) for m, p in pids.items()}, total, failures, errors[:10],
                        held(watch.snapshots[-1] if watch.snapshots else {}), times, started)


def _starts(path: Path) -> int:
    try:
        return len(parse_spawns(path.read_text()))
    except FileNotFoundError:
        return 0


def latency(paths: list[tuple[str, str]], model: str, n: int) -> list[LatencyOutcome]:
    """For each (label, url): warm-up, then `n` rounds of one request per path, in
    turn: drift on a shared machine hits every path alike."""
    clients = [Client(url) for _, url in paths]
    out = [LatencyOutcome(label, []) for label, _ in paths]
    body = chat_body(model, 1)
    try:
        for c in clients:
            for _ in range(WARMUP):
                c.post("/v1/chat/completions", body)
        for _ in range(n):
            for c, o in zip(clients, out, strict=True):
                t0 = time.perf_counter()
                try:
                    status, _ = c.post("/v1/chat/completions", body)
                except OSError:
                    status = 0
                if status == 200:
                    o.samples_ms.append((time.perf_counter() - t0) * 1e3)
                else:
                    o.failures += 1
                    c.close()
    finally:
        for c in clients:
            c.close()
    return out


def run_policy(binary: str, models: Path, work: Path, policy: str, requests: list[str],
               latency_n: int) -> tuple[TraceOutcome, list[LatencyOutcome]]:
    """A fresh Ray cluster, front and agents for one placement policy; with `latency_n`,
    the latency row too, on this front once the trace has loaded the model."""
    log(f"starting a three-node Ray cluster for placement {policy}")
    ray_cluster = RayCluster()
    started: list[Server] = []
    try:
        front = start_front(binary, models, work, ray_cluster.address, policy)
        started.append(front)
        log(f"trace of {len(requests)} requests, placement {policy}")
        outcome = replay(front, policy, requests, work / policy / SPAWN_LOG)
        lat: list[LatencyOutcome] = []
        if latency_n:
            model = MODELS[0]
            log(f"latency: {latency_n} requests to {model} per path")
            direct = start_direct(binary, models, work, model)
            started.append(direct)
            single = start_single(binary, models, work, model)
            started.append(single)
            lat = latency([(direct.label, direct.url), (single.label, single.url),
                           ("llama-router --cluster (3 nodes)", front.url)], model, latency_n)
        return outcome, lat
    finally:
        for s in reversed(started):
            s.stop()
        ray_cluster.shutdown()
        kill_strays(models)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.cluster", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-n", "--requests", type=int, default=200, help="requests in the placement trace")
    p.add_argument("--latency-requests", type=int, default=200, help="timed requests per path (0: no latency row)")
    p.add_argument("--json", metavar="OUT", type=Path, help="write the raw figures there")
    p.add_argument("--keep-logs", metavar="DIR", type=Path, help="copy the processes' logs there")
    args = p.parse_args(argv)
    from .__main__ import find_binary

    binary = find_binary()
    requests = trace(args.requests)
    t0 = time.perf_counter()
    outcomes: list[TraceOutcome] = []
    lat: list[LatencyOutcome] = []
    with tempfile.TemporaryDirectory(prefix="llama-router-bench-cluster-") as tmp:
        work = Path(tmp)
        models = write_models(work / "models")
        try:
            for policy in POLICIES:
                outcome, got = run_policy(binary, models, work, policy, requests,
                                          args.latency_requests if policy == "memory" else 0)
                outcomes.append(outcome)
                lat = lat or got
        finally:
            if args.keep_logs:
                args.keep_logs.mkdir(parents=True, exist_ok=True)
                for f in work.rglob("*.log"):
                    name = "-".join(f.relative_to(work).parts)
                    (args.keep_logs / name).write_bytes(f.read_bytes())
    wall = time.perf_counter() - t0
    print_report(outcomes, lat, args.requests, wall, binary)
    if args.json:
        args.json.write_text(json.dumps({
            "requests": args.requests, "seed": SEED, "nodes": NODES, "models": MODELS, "wall_s": wall,
            "trace": [asdict(o) for o in outcomes],
            "latency": [{**asdict(o), "p50_ms": o.p50, "p90_ms": o.p90} for o in lat],
        }, indent=2))
    return 0 if all(o.failures == 0 for o in outcomes) and all(o.failures == 0 for o in lat) else 1


def print_report(outcomes: list[TraceOutcome], lat: list[LatencyOutcome], n: int, wall: float,
                 binary: str) -> None:
    print(trace_table(outcomes, n))
    for o in outcomes:
        for e in o.errors:
            print(f"  {o.policy}: {e}")
        over = {m: n for m, n in o.agents_loads.items() if n > o.loads.get(m, 0)}
        if over:  # the agents counted a start the wrapper did not log: the spawn log is not the whole story
            print(f"  {o.policy}: agents reported more loads than the spawn log shows: {over}")
    if lat:
        print()
        print(latency_table(lat))
    print(f"\n(wall time {wall:.0f} s; {os.cpu_count()} CPU(s); llama-server {binary})")


if __name__ == "__main__":
    sys.exit(main())
