"""Many hosts behind one router, end to end: a simulated three-node Ray cluster
(ray.cluster_utils), one agent per node with its own port range and RAM budget,
real llama-server children on tiny models, the front's aiohttp app in this process.

Budgets (node labels): n1 (the head) and n2 hold 40 MiB each, n3 holds 130 MiB.
A tiny model at -c 512 takes about 22 MiB, `big` (-c 65536) about 102 MiB, so
`big` fits on n3 only, and n1/n2 hold one tiny model each.

Every node, driver, agent and child is bound to 127.0.0.1 (conftest.py fails a test
whose processes listen elsewhere).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import pytest
import requests
import trustme
import yaml

from tests.cluster.conftest import LOOPBACK, NO_RAY
from tests.support.opskit import wait_until
from tests.support.routerproc import free_port
from tests.support.tinygguf import write_tiny_model

pytestmark = [pytest.mark.cluster, pytest.mark.real]

SECRET = "cluster-test-secret-0123456789"
MIB = 1024 ** 2
NODES = {"n1": ("40MiB", "52100-52149"), "n2": ("40MiB", "52150-52199"), "n3": ("130MiB", "52200-52249")}
SLOW_LOAD_S = 4


def labels(name: str) -> dict[str, str]:
    ram, ports = NODES[name]
    return {"llama-router/name": name, "llama-router/ram": ram, "llama-router/ports": ports,
            "llama-router/address": LOOPBACK}


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
        "_system_config": fast_failure, "node_ip_address": LOOPBACK})
    nodes = {n: cluster.add_node(num_cpus=1, object_store_memory=80 * MIB, labels=labels(n),
                                 node_ip_address=LOOPBACK) for n in ("n2", "n3")}
    ray.init(address=cluster.address, namespace="llama-router-tests", log_to_driver=False,
             _node_ip_address=LOOPBACK)
    assert {n["NodeManagerAddress"] for n in ray.nodes()} == {LOOPBACK}, ray.nodes()
    try:
        yield cluster, nodes
    finally:
        ray.shutdown()
        cluster.shutdown()


def catalogue(tmp_path: Path, llama_server: Path, tiny_dir: Path):
    from router.catalogue.parse import parse_config

    return parse_config(catalogue_data(tmp_path, llama_server, tiny_dir), "<cluster test>")


def catalogue_data(tmp_path: Path, llama_server: Path, tiny_dir: Path) -> dict[str, Any]:
    command = [str(llama_server), "--model", "$path", "--alias", "$name", "--host", "$host", "--port", "$port",
               "-np", "1"]
    slow = ["/bin/sh", "-c", f'sleep {SLOW_LOAD_S}; exec "$0" "$@"', *command]
    models: dict[str, Any] = {n: {"path": str(tiny_dir / f"{n}.gguf"), "args": ["--ctx-size", "512"]}
                              for n in ("tiny-a", "tiny-b", "tiny-c")}
    models["big"] = {"path": str(tiny_dir / "tiny-c.gguf"), "args": ["--ctx-size", "65536"]}
    models["slow"] = {"path": str(tiny_dir / "tiny-b.gguf"), "args": ["--ctx-size", "512"],
                      "spawn": {"command": slow}}
    ui = tmp_path / "webui"  # a stand-in WebUI build: the page the front serves at /
    ui.mkdir(exist_ok=True)
    (ui / "index.html").write_text("<!doctype html><title>llama.cpp webui stand-in</title>")
    return {
        "router": {"port": free_port(), "models_max": 0, "kv_persistence": False, "health_timeout": 30,
                   "slot_save_path": str(tmp_path / "slots"), "memory": {"ram": "64MiB", "gpu": "off"},
                   "ui_path": str(ui)},
        "spawn": {"command": command}, "models": models}


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
        assert not _children_of(tiny_dir, tmp_path), "a llama-server child survived the front"


def _children_of(*dirs: Path) -> list[int]:
    """The processes whose command line names a file in one of `dirs` (the models' folders)."""
    out = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        if any(str(d) in a for a in p.info["cmdline"] or () for d in dirs):
            out.append(p.info["pid"])
    return out


async def chat(url: str, model: str, stream: bool = False, timeout: float = 60) -> tuple[int, Any]:
    body = {"model": model, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 4, "stream": stream}
    async with aiohttp.ClientSession() as s, s.post(url + "/v1/chat/completions", json=body,
                                                    timeout=aiohttp.ClientTimeout(total=timeout)) as r:
        return r.status, (await r.text() if stream else await r.json())


async def request(url: str, method: str, path: str, key: str | None = None, json: Any = None) -> tuple[int, Any]:
    """One JSON request to the front, with `key` as the bearer token when given: (status, body)."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with aiohttp.ClientSession() as s, s.request(method, url + path, json=json, headers=headers,
                                                       timeout=aiohttp.ClientTimeout(total=60)) as r:
        return r.status, await r.json()


async def follow_events(url: str, into: list[dict[str, Any]]) -> None:
    """Append each server-sent event of `url` to `into` until cancelled."""
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        async for line in r.content:
            if line.startswith(b"data: "):
                into.append(json.loads(line[6:]))


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


async def test_children_require_the_cluster_secret_which_no_command_line_shows(front, listens_on_loopback_only):
    assert (await chat(front.url, "tiny-a"))[0] == 200
    await until(lambda: front.reported("tiny-a"), 5, "a report showing tiny-a")
    m = front.host(front.where("tiny-a")[0]).report["models"]["tiny-a"]
    assert m["base_url"].startswith(f"http://{LOOPBACK}:"), m["base_url"]  # the front reaches it on loopback
    child = [c.laddr.ip for c in psutil.Process(m["pid"]).net_connections("inet") if c.status == psutil.CONN_LISTEN]
    assert child and set(child) == {LOOPBACK}, child
    listens_on_loopback_only.sample()
    assert listens_on_loopback_only.listening("llama-server") == [LOOPBACK]  # the watch sees the children
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


async def test_a_long_queue_starts_a_replica_on_another_host(front):
    from dataclasses import replace

    from router.catalogue.config import ClusterSettings

    replicas = ClusterSettings(replicas=2, queue_threshold=2)
    await front.cluster.set_config(replace(front.cluster.config, cluster=replicas))
    assert (await chat(front.url, "tiny-c"))[0] == 200
    await until(lambda: front.reported("tiny-c"), 5, "a report showing tiny-c")
    (first,) = front.where("tiny-c")

    async def long_chat() -> int:
        body = {"model": "tiny-c", "messages": [{"role": "user", "content": "count"}], "max_tokens": 200,
                "ignore_eos": True}
        async with aiohttp.ClientSession() as s, s.post(front.url + "/v1/chat/completions", json=body,
                                                        timeout=aiohttp.ClientTimeout(total=60)) as r:
            await r.read()
            return r.status

    statuses = await asyncio.gather(*(long_chat() for _ in range(6)))
    assert statuses == [200] * 6
    await until(lambda: len(front.where("tiny-c")) == 2, 5, "tiny-c on two hosts")
    assert first in front.where("tiny-c")
    for h in front.cluster.hosts.values():
        assert h.report["models"].get("tiny-c", {}).get("loads", 0) <= 1, "each copy loaded once"


async def test_api_keys_keep_their_roles_models_and_limits_in_cluster_mode(front):
    from router.catalogue.config import ApiKey, Rate

    keys = (ApiKey(key="reader-key-0001", role="read"), ApiKey(key="team-a-key-0001", models=("tiny-a",)),
            ApiKey(key="once-a-minute-01", rate=Rate(1, 60.0)))
    await front.cluster.set_config(front.cluster.config.with_router(api_keys=keys))
    body = {"model": "tiny-a", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}

    async def call(method: str, path: str, key: str | None, json: Any = None) -> tuple[int, Any]:
        return await request(front.url, method, path, key, json)

    assert (await call("POST", "/v1/chat/completions", None, body))[0] == 401
    status, listed = await call("GET", "/v1/models", "reader-key-0001")
    assert status == 200 and {"tiny-a", "tiny-b"} <= {m["id"] for m in listed["data"]}
    status, refused = await call("POST", "/v1/chat/completions", "reader-key-0001", body)
    assert status == 403 and refused["error"]["code"], refused
    assert (await call("POST", "/v1/chat/completions", "team-a-key-0001", body))[0] == 200
    status, hidden = await call("POST", "/v1/chat/completions", "team-a-key-0001", {**body, "model": "tiny-b"})
    assert status == 404 and hidden["error"]["code"] == "model_not_found"
    assert [m["id"] for m in (await call("GET", "/v1/models", "team-a-key-0001"))[1]["data"]] == ["tiny-a"]
    assert (await call("POST", "/v1/chat/completions", "once-a-minute-01", body))[0] == 200
    status, limited = await call("POST", "/v1/chat/completions", "once-a-minute-01", body)
    assert status == 429 and limited["error"]["code"], limited


async def test_models_load_and_unload_as_llama_cpp_clients_call_them(front):
    async def post(path: str, body: dict[str, Any]) -> tuple[int, Any]:
        async with aiohttp.ClientSession() as s, s.post(front.url + path, json=body,
                                                        timeout=aiohttp.ClientTimeout(total=60)) as r:
            return r.status, await r.json()

    status, loaded = await post("/models/load", {"model": "big"})
    assert status == 200 and loaded == {"success": True, "host": "n3"}, loaded
    await until(lambda: front.reported("big"), 30, "big loaded on n3 without a request")
    assert front.where("big") == ["n3"]
    status, unloaded = await post("/models/unload", {"model": "big"})
    assert status == 200 and unloaded["hosts"] == ["n3"], unloaded
    await until(lambda: not front.where("big"), 15, "big unloaded")
    status, again = await post("/models/unload", {"model": "big"})
    assert status == 400 and again["error"]["code"] == "model_not_running"
    assert (await post("/models/load", {"model": "nope"}))[0] == 404
    status, refused = await post("/models/load", {"model": "tiny-a", "command": ["/bin/sh"]})
    assert status == 400 and "catalogue" in refused["error"]["message"]
    status, refused = await post("/models/load", {"model": "tiny-a", "args": ["--model", "/etc/passwd"]})
    assert status == 400, refused


async def test_the_webui_and_its_props_are_served_by_the_front(front):
    async with aiohttp.ClientSession() as s:
        async with s.get(front.url + "/") as r:
            assert r.status == 200 and "webui stand-in" in await r.text()
        async with s.get(front.url + "/props") as r:
            props = await r.json()
        assert props["role"] == "router" and props["max_instances"] == 0 and props["models_autoload"] is True
        assert props["cluster"] is True and props["hosts"] == 3
        async with s.post(front.url + "/v1/chat/completions/nope", json={}) as r:
            assert r.status in (404, 405) and "error" in await r.json()


async def test_models_sse_and_the_dashboard_say_which_host_holds_a_model(front):
    events: list[dict[str, Any]] = []
    listener = asyncio.create_task(follow_events(front.url + "/models/sse", events))
    try:
        await asyncio.sleep(0.3)
        assert (await chat(front.url, "big"))[0] == 200
        await until(lambda: any(e["model"] == "big" and e["data"]["status"] == "loaded" for e in events), 5,
                    "big's loaded event")
    finally:
        listener.cancel()
    loaded = next(e for e in events if e["model"] == "big" and e["data"]["status"] == "loaded")
    assert loaded["event"] == "status_change" and loaded["data"]["host"] == "n3"
    async with aiohttp.ClientSession() as s:
        async with s.get(front.url + "/dashboard") as r:
            assert r.status == 200 and "host-col" in await r.text()
        async with s.get(front.url + "/dashboard/api/models") as r:
            data = await r.json()
    assert data["cluster"] is True
    big = [row for row in data["models"] if row["name"] == "big"]
    assert [(row["host"], row["state"], row["loads"]) for row in big] == [("n3", "loaded", 1)]
    assert big[0]["pid"] and big[0]["port"]
    assert {row["state"] for row in data["models"] if row["name"] == "tiny-b"} == {"unloaded"}


async def test_the_admin_api_reaches_every_host_behind_the_admin_token(front):
    from router.cluster.admin import reload_catalogue

    async def call(method: str, path: str, token: str | None = None) -> tuple[int, Any]:
        return await request(front.url, method, path, token)

    assert (await call("GET", "/admin/status"))[0] == 403  # no admin token set: admin is off
    token = "cluster-admin-token-1"
    await front.cluster.set_config(front.cluster.config.with_router(admin_token=token))
    assert (await call("GET", "/admin/status", "wrong-token-xyz"))[0] == 401
    status, data = await call("GET", "/admin/status", token)
    assert status == 200 and sorted(h["host"] for h in data["hosts"]) == ["n1", "n2", "n3"]
    status, loaded = await call("POST", "/admin/models/big/load", token)
    assert status == 200 and loaded["host"] == "n3", loaded
    await until(lambda: front.reported("big"), 30, "big loaded by the admin API")
    status, unloaded = await call("POST", "/admin/models/big/unload", token)
    assert status == 200 and unloaded["hosts"] == ["n3"]
    status, refused = await call("POST", "/admin/reload", token)  # this front has no catalogue file
    assert status == 400 and "without a catalogue file" in refused["error"]
    renamed = front.cluster.config.with_router(models_max=5)
    res = await reload_catalogue(front.cluster, lambda: renamed, "test")
    assert res.ok and front.cluster.config.router.models_max == 5
    assert all(h.report.get("models_max") == 5 for h in front.cluster.hosts.values()), "every host has it"


async def test_a_models_lines_are_read_from_the_host_that_runs_it(front):
    lines: list[dict[str, Any]] = []
    listener = asyncio.create_task(follow_events(front.url + "/logs/stream/tiny-b?tail=0", lines))
    try:
        await asyncio.sleep(0.3)
        assert (await chat(front.url, "tiny-b"))[0] == 200
        await until(lambda: any("print_timing" in e["line"] for e in lines), 10, "tiny-b's timing lines, live")
    finally:
        listener.cancel()
    (host,) = front.where("tiny-b")
    assert {e["host"] for e in lines} == {host} and {e["model"] for e in lines} == {"tiny-b"}
    async with aiohttp.ClientSession() as s:
        async with s.get(front.url + "/logs/tiny-b") as r:
            text = await r.text()
        async with s.get(front.url + "/logs/tiny-b?format=json") as r:
            data = await r.json()
        async with s.get(front.url + "/logs/..%2F..%2Fetc%2Fpasswd") as r:
            assert r.status in (400, 404) and "error" in await r.json()
    assert f"[{host}] " in text and "load_model: loading model" in text
    assert list(data["hosts"][host]) and all(not kept for h, kept in data["hosts"].items() if h != host)


async def test_keep_alive_in_a_request_reaches_the_host(front):
    body = {"model": "tiny-a", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "keep_alive": 0}
    async with aiohttp.ClientSession() as s:
        async with s.post(front.url + "/v1/chat/completions", json=body) as r:
            assert r.status == 200 and (await r.json())["choices"]
        await until(lambda: front.where("tiny-a") == [] and front.cluster.hosts and all(
            "tiny-a" not in h.report.get("models", {}) for h in front.cluster.hosts.values()), 10,
            "tiny-a unloaded after its keep_alive 0 reply")
        async with s.post(front.url + "/v1/chat/completions", json={**body, "keep_alive": "bad"}) as r:
            assert r.status == 400 and (await r.json())["error"]["code"] == "invalid_keep_alive"


async def with_models(front: Front, tmp_path: Path, llama_server: Path, tiny_dir: Path,
                      models: dict[str, Any], router: dict[str, Any] | None = None, **sections: Any) -> None:
    """The test catalogue with `models` added (and `router` settings, and other top-level
    `sections`: selectors, profiles), handed to every host."""
    from router.catalogue.parse import parse_config

    data = catalogue_data(tmp_path, llama_server, tiny_dir)
    data["router"].update(port=front.cluster.config.router.port, **(router or {}))
    data["models"].update(models)
    data.update(sections)
    await front.cluster.set_config(parse_config(data, "<cluster test>"))


def waiting_on_hosts(front: Front, model: str) -> int:
    return sum(h.report.get("models", {}).get(model, {}).get("waiting", 0) for h in front.cluster.hosts.values())


async def test_priority_and_deadline_reach_the_host_that_queues_the_request(front, tmp_path, llama_server,
                                                                            tiny_dir):
    """X-Priority and X-Max-Wait apply through the front as on one host: the host's queue serves
    a normal request before a low one that came first, and a request that may wait 0.5 s for a
    model still loading gets a 503 queue_timeout with Retry-After (docs/scheduling.md)."""
    slow = ["/bin/sh", "-c", f'sleep {SLOW_LOAD_S}; exec "$0" "$@"', str(llama_server), "--model", "$path",
            "--alias", "$name", "--host", "$host", "--port", "$port", "-np", "1"]
    one_at_a_time = {"path": str(tiny_dir / "tiny-a.gguf"), "args": ["--ctx-size", "512"],
                     "spawn": {"command": slow}, "concurrency_limit": 1}
    await with_models(front, tmp_path, llama_server, tiny_dir, {"queued": one_at_a_time})
    finished: list[str] = []

    async def send(tag: str, headers: dict[str, str]) -> tuple[int, Any, Any]:
        body = {"model": "queued", "messages": [{"role": "user", "content": "count"}], "max_tokens": 16,
                "ignore_eos": True}
        async with aiohttp.ClientSession() as s, s.post(front.url + "/v1/chat/completions", json=body,
                                                        headers=headers,
                                                        timeout=aiohttp.ClientTimeout(total=60)) as r:
            reply = await r.json()
        finished.append(tag)
        return r.status, r.headers, reply

    status, _, bad = await send("bad", {"X-Priority": "urgent"})
    assert status == 400 and bad["error"]["code"] == "invalid_priority", bad
    low = asyncio.create_task(send("low", {"X-Priority": "low"}))  # first: it starts the load
    await until(lambda: waiting_on_hosts(front, "queued") == 1, SLOW_LOAD_S, "the low request queued on its host")
    normal = asyncio.create_task(send("normal", {}))
    await until(lambda: waiting_on_hosts(front, "queued") == 2, SLOW_LOAD_S, "the normal one queued behind it")
    asked = time.monotonic()
    status, headers, late = await send("late", {"X-Max-Wait": "0.5"})
    waited = time.monotonic() - asked
    assert status == 503 and late["error"]["code"] == "queue_timeout", late
    assert int(headers["Retry-After"]) >= 1 and 0.45 <= waited < SLOW_LOAD_S, (headers, waited)
    assert [(await t)[0] for t in (low, normal)] == [200, 200]
    assert finished == ["bad", "late", "normal", "low"], "the host served the higher priority first"


async def test_the_admin_lists_and_cancels_the_fronts_requests_and_replies_say_their_place(front, tmp_path,
                                                                                           llama_server, tiny_dir):
    """GET /admin/requests lists the front's requests (waiting or in flight, with their host and
    place there); DELETE /admin/requests/{id} cancels a waiting one (its client gets a 499
    request_cancelled, its host's queue drops it) and one in flight (its stream ends with an
    error event, the child stops); a request that waited says where it joined (X-Queue-Position)."""
    token = "cluster-admin-token-2"
    # A context of 16384 tokens: a reply runs on until cancelled (llama-server ends it at a full context).
    # The model is trained for that context too: llama-server caps a slot's at the model's, and the tiny
    # model's usual 2048 tokens could all be generated before the next request is seen waiting.
    model = write_tiny_model(tmp_path / "tiny-long.gguf", name="tiny-long", n_ctx_train=16384)  # this test's own
    long = {"path": str(model), "args": ["--ctx-size", "16384"], "concurrency_limit": 1}
    await with_models(front, tmp_path, llama_server, tiny_dir, {"long": long}, router={"admin_token": token})
    admin = {"X-Admin-Token": token}

    async def listed() -> dict[str, dict[str, Any]]:
        async with aiohttp.ClientSession() as s, s.get(front.url + "/admin/requests", headers=admin) as r:
            assert r.status == 200
            return {x["id"]: x for x in (await r.json())["requests"]}

    async def chat_as(rid: str) -> tuple[int, Any, Any]:
        body = {"model": "long", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
        async with aiohttp.ClientSession() as s, s.post(front.url + "/v1/chat/completions", json=body,
                                                        headers={"X-Request-Id": rid},
                                                        timeout=aiohttp.ClientTimeout(total=60)) as r:
            return r.status, r.headers, await r.json()

    async def poll(check, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = check(await listed())
            if got:
                return got
            await asyncio.sleep(0.1)
        raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")

    runaway = {"model": "long", "messages": [{"role": "user", "content": "count"}], "max_tokens": 400000,
               "ignore_eos": True, "stream": True}
    async with aiohttp.ClientSession() as s, s.post(front.url + "/v1/chat/completions", json=runaway,
                                                    headers={"X-Request-Id": "runaway"},
                                                    timeout=aiohttp.ClientTimeout(total=90)) as stream:
        assert stream.status == 200 and stream.headers["X-Queue-Position"] == "1", "first, it waited for the load"
        async for line in stream.content:
            if line.startswith(b"data: {"):
                break  # it is generating
        doomed = asyncio.create_task(chat_as("doomed"))
        first = await poll(lambda x: x.get("doomed", {}).get("position") == 1 and x, 30, "doomed waiting, next")
        patient = asyncio.create_task(chat_as("patient"))
        now = await poll(lambda x: x.get("patient", {}).get("position") == 2 and x, 30, "patient behind doomed")
        host = now["runaway"]["host"]
        assert host in ("n1", "n2", "n3") and first["runaway"]["state"] == "in_flight"
        assert [(now[r]["state"], now[r]["host"], now[r]["model"]) for r in ("doomed", "patient")] == [
            ("waiting", host, "long")] * 2, now

        async with aiohttp.ClientSession() as s, s.delete(front.url + "/admin/requests/doomed", headers=admin) as r:
            assert r.status == 200 and (await r.json())["state"] == "waiting"
        status, _, err = await asyncio.wait_for(doomed, 10)
        assert status == 499 and err["error"]["code"] == "request_cancelled", err
        await poll(lambda x: "doomed" not in x and x.get("patient", {}).get("position") == 1, 10,
                   "patient next, the host's queue without doomed")
        async with aiohttp.ClientSession() as s, s.delete(front.url + "/admin/requests/doomed", headers=admin) as r:
            assert r.status == 404 and (await r.json())["error"]["code"] == "request_not_found"

        async with aiohttp.ClientSession() as s, s.delete(front.url + "/admin/requests/runaway",
                                                          headers=admin) as r:
            assert r.status == 200 and (await r.json())["state"] == "in_flight"
        rest = [line async for line in stream.content if line.startswith(b"data: ")]
    assert json.loads(rest[-1][6:])["error"]["code"] == "request_cancelled", rest[-3:]
    status, headers, reply = await asyncio.wait_for(patient, 30)  # the child stopped the runaway: it serves
    assert status == 200 and reply["choices"], reply
    assert headers["X-Queue-Position"] == "2", "where it joined its host's queue"

    async def stopped() -> list[int]:
        async with aiohttp.ClientSession() as s, s.get(front.url + "/logs/long") as r:
            return [int(n) for n in re.findall(r"stop processing: n_tokens = (\d+)", await r.text())]
    deadline = time.monotonic() + 15
    while not (cut := await stopped()) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    assert cut and max(cut) < 16000, f"the child cut the runaway short, not a full context: {cut}"
    assert await listed() == {}
    async with aiohttp.ClientSession() as s, s.get(front.url + "/metrics") as r:
        text = await r.text()
    assert 'llama_router_requests_cancelled_total{model="long",state="waiting"} 1.0' in text
    assert 'llama_router_requests_cancelled_total{model="long",state="in_flight"} 1.0' in text


async def test_a_fallback_serves_when_no_host_can_take_the_model_or_its_load_fails(front, tmp_path, llama_server,
                                                                                  tiny_dir):
    """A model too big for every host: the front places its fallback; a model whose load fails
    on its host: that host's manager serves its fallback. Either way the reply names the model
    that served it and says why (X-Fallback-From, X-Fallback-Reason), as on one host."""
    await with_models(front, tmp_path, llama_server, tiny_dir, {
        "huge": {"path": str(tiny_dir / "tiny-c.gguf"), "args": ["--ctx-size", "262144"], "fallbacks": ["tiny-a"]},
        "broken": {"path": str(tiny_dir / "tiny-b.gguf"), "spawn": {"command": ["/bin/sh", "-c", "exit 3"]},
                   "fallbacks": ["tiny-b"]}})
    for asked, served, reason in (("huge", "tiny-a", "too_big"), ("broken", "tiny-b", "load_failed")):
        async with aiohttp.ClientSession() as s:
            body = {"model": asked, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
            async with s.post(front.url + "/v1/chat/completions", json=body,
                              timeout=aiohttp.ClientTimeout(total=60)) as r:
                reply = await r.json()
                assert r.status == 200, reply
                assert reply["model"] == served and reply["choices"][0]["message"]["content"] is not None
                assert (r.headers["X-Fallback-From"], r.headers["X-Fallback-Reason"]) == (asked, reason)
            async with s.post(front.url + "/v1/chat/completions", json={**body, "stream": True},
                              timeout=aiohttp.ClientTimeout(total=60)) as r:
                chunks = [json.loads(line[6:]) for line in (await r.text()).splitlines()
                          if line.startswith("data: {")]
                assert r.status == 200 and r.headers["X-Fallback-From"] == asked
                assert chunks and {c["model"] for c in chunks} == {served}
    await until(lambda: front.reported("tiny-a") and front.reported("tiny-b"), 5, "the fallbacks loaded")
    assert not front.where("huge") and not front.where("broken")


async def test_a_streamed_chat_is_told_the_load_and_the_host_that_serves_it(front, tmp_path, llama_server,
                                                                            tiny_dir):
    """Swap progress at the front, as on one host (notify_model_swap): a streamed chat for a
    model loaded on no host gets its event stream at once, told the load and the host that
    serves it as reasoning_content, then the reply in the same stream; a load that fails
    ends the stream with an error event; a model already loaded answers with no progress."""
    await with_models(front, tmp_path, llama_server, tiny_dir, {
        "broken": {"path": str(tiny_dir / "tiny-b.gguf"), "spawn": {"command": ["/bin/sh", "-c", "exit 3"]}}},
        router={"notify_model_swap": True})

    async def streamed(model: str) -> list[dict[str, Any]]:
        body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "stream": True}
        async with aiohttp.ClientSession() as s, s.post(front.url + "/v1/chat/completions", json=body,
                                                        timeout=aiohttp.ClientTimeout(total=60)) as r:
            assert r.status == 200 and r.headers["Content-Type"].startswith("text/event-stream")
            return [json.loads(line[6:]) for line in (await r.text()).splitlines() if line.startswith("data: {")]

    def told(events: list[dict[str, Any]]) -> str:
        return "".join(e["choices"][0]["delta"].get("reasoning_content") or "" for e in events if e.get("choices"))

    events = await streamed("tiny-a")
    text, content = told(events), "".join(e["choices"][0]["delta"].get("content") or "" for e in events
                                          if e.get("choices"))
    (host,) = front.where("tiny-a")
    assert text.startswith("loading tiny-a\n") and text.endswith(f"tiny-a ready on {host}\n"), text
    assert content and "error" not in events[-1] and {e["model"] for e in events} == {"tiny-a"}
    await until(lambda: front.reported("tiny-a") and not waiting_on_hosts(front, "tiny-a"), 10,
                "a report of tiny-a loaded, nothing waiting for it")  # what the front decides by
    assert not told(await streamed("tiny-a")), "a model already loaded answers with no progress"

    failed = await streamed("broken")
    assert told(failed).startswith("loading broken\n") and "failed" in failed[-1]["error"]["message"], failed[-2:]


async def test_a_streamed_chat_waiting_its_turn_at_the_front_is_told_its_place(front, tmp_path, llama_server,
                                                                               tiny_dir):
    """A streamed chat for a model whose one slot is busy on its host is told it waits, then
    its place in that host's queue (from the agent's report), then the host that serves it."""
    token = "cluster-admin-token-3"
    model = write_tiny_model(tmp_path / "tiny-long.gguf", name="tiny-long", n_ctx_train=16384)  # runs on
    one = {"path": str(model), "args": ["--ctx-size", "16384"], "concurrency_limit": 1}
    await with_models(front, tmp_path, llama_server, tiny_dir, {"one": one},
                      router={"admin_token": token, "notify_model_swap": True})

    def said(line: bytes, key: str) -> str:
        event = json.loads(line[6:]) if line.startswith(b"data: {") else {}
        return "".join(c["delta"].get(key) or "" for c in event.get("choices", ()))

    def inflight() -> int:
        return sum(h.report.get("models", {}).get("one", {}).get("inflight", 0) for h in front.cluster.hosts.values())

    runaway = {"model": "one", "messages": [{"role": "user", "content": "count"}], "max_tokens": 400000,
               "ignore_eos": True, "stream": True}
    body = {"model": "one", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "stream": True}
    timeout = aiohttp.ClientTimeout(total=90)
    async with aiohttp.ClientSession() as s, s.post(front.url + "/v1/chat/completions", json=runaway,
                                                    headers={"X-Request-Id": "runaway"}, timeout=timeout) as run:
        async for line in run.content:
            if said(line, "content"):
                break  # it is generating
        await until(lambda: inflight() >= 1, 5, "a report showing the runaway in flight")
        async with s.post(front.url + "/v1/chat/completions", json=body, timeout=timeout) as r:
            assert r.status == 200
            told = ""
            async for line in r.content:
                told += said(line, "reasoning_content")
                if "position 1 in the queue for one" in told:
                    break
            async with s.delete(front.url + "/admin/requests/runaway", headers={"X-Admin-Token": token}) as cut:
                assert cut.status == 200
            rest = [line async for line in r.content]
    told += "".join(said(line, "reasoning_content") for line in rest)
    (host,) = front.where("one")
    assert told.startswith("waiting for one\n") and told.endswith(f"one ready on {host}\n"), told
    assert "".join(said(line, "content") for line in rest), "the reply follows in the same stream"


async def test_a_model_whose_file_is_on_no_host_is_a_404_or_its_fallback_serves(front, tmp_path, llama_server,
                                                                                tiny_dir):
    """As on one host: a model whose file is gone is a 404 model_missing (not a 503: waiting
    will not bring it back); with fallbacks, the first that can serves and says why."""
    await with_models(front, tmp_path, llama_server, tiny_dir, {
        "gone": {"path": str(tmp_path / "deleted.gguf")},
        "gone-b": {"path": str(tmp_path / "deleted-b.gguf"), "fallbacks": ["tiny-b"]}})
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    async with aiohttp.ClientSession() as s:
        async with s.post(front.url + "/v1/chat/completions", json={**body, "model": "gone"},
                          timeout=aiohttp.ClientTimeout(total=60)) as r:
            reply = await r.json()
            assert r.status == 404 and reply["error"]["code"] == "model_missing", reply
            assert "file" in reply["error"]["message"], reply
        async with s.post(front.url + "/v1/chat/completions", json={**body, "model": "gone-b"},
                          timeout=aiohttp.ClientTimeout(total=60)) as r:
            reply = await r.json()
            assert r.status == 200 and reply["model"] == "tiny-b", reply
            assert (r.headers["X-Fallback-From"], r.headers["X-Fallback-Reason"]) == ("gone-b", "file_missing")


async def test_a_key_limited_to_some_models_is_served_only_by_fallbacks_it_may_use(front, tmp_path, llama_server,
                                                                                   tiny_dir):
    """A fallback never widens what an API key reaches, at the front (a model no host can take)
    and on the host (a load that fails there): the fallbacks the key may not use are skipped."""
    scoped, every = "sk-cluster-scoped-0123", "sk-cluster-every-0123"
    await with_models(front, tmp_path, llama_server, tiny_dir, {
        "huge": {"path": str(tiny_dir / "tiny-c.gguf"), "args": ["--ctx-size", "262144"],
                 "fallbacks": ["tiny-a", "tiny-b"]},
        "broken": {"path": str(tiny_dir / "tiny-b.gguf"), "spawn": {"command": ["/bin/sh", "-c", "exit 3"]},
                   "fallbacks": ["tiny-a", "tiny-b"]}},
        {"api_keys": [{"key": scoped, "models": ["huge", "broken", "tiny-b"]}, every]})
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    for asked in ("huge", "broken"):  # no host can take huge (the front falls back); broken fails to load
        for key, served in ((scoped, "tiny-b"), (every, "tiny-a")):
            status, reply = await request(front.url, "POST", "/v1/chat/completions", key, {**body, "model": asked})
            assert status == 200, reply
            assert reply["model"] == served, (asked, key)


async def test_selectors_and_profiles_at_the_front(front, tmp_path, llama_server, tiny_dir):
    """A warm selector is served by its target loaded on one host, without loading the other
    (the reply names it, X-Selector says which selector); /v1/models lists the selector. A
    profile switched on through the front serves its pinned id by the pin's target and turns
    off the id it pins to nothing; switched off, the pinned id is a 404 again."""
    token = "cluster-admin-token-2"
    await with_models(front, tmp_path, llama_server, tiny_dir, {}, {"admin_token": token},
                      selectors={"coder": {"strategy": "warm", "targets": ["tiny-a", "tiny-b"]}},
                      profiles={"work": {"pins": {"assistant": "tiny-b", "tiny-c": None}}})
    assert (await chat(front.url, "tiny-b"))[0] == 200
    await until(lambda: front.reported("tiny-b"), 10, "tiny-b loaded")
    body = {"model": "coder", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    async with aiohttp.ClientSession() as s, s.post(front.url + "/v1/chat/completions", json=body,
                                                    timeout=aiohttp.ClientTimeout(total=60)) as r:
        reply = await r.json()
        assert r.status == 200, reply
        assert reply["model"] == "tiny-b" and r.headers.get("X-Selector") == "coder"
    assert not front.where("tiny-a") and not front.where("tiny-a", "loading"), "the cold target stayed unloaded"
    status, listed = await request(front.url, "GET", "/v1/models")
    (coder,) = [m for m in listed["data"] if m["id"] == "coder"]
    assert coder["metadata"]["type"] == "selector" and coder["status"]["value"] == "loaded", coder

    assert (await chat(front.url, "assistant"))[0] == 404
    status, switched = await request(front.url, "PUT", "/admin/profiles/active", token, {"name": "work"})
    assert status == 200 and switched == {"active": "work"}, switched
    status, reply = await chat(front.url, "assistant")
    assert status == 200 and reply["model"] == "tiny-b", reply
    status, off = await chat(front.url, "tiny-c")
    assert status == 404 and "profile 'work' turns it off" in off["error"]["message"], off
    status, listed = await request(front.url, "GET", "/api/profiles", token)
    assert status == 200 and listed["active"] == "work"
    status, switched = await request(front.url, "PUT", "/api/profiles/active", token, {"name": None})
    assert status == 200 and switched == {"active": None}
    assert (await chat(front.url, "assistant"))[0] == 404
    assert not front.where("tiny-a") and not front.where("tiny-c"), "no request loaded another model"


async def test_a_request_waits_for_the_first_reports_at_most_start_wait(tmp_path):
    """No host ever reports (no node table followed here): a request waits `cluster.start_wait`,
    then gets the 503 it would get with no host, and /health stops saying `starting`."""
    from router.catalogue.parse import parse_config
    from router.cluster.front import ClusterManager
    from router.core.manager import ModelUnavailable

    config = parse_config({"cluster": {"start_wait": 1.5}, "models": {"tiny-a": {"path": str(tmp_path / "a.gguf")}}})
    cluster = ClusterManager(config, SECRET, 0)
    assert cluster.first_reports.starting
    asked = time.monotonic()
    with pytest.raises(ModelUnavailable, match="no host is up"):
        await cluster.acquire("tiny-a")
    assert 1.4 <= time.monotonic() - asked < 5
    assert not cluster.first_reports.starting
    asked = time.monotonic()
    with pytest.raises(ModelUnavailable, match="no host is up"):  # once: later requests do not wait again
        await cluster.acquire("tiny-a")
    assert time.monotonic() - asked < 0.5


# ----- the front as its own process: a crash, a restart, a front that never returns -------------
class FrontProcess:
    """`llama-router --cluster ADDRESS` in its own process (Ray namespace `llama-router`)."""

    def __init__(self, config: Path, address: str, port: int, log: Path, ca: Path | None = None):
        self.url = f"{'https' if ca else 'http'}://127.0.0.1:{port}"
        self.log, self.verify = log, str(ca) if ca else True
        with open(log, "ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "router", "--config", str(config), "--cluster",
                                          address, "--log-level", "debug"], stdout=out, stderr=subprocess.STDOUT)

    def get(self, path: str) -> Any:
        return requests.get(self.url + path, timeout=10, verify=self.verify).json()

    def healthy(self, hosts: int) -> bool:
        try:
            return self.get("/health").get("hosts") == hosts
        except requests.RequestException:
            return False

    def health(self) -> dict[str, Any] | None:
        """/health's answer once it is a 200 (None before)."""
        try:
            r = requests.get(self.url + "/health", timeout=10, verify=self.verify)
        except requests.RequestException:
            return None
        return r.json() if r.status_code == 200 else None

    def chat(self, model: str) -> requests.Response:
        body = {"model": model, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 4}
        return requests.post(self.url + "/v1/chat/completions", json=body, timeout=60, verify=self.verify)

    def loaded(self) -> dict[str, dict[str, Any]]:
        """model -> {host, pid, loads} for every model some agent reports loaded."""
        return {n: {"host": h["host"], "pid": m["pid"], "loads": m["loads"]} for h in self.get("/cluster")["hosts"]
                for n, m in h.get("models", {}).items() if m["state"] == "loaded" and not m.get("noted")}

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def agents_alive() -> list[str]:
    import ray

    return [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
            if a["namespace"] == "llama-router" and a["name"].startswith("llama-router-agent-")]


