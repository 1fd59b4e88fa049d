"""Ollama's API against a real router and real llama-server children, through
the official `ollama` Python client (and LangChain's ChatOllama): list, show,
ps, chat and generate (streamed and not), JSON format, embeddings, pull with
progress from a local Hub stand-in, delete, load and unload by keep_alive, a
swap through /api/chat, scoped API keys, and bad input in Ollama's error shape.

Tool calls: no model the tests have produces one. Gemma 3 270M's GGUF carries
no chat template (llama-server falls back to ChatML, which has no tools) and the
tiny models' ChatML template has none either; llama-server cannot even build a
JSON grammar over the tiny vocabulary. So the tests prove that llama-server
accepts the translated tools and tool history (a real template renders them),
and tests/unit/api/test_ollama_translate.py checks the tool calls' translation.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import ollama
import pytest
import requests
from langchain_ollama import ChatOllama

from tests.support.fakehub import FakeHub
from tests.support.opskit import TIMEOUT, tiny_catalogue, wait_until
from tests.support.routerproc import RouterProcess, child_command, free_port, write_config
from tests.support.tinygguf import write_tiny_model

pytestmark = pytest.mark.real

KEY = "ollama-test-key-4b2d9e"
SCOPED = "ollama-scoped-key-7c1a3f"  # tiny-a only
HI = [{"role": "user", "content": "hello"}]
SHORT = {"num_predict": 4, "temperature": 0, "seed": 1}
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "The weather in a city",
                                            "parameters": {"type": "object", "required": ["city"],
                                                           "properties": {"city": {"type": "string"}}}}}


def client(r: RouterProcess, key: str | None = KEY) -> ollama.Client:
    return ollama.Client(host=r.url, timeout=120, headers={"Authorization": f"Bearer {key}"} if key else None)


def post(r: RouterProcess, path: str, body: Any = None, key: str | None = KEY, **kw: Any) -> requests.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return requests.post(r.url + path, json=body, headers=headers, timeout=TIMEOUT, **kw)


def loaded(c: ollama.Client) -> list[str]:
    return [m.model for m in c.ps().models]


def error_of(resp: requests.Response, status: int) -> str:
    """Ollama's error shape: exactly {"error": "message"}."""
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert list(body) == ["error"] and isinstance(body["error"], str), body
    return body["error"]


@pytest.fixture(scope="module")
def router(tmp_path_factory: pytest.TempPathFactory, llama_server: Path, tiny_dir: Path) -> Iterator[RouterProcess]:
    tmp = tmp_path_factory.mktemp("ollama")
    models = tiny_catalogue(tiny_dir, "tiny-a", "tiny-b")
    models["tiny-e"] = {"path": str(tiny_dir / "tiny-c.gguf"), "args": ["--embeddings", "--pooling", "mean"]}
    cfg = write_config(tmp / "config.yaml", models, spawn={"command": child_command(llama_server)},
                       router={"watch_config": False, "api_keys": [KEY, {"key": SCOPED, "models": ["tiny-a"]}]})
    with RouterProcess(cfg, tmp / "router.log") as r:
        yield r
        log = r.log()
    assert "Traceback" not in log, log[log.index("Traceback") - 2000:][:6000]


def test_version_list_and_show(router):
    version = requests.get(router.url + "/api/version", timeout=TIMEOUT)  # clients probe it without a key
    assert version.status_code == 200 and version.json()["version"]
    c = client(router)
    models = {m.model: m for m in c.list().models}
    assert set(models) == {"tiny-a:latest", "tiny-b:latest", "tiny-e:latest"}
    tiny = models["tiny-a:latest"]
    assert tiny.size > 500_000 and len(tiny.digest or "") == 64 and tiny.modified_at is not None
    assert tiny.details is not None and tiny.details.family == "llama" and tiny.details.format == "gguf"
    assert tiny.details.parameter_size == "140K" and tiny.details.quantization_level == "F32"

    shown = c.show("tiny-a:latest")
    assert shown.capabilities == ["completion"]
    assert shown.template and "<|im_start|>" in shown.template
    assert shown.modelinfo and shown.modelinfo["general.architecture"] == "llama"
    assert shown.parameters and "num_ctx" in shown.parameters
    assert "embedding" in (c.show("tiny-e").capabilities or [])


