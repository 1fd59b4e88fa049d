"""The router core end to end: a real router process, real llama-server children
(tiny models that load in milliseconds), the official `openai` client."""

from __future__ import annotations

import asyncio
import json
import signal
import time

import aiohttp
import openai
import psutil
import pytest

from tests.support.routerproc import RouterProcess, child_command, write_config
from tests.support.tinygguf import write_not_gguf

pytestmark = pytest.mark.real


@pytest.fixture
def start_router(tmp_path, llama_server, tiny_dir):
    """Start a router over the tiny models; every router is stopped and checked for orphans."""
    routers: list[RouterProcess] = []

    def start(models=None, *, router=None, extra_args=()):
        models = models or {name: {"path": str(tiny_dir / f"{name}.gguf")} for name in ("tiny-a", "tiny-b")}
        cfg = write_config(tmp_path / f"config{len(routers)}.yaml", models, router=router,
                           spawn={"command": child_command(llama_server, *extra_args)})
        r = RouterProcess(cfg, tmp_path / f"router{len(routers)}.log")
        routers.append(r)
        return r.wait_ready()

    yield start
    for r in routers:
        r.stop()


def post(url, path, body, timeout=60):
    import urllib.error
    import urllib.request
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url + path, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def get(url, path, timeout=30):
    import urllib.error
    import urllib.request
    try:
        with urllib.request.urlopen(url + path, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def states(r: RouterProcess) -> dict[str, str]:
    return {m["id"]: m["status"]["value"] for m in get(r.url, "/models")[1]["data"]}


def llama_children(r: RouterProcess) -> list[psutil.Process]:
    return [p for p in r.children() if "llama-server" in p.name()]


def chat(url, model, **kw):
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused", timeout=60, max_retries=0)
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hello"}],
                                          max_tokens=kw.pop("max_tokens", 4), **kw)


