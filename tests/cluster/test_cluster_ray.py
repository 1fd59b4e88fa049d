"""Many hosts behind one router, end to end: a simulated three-node Ray cluster
(ray.cluster_utils), one agent per node with its own port range and RAM budget,
real llama-server children on tiny models, the front's aiohttp app in this process.

Budgets (node labels): n1 (the head) and n2 hold 40 MiB each, n3 holds 130 MiB.
A tiny model at -c 512 takes about 22 MiB, `big` (-c 65536) about 102 MiB, so
`big` fits on n3 only, and n1/n2 hold one tiny model each.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import pytest

from tests.cluster.conftest import NO_RAY
from tests.support.routerproc import free_port

pytestmark = [pytest.mark.cluster, pytest.mark.real]

SECRET = "cluster-test-secret-0123456789"
MIB = 1024 ** 2
NODES = {"n1": ("40MiB", "52100-52149"), "n2": ("40MiB", "52150-52199"), "n3": ("130MiB", "52200-52249")}
SLOW_LOAD_S = 4


def labels(name: str) -> dict[str, str]:
    ram, ports = NODES[name]
    return {"llama-router/name": name, "llama-router/ram": ram, "llama-router/ports": ports}


@pytest.fixture(scope="module")
def ray_cluster():
    try:
        import ray
        from ray.cluster_utils import Cluster
    except ImportError:
        if os.environ.get("CI") == "true":
            pytest.fail(NO_RAY)
        pytest.skip(NO_RAY)
    fast_failure = {"health_check_period_ms": 500, "health_check_failure_threshold": 3}
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "include_dashboard": False, "object_store_memory": 80 * MIB, "labels": labels("n1"),
        "_system_config": fast_failure})
    nodes = {n: cluster.add_node(num_cpus=1, object_store_memory=80 * MIB, labels=labels(n)) for n in ("n2", "n3")}
    ray.init(address=cluster.address, namespace="llama-router-tests", log_to_driver=False)
    try:
        yield cluster, nodes
    finally:
        ray.shutdown()
        cluster.shutdown()


def catalogue(tmp_path: Path, llama_server: Path, tiny_dir: Path):
    from router.catalogue.parse import parse_config

    command = [str(llama_server), "--model", "$path", "--alias", "$name", "--host", "$host", "--port", "$port",
               "-np", "1"]
    slow = ["/bin/sh", "-c", f'sleep {SLOW_LOAD_S}; exec "$0" "$@"', *command]
    models: dict[str, Any] = {n: {"path": str(tiny_dir / f"{n}.gguf"), "args": ["--ctx-size", "512"]}
                              for n in ("tiny-a", "tiny-b", "tiny-c")}
    models["big"] = {"path": str(tiny_dir / "tiny-c.gguf"), "args": ["--ctx-size", "65536"]}
    models["slow"] = {"path": str(tiny_dir / "tiny-b.gguf"), "args": ["--ctx-size", "512"],
                      "spawn": {"command": slow}}
    return parse_config({
        "router": {"port": free_port(), "models_max": 0, "kv_persistence": False, "health_timeout": 30,
                   "slot_save_path": str(tmp_path / "slots"), "memory": {"ram": "64MiB", "gpu": "off"}},
        "spawn": {"command": command}, "models": models}, "<cluster test>")


@dataclass
class Front:
    url: str
    cluster: Any
    seen: set[int]  # every child pid any report showed

    def where(self, model: str, state: str = "loaded") -> list[str]:
        return sorted(h.name for h in self.cluster.hosts.values()
                      if h.report.get("models", {}).get(model, {}).get("state") == state)

    def reported(self, model: str) -> bool:
        """An agent's own report (not the front's note of a grant) shows `model` loaded."""
        return any(m.get("state") == "loaded" and not m.get("noted")
                   for h in self.cluster.hosts.values() for n, m in h.report.get("models", {}).items() if n == model)

    def host(self, name: str) -> Any:
        return next(h for h in self.cluster.hosts.values() if h.name == name)


async def until(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


@pytest.fixture
async def front(ray_cluster, tmp_path, llama_server, tiny_dir):
    from aiohttp import web

    from router.cluster.app import CLUSTER, create_cluster_app

    config = catalogue(tmp_path, llama_server, tiny_dir)
    app = create_cluster_app(config, SECRET)
    runner = web.AppRunner(app, handler_cancellation=True)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", config.router.port).start()
    f = Front(f"http://127.0.0.1:{config.router.port}", app[CLUSTER], set())

    async def watch_pids() -> None:
        while True:
            for h in list(f.cluster.hosts.values()):
                f.seen.update(m["pid"] for m in h.report.get("models", {}).values() if m.get("pid"))
            await asyncio.sleep(0.1)

    watcher = asyncio.create_task(watch_pids())
    try:
        await until(lambda: sum(1 for h in f.cluster.hosts.values() if h.report) == len(f.cluster.hosts) >= 2,
                    90, "every agent's first report")
        yield f
    finally:
        watcher.cancel()
        await runner.cleanup()  # every agent stops its children
        await until(lambda: not [p for p in f.seen if psutil.pid_exists(p)], 15, "no child left running")
        assert not _children_of(tiny_dir), "a llama-server child survived the front"


def _children_of(tiny_dir: Path) -> list[int]:
    out = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        if any(str(tiny_dir) in a for a in p.info["cmdline"] or ()):
            out.append(p.info["pid"])
    return out


async def chat(url: str, model: str, stream: bool = False, timeout: float = 60) -> tuple[int, Any]:
    body = {"model": model, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 4, "stream": stream}
    async with aiohttp.ClientSession() as s, s.post(url + "/v1/chat/completions", json=body,
                                                    timeout=aiohttp.ClientTimeout(total=timeout)) as r:
        return r.status, (await r.text() if stream else await r.json())


async def test_repeated_requests_for_a_model_load_it_once(front):
    for _ in range(3):
        status, reply = await chat(front.url, "tiny-a")
        assert status == 200, reply
        assert reply["model"] == "tiny-a" and reply["choices"][0]["message"]["content"]
    status, streamed = await chat(front.url, "tiny-a", stream=True)
    assert status == 200 and "data: [DONE]" in streamed
    await until(lambda: front.reported("tiny-a"), 5, "a report showing tiny-a")
    (name,) = front.where("tiny-a")
    m = front.host(name).report["models"]["tiny-a"]
    assert m["loads"] == 1
    assert front.seen <= {m["pid"]}  # one child, ever
    async with aiohttp.ClientSession() as s, s.get(front.url + "/v1/models") as r:
        listed = {e["id"]: e for e in (await r.json())["data"]}
    assert listed["tiny-a"]["host"] == name and listed["tiny-a"]["status"]["value"] == "loaded"
    assert listed["tiny-b"]["host"] is None


async def test_children_require_the_cluster_secret_which_no_command_line_shows(front):
    assert (await chat(front.url, "tiny-a"))[0] == 200
    await until(lambda: front.reported("tiny-a"), 5, "a report showing tiny-a")
    m = front.host(front.where("tiny-a")[0]).report["models"]["tiny-a"]
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    async with aiohttp.ClientSession() as s:
        async with s.post(m["base_url"] + "/v1/chat/completions", json=body) as r:
            assert r.status == 401
        async with s.post(m["base_url"] + "/v1/chat/completions", json=body,
                          headers={"Authorization": f"Bearer {SECRET}"}) as r:
            assert r.status == 200
    assert not any(SECRET in a for a in psutil.Process(m["pid"]).cmdline())


async def test_a_model_too_big_for_one_node_loads_where_it_fits(front):
    status, reply = await chat(front.url, "big")
    assert status == 200, reply
    await until(lambda: front.reported("big"), 5, "a report showing big")
    assert front.where("big") == ["n3"]


async def test_models_spill_to_the_nodes_with_room(front):
    for model in ("big", "tiny-a", "tiny-b", "tiny-c"):
        status, reply = await chat(front.url, model)
        assert status == 200, (model, reply)
    await until(lambda: all(front.reported(m) for m in ("big", "tiny-a", "tiny-b", "tiny-c")), 5, "four models loaded")
    # big takes n3; each tiny model goes where it fits without stopping anything.
    assert front.where("big") == ["n3"]
    assert sorted(front.where(m)[0] for m in ("tiny-a", "tiny-b", "tiny-c")) == ["n1", "n2", "n3"]
    for h in front.cluster.hosts.values():
        assert h.report["used"]["ram"] <= h.report["budget"]["ram"]
        loads = {n: m["loads"] for n, m in h.report["models"].items()}
        assert set(loads.values()) == {1}, (h.name, h.report["models"])  # nothing was evicted and loaded again


async def test_removing_a_node_mid_load_replaces_its_queued_requests_and_leaves_no_orphan(front, ray_cluster):
    """Runs last in this module: it takes n3 out of the shared cluster."""
    cluster, nodes = ray_cluster
    requests = [asyncio.create_task(chat(front.url, "slow")) for _ in range(2)]
    await until(lambda: front.where("slow", "loading"), 10, "slow loading somewhere")
    (name,) = front.where("slow", "loading")
    assert name == "n3"  # the most room
    pid = await until(lambda: front.host(name).report["models"]["slow"].get("pid"), SLOW_LOAD_S, "the child's pid")
    await asyncio.to_thread(cluster.remove_node, nodes["n3"])
    results = await asyncio.gather(*requests)
    assert [s for s, _ in results] == [200, 200], results
    assert "n3" not in {h.name for h in front.cluster.hosts.values()}
    await until(lambda: front.reported("slow"), 5, "slow loaded elsewhere")
    assert front.where("slow")[0] in ("n1", "n2")
    await until(lambda: not psutil.pid_exists(pid), 10, f"the child {pid} of the removed node to exit")