def test_chat_streamed_and_not_and_ps(router):
    c = client(router)
    whole = c.chat("tiny-a", messages=HI, options=SHORT, stream=False, keep_alive="10m")
    assert whole.model == "tiny-a" and whole.done and whole.done_reason == "length"
    assert whole.message.role == "assistant" and whole.message.content
    assert whole.eval_count == 4 and (whole.prompt_eval_count or 0) > 0
    assert 0 < (whole.eval_duration or 0) < (whole.total_duration or 0)

    parts = list(c.chat("tiny-a:latest", messages=HI, options=SHORT, stream=True))
    assert len(parts) >= 2 and [p.done for p in parts] == [False] * (len(parts) - 1) + [True]
    assert {p.model for p in parts} == {"tiny-a:latest"}
    assert "".join(p.message.content or "" for p in parts) == whole.message.content  # temperature 0
    assert parts[-1].eval_count == 4 and parts[-1].done_reason == "length"
    default = post(router, "/api/chat", {"model": "tiny-a", "messages": HI, "options": SHORT})
    assert default.headers["Content-Type"] == "application/x-ndjson"  # without "stream": Ollama streams
    assert [json.loads(ln)["done"] for ln in default.text.splitlines()][-2:] == [False, True]
    # Recorded as every request is: the activity log, with the child's token counts.
    rows = requests.get(router.url + "/api/activity", headers={"Authorization": f"Bearer {KEY}"},
                        timeout=TIMEOUT).json()["data"]
    chats = [row for row in rows if row["endpoint"] == "/api/chat"]
    assert len(chats) >= 3 and {row["model"] for row in chats} == {"tiny-a"}
    assert {(row["status"], row["completion_tokens"]) for row in chats} == {(200, 4)}

    (ps,) = c.ps().models
    assert ps.model == "tiny-a:latest" and ps.context_length == 512 and (ps.size or 0) > 0
    assert ps.expires_at is not None
    left = ps.expires_at.timestamp() - time.time()
    assert 500 < left <= 601, left  # keep_alive "10m", counted from when it went idle


def test_generate_streamed_not_and_raw(router):
    c = client(router)
    whole = c.generate("tiny-b", "hello", system="be brief", options=SHORT, stream=False)
    assert whole.done and whole.response and whole.eval_count == 4
    parts = list(c.generate("tiny-b", "hello", system="be brief", options=SHORT, stream=True))
    assert parts[-1].done and "".join(p.response for p in parts) == whole.response
    raw = c.generate("tiny-b", "<|im_start|>user\nhello", raw=True, options=SHORT, stream=False)
    assert raw.done and raw.response and raw.eval_count == 4 and raw.done_reason == "length"


def test_embed_and_the_legacy_embeddings(router):
    c = client(router)
    out = c.embed("tiny-e", input=["hello", "world"])
    assert len(out.embeddings) == 2 and all(len(v) == 64 for v in out.embeddings)
    assert sum(x * x for x in out.embeddings[0]) == pytest.approx(1.0, abs=1e-4)
    assert out.embeddings[0] != out.embeddings[1] and (out.prompt_eval_count or 0) > 0
    cut = c.embed("tiny-e", input="hello", dimensions=8).embeddings[0]
    assert len(cut) == 8 and sum(x * x for x in cut) == pytest.approx(1.0, abs=1e-4)
    legacy = c.embeddings("tiny-e", prompt="hello").embedding
    assert legacy == pytest.approx(out.embeddings[0], abs=1e-5)
    with pytest.raises(ollama.ResponseError) as e:
        c.embed("tiny-a", input="hello")  # started without --embeddings
    assert e.value.status_code == 400 and "embeddings" in e.value.error


def test_empty_requests_load_and_keep_alive_0_unloads(router):
    c = client(router)
    load = c.generate("tiny-b")
    assert load.done and load.done_reason == "load" and loaded(c) == ["tiny-b:latest"]
    unload = c.chat("tiny-b", messages=[], keep_alive=0)
    assert unload.done_reason == "unload" and loaded(c) == []
    reply = c.chat("tiny-a", messages=HI, options=SHORT, keep_alive=0, stream=False)
    assert reply.message.content
    wait_until(lambda: loaded(c) == [], what="tiny-a unloaded after its reply")


def test_a_swap_between_two_models_through_chat(router):
    c = client(router)
    c.chat("tiny-a", messages=HI, options=SHORT, stream=False)
    again = c.chat("tiny-a", messages=HI, options=SHORT, stream=False)
    swapped = c.chat("tiny-b", messages=HI, options=SHORT, stream=False)
    assert swapped.message.content and loaded(c) == ["tiny-b:latest"]  # models_max 1: tiny-a went
    assert (swapped.load_duration or 0) > 20_000_000 > (again.load_duration or 0)  # it waited for the swap