@pytest.fixture
def front_process(ray_cluster, tmp_path, llama_server, tiny_dir):
    """Starts fronts on one catalogue (cluster.front_grace: 4 s); each is stopped by pid at the end."""
    cluster, _ = ray_cluster
    data = catalogue_data(tmp_path, llama_server, tiny_dir)
    data["cluster"] = {"front_grace": 4}
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(data))
    started: list[FrontProcess] = []

    def start(ca: Path | None = None, wait: bool = True) -> FrontProcess:
        """A front on the catalogue; with `wait`, once its /health counts the three hosts."""
        path.write_text(yaml.safe_dump(data))
        front = FrontProcess(path, cluster.address, data["router"]["port"], tmp_path / "front.log", ca)
        started.append(front)
        if not wait:
            return front
        wait_until(lambda: front.healthy(3) or front.proc.poll() is not None, 90, "the front's hosts")
        assert front.proc.poll() is None, front.log.read_text()[-3000:]
        return front

    start.path, start.data = path, data  # type: ignore[attr-defined]
    yield start
    for front in started:
        front.stop(signal.SIGKILL)
    wait_until(lambda: not agents_alive(), 30, "the agents to leave")
    wait_until(lambda: not _children_of(tiny_dir), 15, "no llama-server child left")


def test_a_restarted_front_adopts_the_loaded_models_without_loading_them_again(front_process, tiny_dir):
    first = front_process()
    assert first.chat("tiny-a").status_code == 200
    before = wait_until(lambda: first.loaded().get("tiny-a"), 5, "tiny-a reported loaded")
    assert before["loads"] == 1
    first.stop(signal.SIGKILL)  # a crash: no goodbye to the agents

    second = front_process()
    # The placement view is rebuilt from the agents' reports, before any request.
    listed = {m["id"]: m for m in second.get("/v1/models")["data"]}
    assert listed["tiny-a"]["status"]["value"] == "loaded" and listed["tiny-a"]["host"] == before["host"]
    for _ in range(3):
        reply = second.chat("tiny-a")
        assert reply.status_code == 200, reply.text
    after = wait_until(lambda: second.loaded().get("tiny-a"), 5, "an agent's report after the requests")
    assert after == before, "the same child serves: no reload storm"
    assert psutil.pid_exists(before["pid"])

    second.stop()  # a clean stop says goodbye: every agent stops its children
    wait_until(lambda: not psutil.pid_exists(before["pid"]), 15, "the child to stop with the front")
    wait_until(lambda: not agents_alive(), 15, "the agents to leave with the front")
    assert not _children_of(tiny_dir)