def test_openai_client_chats_and_streams_through_the_router(start_router):
    r = start_router()
    reply = chat(r.url, "tiny-a")
    assert reply.choices[0].message.content
    assert reply.model == "tiny-a"
    chunks = list(chat(r.url, "tiny-b", stream=True, max_tokens=6))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text and all(c.model == "tiny-b" for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "length"


def test_reply_names_the_model_the_client_asked_for(start_router, tiny_dir):
    r = start_router({"tiny-a": {"path": str(tiny_dir / "tiny-a.gguf"), "aliases": ["small"]}})
    assert chat(r.url, "small").model == "small"
    assert all(c.model == "small" for c in chat(r.url, "small", stream=True))


def test_swap_a_b_a_keeps_one_model_loaded(start_router):
    r = start_router(router={"models_max": 1})
    pids = []
    for model in ("tiny-a", "tiny-b", "tiny-a"):
        assert chat(r.url, model).choices
        kids = llama_children(r)
        assert len(kids) == 1
        pids.append(kids[0].pid)
        assert states(r) == {"tiny-a": "unloaded", "tiny-b": "unloaded", model: "loaded"}
    assert len(set(pids)) == 3  # each swap started a fresh child


def test_two_models_in_one_group_run_together(start_router, tiny_dir):
    models = {n: {"path": str(tiny_dir / f"{n}.gguf"), "group": "light"} for n in ("tiny-a", "tiny-b")}
    models["tiny-c"] = {"path": str(tiny_dir / "tiny-c.gguf")}
    r = start_router(models, router={"models_max": 0})
    chat(r.url, "tiny-a")
    chat(r.url, "tiny-b")
    assert states(r) == {"tiny-a": "loaded", "tiny-b": "loaded", "tiny-c": "unloaded"}
    assert len(llama_children(r)) == 2
    chat(r.url, "tiny-c")  # another group: the light group goes
    assert states(r) == {"tiny-a": "unloaded", "tiny-b": "unloaded", "tiny-c": "loaded"}


async def test_twenty_concurrent_requests_for_a_loading_model_cause_one_load(start_router):
    r = start_router()
    body = {"model": "tiny-a", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as s:
        async def one():
            async with s.post(r.url + "/v1/chat/completions", json=body) as resp:
                return resp.status
        assert await asyncio.gather(*(one() for _ in range(20))) == [200] * 20
    assert r.log().count("[tiny-a] started pid") == 1


def test_error_cases_answer_in_openai_shape(start_router, tiny_dir, tmp_path):
    bad = write_not_gguf(tmp_path / "broken.gguf")
    r = start_router({"tiny-a": {"path": str(tiny_dir / "tiny-a.gguf")}, "broken": {"path": str(bad)}})
    status, body = post(r.url, "/v1/chat/completions", {"messages": []})
    assert status == 400 and body["error"]["type"] == "invalid_request_error"
    status, body = post(r.url, "/v1/chat/completions", {"model": "nope", "messages": []})
    assert status == 404 and body["error"]["code"] == "model_not_found" and "tiny-a" not in body["error"]["message"]
    status, body = post(r.url, "/v1/chat/completions", b'{"model": "tiny-a", ')
    assert status == 400 and "JSON" in body["error"]["message"]
    status, body = post(r.url, "/v1/chat/completions", {"model": ["tiny-a"]})
    assert status == 400
    status, body = post(r.url, "/v1/chat/completions", {"model": "broken", "messages": []})
    assert status == 503 and "failed to load" in body["error"]["message"]
    assert "exited with code" in body["error"]["message"]  # the child's own reason is passed on
    status, body = post(r.url, "/no/such/route", {"model": "tiny-a"})
    assert status == 404 and "error" in body
    assert get(r.url, "/models")[1]["data"][1]["status"].get("failed") is True
    assert chat(r.url, "tiny-a").choices  # still serving


def test_get_routes_by_query_and_props_without_model_is_the_router(start_router):
    r = start_router()
    status, props = get(r.url, "/props")
    assert status == 200 and props["role"] == "router"
    status, props = get(r.url, "/props?model=tiny-b")
    assert status == 200 and props.get("role") != "router" and "default_generation_settings" in props
    assert states(r)["tiny-b"] == "loaded"


def test_multipart_requests_are_routed_by_the_model_form_field(start_router):
    r = start_router()

    async def send(model):
        form = aiohttp.FormData()
        form.add_field("model", model)
        form.add_field("file", b"RIFF0000WAVE", filename="a.wav", content_type="audio/wav")
        async with aiohttp.ClientSession() as s, s.post(r.url + "/v1/audio/transcriptions", data=form) as resp:
            return resp.status, await resp.json(content_type=None)

    status, body = asyncio.run(send("nope"))
    assert status == 404 and body["error"]["code"] == "model_not_found"
    status, body = asyncio.run(send("tiny-a"))
    assert states(r)["tiny-a"] == "loaded"  # the router found the model in the form and loaded it
    assert body["error"].get("code") != "model_required"


def test_models_load_and_unload_api(start_router):
    r = start_router()
    assert post(r.url, "/models/load", {"model": "tiny-b"}) == (200, {"success": True})
    deadline = time.monotonic() + 30
    while states(r)["tiny-b"] != "loaded" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert states(r)["tiny-b"] == "loaded"
    assert post(r.url, "/models/unload", {"model": "tiny-b"}) == (200, {"success": True})
    deadline = time.monotonic() + 30
    while states(r)["tiny-b"] != "unloaded" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not llama_children(r)
    status, body = post(r.url, "/models/unload", {"model": "tiny-b"})
    assert status == 400 and "not running" in body["error"]["message"]
    assert post(r.url, "/models/load", {"model": "nope"})[0] == 404


def test_no_child_survives_a_sigkilled_router(start_router, tiny_dir):
    models = {n: {"path": str(tiny_dir / f"{n}.gguf"), "group": "g"} for n in ("tiny-a", "tiny-b")}
    r = start_router(models, router={"models_max": 0})
    chat(r.url, "tiny-a")
    chat(r.url, "tiny-b")
    kids = llama_children(r)
    assert len(kids) == 2
    r.proc.send_signal(signal.SIGKILL)
    r.proc.wait(10)
    _, alive = psutil.wait_procs(kids, timeout=15)
    for p in alive:
        p.kill()
    assert not alive, "children outlived a SIGKILLed router"


def test_sigterm_stops_every_child_and_exits_cleanly(start_router):
    r = start_router()
    chat(r.url, "tiny-a")
    kids = llama_children(r)
    assert kids
    assert r.stop(signal.SIGTERM) == 0
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in kids)