def test_a_scoped_key_sees_and_uses_its_models_only(router):
    c = client(router, SCOPED)
    assert [m.model for m in c.list().models] == ["tiny-a:latest"]
    c.chat("tiny-a", messages=HI, options=SHORT, stream=False)
    assert loaded(c) == ["tiny-a:latest"]
    for call in (lambda: c.chat("tiny-b", messages=HI), lambda: c.show("tiny-b"), lambda: c.embed("tiny-e", "x")):
        with pytest.raises(ollama.ResponseError) as e:
            call()
        assert e.value.status_code == 404 and "not found" in e.value.error
    client(router).chat("tiny-b", messages=HI, options=SHORT, stream=False)
    assert loaded(c) == []  # tiny-b is loaded, and is not this key's to see
    assert "limited to some models" in error_of(post(router, "/api/pull", {"model": "hf.co/a/b:Q4_K_M"}, SCOPED), 403)
    assert "API key" in error_of(post(router, "/api/chat", {"model": "tiny-a", "messages": HI}, key=None), 401)
    assert "API key" in error_of(post(router, "/api/tags", key="wrong"), 401)


@pytest.mark.parametrize(("body", "status", "says"), [
    ({"model": "nope", "messages": HI}, 404, "model 'nope' not found"),
    ({"messages": HI}, 400, "model"),
    ({"model": 5, "messages": HI}, 400, "model"),
    ({"model": "tiny-a", "messages": "hello"}, 400, "messages"),
    ({"model": "tiny-a", "messages": [{"content": "no role"}]}, 400, "role"),
    ({"model": "tiny-a", "messages": HI, "stream": "yes"}, 400, "stream"),
    ({"model": "tiny-a", "messages": HI, "options": {"temperature": "hot"}}, 400, "temperature"),
    ({"model": "tiny-a", "messages": HI, "options": [1]}, 400, "options"),
    ({"model": "tiny-a", "messages": HI, "format": 5}, 400, "format"),
    ({"model": "tiny-a", "messages": HI, "think": "maybe"}, 400, "think"),
    ({"model": "tiny-a", "messages": HI, "keep_alive": "forever"}, 400, "keep_alive"),
    ({"model": "tiny-a", "messages": [{"role": "user", "content": "x", "images": ["iVBORw0KGgo="]}]}, 400,
     "does not support images"),
])
def test_bad_chat_requests_get_ollamas_error(router, body, status, says):
    assert says in error_of(post(router, "/api/chat", body), status)


def test_bad_bodies_methods_and_what_cannot_exist_here(router):
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    bad_json = requests.post(router.url + "/api/generate", data=b"{not json", headers=headers, timeout=TIMEOUT)
    assert "not valid JSON" in error_of(bad_json, 400)
    assert "empty" in error_of(requests.post(router.url + "/api/show", headers=headers, timeout=TIMEOUT), 400)
    assert "template" in error_of(post(router, "/api/generate", {"model": "tiny-a", "prompt": "x",
                                                                   "template": "{{ .Prompt }}"}), 400)
    error_of(requests.get(router.url + "/api/chat", headers=headers, timeout=TIMEOUT), 405)
    assert "not supported" in error_of(post(router, "/api/create", {"model": "x", "from": "tiny-a"}), 400)
    assert "not supported" in error_of(post(router, "/api/push", {"model": "tiny-a"}), 400)
    assert "aliases" in error_of(post(router, "/api/copy", {"source": "tiny-a", "destination": "backup"}), 400)
    assert post(router, "/api/copy", {"source": "tiny-a", "destination": "tiny-a:latest"}).status_code == 200
    assert "not found" in error_of(post(router, "/api/copy", {"source": "nope", "destination": "x"}), 404)
    assert "Hugging Face" in error_of(post(router, "/api/pull", {"model": "llama3.2"}), 400)
    with pytest.raises(ollama.ResponseError) as e:
        client(router).chat("tiny-a", messages=HI, options={"top_k": "many"})
    assert e.value.status_code == 400 and "top_k" in e.value.error