def test_a_request_sent_as_soon_as_the_front_answers_health_is_served(front_process):
    """A script that starts the front and sends a request once /health answers: the request
    waits for the hosts' first reports (cluster.start_wait) instead of a 503."""
    front = front_process(wait=False)
    first = wait_until(lambda: front.health() or front.proc.poll() is not None, 90, "a 200 from /health")
    assert front.proc.poll() is None, front.log.read_text()[-3000:]
    reply = front.chat("tiny-a")
    assert reply.status_code == 200, (reply.text, first)
    assert reply.json()["choices"][0]["message"]["content"]
    assert first["status"] == "starting" or first["hosts"] == 3, first  # "ok" only once every host reported
    assert front.get("/health") == {"status": "ok", "hosts": 3}


def test_agents_whose_front_never_returns_stop_their_models_after_the_grace(front_process, tiny_dir):
    front = front_process()
    assert front.chat("tiny-b").status_code == 200
    pid = wait_until(lambda: front.loaded().get("tiny-b"), 5, "tiny-b reported loaded")["pid"]
    front.stop(signal.SIGKILL)
    killed = time.monotonic()
    assert psutil.pid_exists(pid), "kept through the grace, for a front that comes back"
    wait_until(lambda: not psutil.pid_exists(pid), 4 + 15, "the child to stop once the grace (4 s) is over")
    assert time.monotonic() - killed >= 3, "not before the grace"
    wait_until(lambda: not agents_alive(), 15, "the agents to end themselves")
    assert not _children_of(tiny_dir)


def test_sighup_hands_the_edited_catalogue_to_every_host(front_process, tiny_dir):
    front = front_process()
    assert front.chat("tiny-a").status_code == 200
    pid = wait_until(lambda: front.loaded().get("tiny-a"), 5, "tiny-a reported loaded")["pid"]
    data = front_process.data
    data["models"]["tiny-d"] = {**data["models"]["tiny-b"], "aliases": ["dee"]}
    front_process.path.write_text(yaml.safe_dump(data))
    front.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "tiny-d" in {m["id"] for m in front.get("/v1/models")["data"]}, 10, "tiny-d listed")
    reply = front.chat("dee")
    assert reply.status_code == 200, reply.text
    assert wait_until(lambda: front.loaded().get("tiny-d"), 5, "tiny-d reported loaded")
    assert front.loaded()["tiny-a"]["pid"] == pid, "an unchanged model keeps running"
    data["router"]["models_max"] = "many"  # invalid: refused, nothing changes
    front_process.path.write_text(yaml.safe_dump(data))
    front.proc.send_signal(signal.SIGHUP)
    time.sleep(1)
    assert front.proc.poll() is None and front.chat("tiny-a").status_code == 200
    assert "reload (SIGHUP) failed" in front.log.read_text()


def test_the_front_serves_https_with_the_catalogues_certificate(front_process, tmp_path):
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1")
    cert, key, ca_file = tmp_path / "front.pem", tmp_path / "front.key", tmp_path / "ca.pem"
    cert.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
    issued.private_key_pem.write_to_path(str(key))
    ca.cert_pem.write_to_path(str(ca_file))
    front_process.data["router"].update(tls_cert=str(cert), tls_key=str(key))
    front = front_process(ca=ca_file)
    reply = front.chat("tiny-a")
    assert reply.status_code == 200, reply.text
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(front.url.replace("https:", "http:") + "/health", timeout=5)


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