def test_tools_and_tool_history_are_accepted_by_the_childs_template(router):
    c = client(router)
    reply = c.chat("tiny-a", messages=HI, tools=[WEATHER], options=SHORT, stream=False)
    assert reply.done and reply.message.content  # no tool call from a tiny model: its reply
    history = [*HI, {"role": "assistant", "content": "", "tool_calls": [
        {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
        {"role": "tool", "content": "11 degrees", "tool_name": "get_weather"}]
    assert c.chat("tiny-a", messages=history, tools=[WEATHER], options=SHORT, stream=False).done


def test_the_ollama_port_serves_the_same_api_and_says_ollama_is_running(tmp_path, llama_server, tiny_dir):
    port = free_port()
    cfg = write_config(tmp_path / "config.yaml", tiny_catalogue(tiny_dir, "tiny-a"), router={"watch_config": False},
                       spawn={"command": child_command(llama_server)})
    with RouterProcess(cfg, tmp_path / "router.log", "--ollama-port", str(port)) as r:
        there = f"http://127.0.0.1:{port}"
        hello = requests.get(there + "/", timeout=TIMEOUT)
        assert hello.status_code == 200 and hello.text == "Ollama is running"
        assert requests.head(there + "/", timeout=TIMEOUT).status_code == 200
        c = ollama.Client(host=there, timeout=60)
        assert [m.model for m in c.list().models] == ["tiny-a:latest"]
        assert c.chat("tiny-a", messages=HI, options=SHORT, stream=False).message.content
        assert loaded(client(r, None)) == ["tiny-a:latest"]  # one router behind both ports
        # The main port's / stays the WebUI's, and a browser on the Ollama port gets it too.
        assert requests.get(r.url + "/", timeout=TIMEOUT).text != "Ollama is running"
        page = requests.get(there + "/", headers={"Accept": "text/html"}, timeout=TIMEOUT)
        assert page.text != "Ollama is running"


REPO = "acme/Tiny-GGUF"


def test_pull_with_progress_then_use_and_delete(tmp_path, llama_server):
    gguf = write_tiny_model(tmp_path / "src" / "Tiny-Q4_K_M.gguf", name="hub tiny", seed=5)
    hf_home = tmp_path / "hf-home"
    with FakeHub() as hub:
        hub.add_file(REPO, "Tiny-Q4_K_M.gguf", gguf.read_bytes())
        cfg = write_config(tmp_path / "config.yaml", {}, spawn={"command": child_command(llama_server)},
                           router={"watch_config": False})
        env = {"HF_ENDPOINT": hub.endpoint, "HF_HOME": str(hf_home), "HF_HUB_CACHE": str(hf_home / "hub"),
               "HF_HUB_OFFLINE": "0", "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
        with RouterProcess(cfg, tmp_path / "router.log", env=env) as r:
            c = client(r, None)
            name = f"hf.co/{REPO}:Q4_K_M"
            progress = list(c.pull(name, stream=True))
            assert progress[0].status == "pulling manifest" and progress[-1].status == "success"
            files = [p for p in progress if p.digest]
            assert files and files[-1].total == files[-1].completed == gguf.stat().st_size
            assert all(p.status == f"pulling {p.digest}" for p in files)
            assert [m.model for m in c.list().models] == [f"{REPO}:Q4_K_M"]
            assert c.pull(name, stream=False).status == "success"  # already here: nothing to fetch
            assert c.chat(name, messages=HI, options=SHORT, stream=False).message.content

            assert c.delete(name).status == "success"
            assert c.list().models == [] and not list(hf_home.rglob("*.gguf"))
            with pytest.raises(ollama.ResponseError) as e:
                c.delete(name)
            assert e.value.status_code == 404
            with pytest.raises(ollama.ResponseError) as e:
                c.pull(f"hf.co/{REPO}:Q8_0", stream=False)
            assert e.value.status_code == 500 and "Q4_K_M" in e.value.error  # says what the repo has


# ----- fallbacks and selectors (issue #27): the reply names the model that served


@pytest.fixture(scope="module")
def served_router(tmp_path_factory: pytest.TempPathFactory, llama_server: Path,
                  tiny_dir: Path) -> Iterator[RouterProcess]:
    """`gone`'s and `gone-e`'s files are missing (they fall back to tiny-b, to the embedding
    model tiny-e), `lost`'s too (no fallbacks); `coding` is warm over tiny-a and tiny-b, `first`
    pins lost, then tiny-a. No group: one model runs at a time."""
    tmp = tmp_path_factory.mktemp("ollama-served")
    models = {**tiny_catalogue(tiny_dir, "tiny-a", "tiny-b"),
              "tiny-e": {"path": str(tiny_dir / "tiny-c.gguf"), "args": ["--embeddings", "--pooling", "mean"]},
              "gone": {"path": str(tmp / "deleted.gguf"), "fallbacks": ["tiny-b"]},
              "gone-e": {"path": str(tmp / "deleted-e.gguf"), "fallbacks": ["tiny-e"]},
              "lost": {"path": str(tmp / "lost.gguf")}}
    selectors = {"coding": {"strategy": "warm", "targets": ["tiny-a", "tiny-b"]},
                 "first": {"strategy": "pin", "targets": ["lost", "tiny-a"]}}
    cfg = write_config(tmp / "config.yaml", models, spawn={"command": child_command(llama_server)},
                       router={"watch_config": False}, selectors=selectors)
    with RouterProcess(cfg, tmp / "router.log") as r:
        yield r
        log = r.log()
    assert "Traceback" not in log, log[log.index("Traceback") - 2000:][:6000]


def lines_of(resp: requests.Response) -> list[dict[str, Any]]:
    assert resp.status_code == 200 and resp.headers["Content-Type"] == "application/x-ndjson", resp.text
    lines = [json.loads(ln) for ln in resp.text.splitlines()]
    assert len(lines) >= 2 and lines[-1]["done"] and "error" not in lines[-1], lines
    return lines


def test_a_warm_selector_is_served_by_its_loaded_target_which_every_line_names(served_router):
    r, c = served_router, client(served_router, None)
    assert c.generate("tiny-b").done_reason == "load"
    parts = list(c.chat("coding", messages=HI, options=SHORT, stream=True))  # the official client
    assert len(parts) >= 2 and parts[-1].done and {p.model for p in parts} == {"tiny-b"}
    whole = post(r, "/api/chat", {"model": "coding", "messages": HI, "options": SHORT, "stream": False}, None)
    assert whole.status_code == 200 and whole.json()["model"] == "tiny-b", whole.text
    assert whole.headers["X-Selector"] == "coding" and "X-Fallback-From" not in whole.headers
    streamed = post(r, "/api/generate", {"model": "coding", "prompt": "hello", "options": SHORT}, None)
    assert {ln["model"] for ln in lines_of(streamed)} == {"tiny-b"} and streamed.headers["X-Selector"] == "coding"
    assert loaded(c) == ["tiny-b:latest"]  # tiny-a was never loaded for it
    # Listed for Ollama's clients to pick, with the facts of the target that would serve it now
    # (`first` pins `lost`, whose file is missing: tiny-a would serve).
    listed = {m.model: m.digest for m in c.list().models}
    assert listed["coding:latest"] == listed["tiny-b:latest"] and listed["first:latest"] == listed["tiny-a:latest"]
    assert listed["tiny-a:latest"] != listed["tiny-b:latest"] and "lost:latest" not in listed


def test_a_selector_falls_through_to_its_next_target_and_a_load_names_what_it_loaded(served_router):
    r, c = served_router, client(served_router, None)
    c.chat("tiny-b", messages=[], keep_alive=0)
    # `first` pins `lost`, whose file is missing: its next target serves, as through /v1.
    load = post(r, "/api/generate", {"model": "first"}, None)
    assert load.status_code == 200 and load.json()["model"] == "tiny-a", load.text
    assert load.json()["done_reason"] == "load" and loaded(c) == ["tiny-a:latest"]
    assert (load.headers["X-Selector"], load.headers["X-Fallback-From"], load.headers["X-Fallback-Reason"]) == (
        "first", "lost", "file_missing")
    chat = post(r, "/api/chat", {"model": "first", "messages": HI, "options": SHORT, "stream": False}, None)
    assert chat.status_code == 200 and chat.json()["model"] == "tiny-a" and chat.json()["message"]["content"]
    assert chat.headers["X-Fallback-From"] == "lost"
    # Nothing loaded: a load through the warm selector loads the target its strategy picks, and says so.
    c.chat("tiny-a", messages=[], keep_alive=0)
    warm = post(r, "/api/chat", {"model": "coding", "messages": []}, None)
    assert warm.status_code == 200 and warm.json()["model"] == "tiny-a", warm.text
    assert warm.headers["X-Selector"] == "coding" and loaded(c) == ["tiny-a:latest"]


def test_a_model_whose_file_is_missing_falls_back_and_the_reply_says_so(served_router):
    r, c = served_router, client(served_router, None)

    def fell_back(resp: requests.Response, to: str, source: str = "gone") -> None:
        assert resp.status_code == 200, resp.text
        assert resp.headers["X-Fallback-From"] == source and resp.headers["X-Fallback-Reason"] == "file_missing"
        assert "X-Selector" not in resp.headers
        whole = resp.headers["Content-Type"].startswith("application/json")
        assert {ln.get("model", to) for ln in ([resp.json()] if whole else lines_of(resp))} == {to}

    fell_back(post(r, "/api/chat", {"model": "gone", "messages": HI, "options": SHORT, "stream": False}, None),
              "tiny-b")
    fell_back(post(r, "/api/chat", {"model": "gone", "messages": HI, "options": SHORT}, None), "tiny-b")
    fell_back(post(r, "/api/generate", {"model": "gone", "prompt": "hello", "options": SHORT}, None), "tiny-b")
    parts = list(c.chat("gone", messages=HI, options=SHORT, stream=True))  # the official client
    assert parts[-1].done and {p.model for p in parts} == {"tiny-b"}
    # keep_alive is the model's that served: its TTL, and 0 unloads it after the reply.
    fell_back(post(r, "/api/chat", {"model": "gone", "messages": HI, "options": SHORT, "stream": False,
                                    "keep_alive": "10m"}, None), "tiny-b")
    (ps,) = c.ps().models
    assert ps.model == "tiny-b:latest" and ps.expires_at is not None
    assert 500 < ps.expires_at.timestamp() - time.time() <= 601
    fell_back(post(r, "/api/chat", {"model": "gone", "messages": HI, "options": SHORT, "stream": False,
                                    "keep_alive": 0}, None), "tiny-b")
    wait_until(lambda: loaded(c) == [], what="tiny-b unloaded after its reply")
    load = post(r, "/api/generate", {"model": "gone"}, None)  # a load: the fallback's
    fell_back(load, "tiny-b")
    assert load.json()["done_reason"] == "load" and loaded(c) == ["tiny-b:latest"]
    embed = post(r, "/api/embed", {"model": "gone-e", "input": ["hello", "world"]}, None)
    fell_back(embed, "tiny-e", "gone-e")
    assert len(embed.json()["embeddings"]) == 2
    legacy = post(r, "/api/embeddings", {"model": "gone-e", "prompt": "hello"}, None)
    fell_back(legacy, "tiny-e", "gone-e")
    assert len(legacy.json()["embedding"]) == 64


# ----- the real Gemma 3 270M model


@pytest.fixture(scope="module")
def gemma_router(tmp_path_factory: pytest.TempPathFactory, llama_server: Path, gemma: Path) -> Iterator[RouterProcess]:
    tmp = tmp_path_factory.mktemp("ollama-gemma")
    cfg = write_config(tmp / "config.yaml", {"gemma": {"path": str(gemma)}},
                       spawn={"command": child_command(llama_server, ctx=1024)}, router={"watch_config": False})
    with RouterProcess(cfg, tmp / "router.log") as r:
        yield r


@pytest.mark.gemma
def test_gemma_chats_in_json_and_streams(gemma_router):
    c = client(gemma_router, None)
    schema = {"type": "object", "properties": {"sky": {"type": "string", "enum": ["blue", "green"]}},
              "required": ["sky"], "additionalProperties": False}
    reply = c.chat("gemma", messages=[{"role": "user", "content": "What colour is the sky? Answer in JSON."}],
                   format=schema, options={"temperature": 0, "num_predict": 24}, stream=False)
    assert json.loads(reply.message.content) in ({"sky": "blue"}, {"sky": "green"})
    assert reply.done_reason == "stop"
    as_json = c.generate("gemma", "Give a JSON object with a key 'a'.", format="json",
                         options={"temperature": 0, "num_predict": 24}, stream=False)
    assert as_json.response.startswith("{")  # the grammar of format "json": an object, from its first token
    parts = list(c.chat("gemma", messages=[{"role": "user", "content": "Say hello."}],
                        options={"temperature": 0, "num_predict": 8}, stream=True))
    assert parts[-1].done and parts[-1].eval_count and "".join(p.message.content or "" for p in parts).strip()
    created = datetime.fromisoformat(parts[-1].created_at or "")
    assert abs(created.timestamp() - datetime.now(UTC).timestamp()) < 120


@pytest.mark.gemma
def test_langchain_chat_ollama_talks_to_gemma(gemma_router):
    llm = ChatOllama(model="gemma", base_url=gemma_router.url, temperature=0, num_predict=8)
    answer = llm.invoke("Say hello.")
    assert answer.content and answer.response_metadata.get("done_reason") in ("stop", "length")
    chunks = list(llm.stream("Say hello."))
    assert "".join(str(ch.content) for ch in chunks).strip()
