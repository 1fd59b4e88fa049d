"""The stateful Responses API with the OpenAI Python SDK against real llama-servers
(docs/conversations.md): a conversation by previous_response_id on Gemma, streamed
and not, moved to a second model, kept per API key, fitted to a small context,
and continued after a router restart."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.support.routerproc import RouterProcess, child_command, write_config

pytestmark = [pytest.mark.real, pytest.mark.gemma]

ME, OTHER, ADMIN = "key-of-me-0123456789", "key-of-other-0123456", "admin-token-0123"
FACT = "My name is Zorblax and my cat is called Quetzalcoatl."


def config(tmp_path: Path, llama_server: Path, gemma: Path, ctx: int = 2048) -> Path:
    models = {"gemma": {"path": str(gemma)}, "gemma-b": {"path": str(gemma)}}
    return write_config(tmp_path / "config.yaml", models,
                        router={"models_max": 1, "api_keys": [ME, OTHER], "admin_token": ADMIN},
                        spawn={"command": child_command(llama_server, ctx=ctx)})


def client(r: RouterProcess, key: str = ME) -> openai.OpenAI:
    return openai.OpenAI(base_url=r.url + "/v1", api_key=key, timeout=180, max_retries=0)


def ask(c: openai.OpenAI, text: str, previous: str | None = None, model: str = "gemma", **extra: Any) -> Any:
    return c.responses.create(model=model, input=text, max_output_tokens=8, temperature=0,
                              previous_response_id=previous or openai.NOT_GIVEN, **extra)


def ask_streamed(c: openai.OpenAI, text: str, previous: str) -> Any:
    events = list(c.responses.create(model="gemma", input=text, max_output_tokens=8, temperature=0,
                                     previous_response_id=previous, stream=True))
    done = [e for e in events if e.type == "response.completed"]
    assert len(done) == 1
    return done[0].response


def admin(r: RouterProcess, method: str, query: str = "") -> Any:
    req = urllib.request.Request(r.url + "/admin/responses" + query, method=method,
                                 headers={"X-Admin-Token": ADMIN})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def test_a_conversation_by_previous_response_id_moves_to_another_model(tmp_path, llama_server, gemma):
    with RouterProcess(config(tmp_path, llama_server, gemma), tmp_path / "router.log") as r:
        c = client(r)
        one = ask(c, FACT)
        two = ask_streamed(c, "I live in Reykjavik.", one.id)
        three = ask(c, "What is my cat called?", two.id)
        assert one.usage.input_tokens < two.usage.input_tokens < three.usage.input_tokens
        # Turn 4 on another model: its child receives the whole conversation, turn 1's fact included.
        four = ask(c, "And my name?", three.id, model="gemma-b")
        assert four.model == "gemma-b"
        history = [i.model_dump(exclude_none=True) for i in c.responses.input_items.list(one.id, order="asc")]
        whole = []
        for turn in (one, two, three):
            whole += [*(i.model_dump(exclude_none=True) for i in c.responses.input_items.list(turn.id, order="asc")),
                      *(o.model_dump(exclude_none=True) for o in c.responses.retrieve(turn.id).output)]
        assert FACT in json.dumps(history) and FACT in json.dumps(whole)
        sent_whole = c.responses.create(model="gemma-b", input=[*whole, {"role": "user", "content": "And my name?"}],
                                        max_output_tokens=8, temperature=0, store=False)
        assert four.usage.input_tokens == sent_whole.usage.input_tokens, "the child got the whole conversation"
        alone = ask(c, "And my name?", model="gemma-b", store=False)
        assert alone.usage.input_tokens < four.usage.input_tokens - 20
        # GET, input_items, DELETE as OpenAI's; another key sees nothing of it.
        got = c.responses.retrieve(three.id)
        assert got.id == three.id and got.previous_response_id == two.id and got.output[0].content[0].text
        items = c.responses.input_items.list(three.id)
        assert [i.content[0].text for i in items.data] == ["What is my cat called?"]
        other = client(r, OTHER)
        with pytest.raises(openai.NotFoundError):
            other.responses.retrieve(three.id)
        with pytest.raises(openai.NotFoundError):
            other.responses.delete(three.id)
        with pytest.raises(openai.BadRequestError, match="not found"):
            ask(other, "What is my cat called?", three.id)
        # store: false keeps nothing; the admin sees counts per key and deletes by key.
        with pytest.raises(openai.NotFoundError):
            c.responses.retrieve(alone.id)
        ask(other, "Hello.")
        counts = {row["key"]: row["responses"] for row in admin(r, "GET")["data"]}
        assert counts == {"api_keys[0]": 4, "api_keys[1]": 1}
        c.responses.delete(one.id)
        with pytest.raises(openai.NotFoundError):
            c.responses.retrieve(one.id)
        assert admin(r, "DELETE", "?key=api_keys[1]") == {"deleted": 1}
        assert {row["key"] for row in admin(r, "GET")["data"]} == {"api_keys[0]"}
        assert FACT not in r.log() and ME not in r.log(), "conversations and keys are never logged"


@pytest.fixture
def recorder() -> Iterator[tuple[str, list[dict]]]:
    """A stand-in model server that records the Responses requests it receives and answers one canned reply."""
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self._send({"object": "list", "data": [{"id": "recorder", "object": "model"}]})

        def do_POST(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self._send({"id": f"resp_rec{len(received)}", "object": "response", "model": "recorder",
                        "status": "completed", "output": [{"type": "message", "id": "msg_rec", "role": "assistant",
                                                           "content": [{"type": "output_text", "text": "Zorblax."}]}]})

        def _send(self, data: dict) -> None:
            body = json.dumps(data).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", received
    server.shutdown()
    server.server_close()
    thread.join(10)


def test_the_next_model_receives_the_whole_conversation(tmp_path, llama_server, gemma, recorder):
    url, received = recorder
    models = {"gemma": {"path": str(gemma)}, "recorder": {"url": url}}
    cfg = write_config(tmp_path / "config.yaml", models, spawn={"command": child_command(llama_server, ctx=2048)})
    with RouterProcess(cfg, tmp_path / "router.log") as r:
        c = client(r)
        one = ask(c, FACT, instructions="Answer in French.")
        two = ask(c, "What is my name?", one.id, model="recorder", instructions="Be brief.")
        sent = received[-1]
        assert "previous_response_id" not in sent and sent["instructions"] == "Be brief."
        texts = [json.dumps(i.get("content")) for i in sent["input"]]
        assert FACT in texts[0] and one.output[0].content[0].text in json.dumps(sent["input"][1])
        assert "What is my name?" in texts[-1] and len(sent["input"]) == 3
        assert c.responses.retrieve(two.id).output[0].content[0].text == "Zorblax."


def test_a_conversation_continues_after_a_router_restart(tmp_path, llama_server, gemma):
    cfg = config(tmp_path, llama_server, gemma)
    with RouterProcess(cfg, tmp_path / "router.log") as r:
        one = ask(client(r), FACT)
    with RouterProcess(cfg, tmp_path / "router2.log") as r:
        two = ask(client(r), "What is my cat called?", one.id)
        assert two.usage.input_tokens > one.usage.input_tokens + 10
        assert client(r).responses.retrieve(one.id).output[0].content[0].text


def test_a_long_conversation_is_refused_or_truncated_to_fit_a_small_context(tmp_path, llama_server, gemma):
    with RouterProcess(config(tmp_path, llama_server, gemma, ctx=256), tmp_path / "router.log") as r:
        c = client(r)
        last = None
        for i in range(3):  # each turn fits with its 8 tokens of reply
            last = ask(c, f"Turn {i}: " + "the quick brown fox jumps over the lazy dog " * 5, last and last.id)
        assert last is not None and last.usage.input_tokens > 256 - 100
        with pytest.raises(openai.BadRequestError) as e:  # with 100 for the reply, the next does not
            c.responses.create(model="gemma", input="Summarize.", max_output_tokens=100, temperature=0,
                               previous_response_id=last.id)
        assert e.value.code == "context_length_exceeded" and "context is 256 tokens" in str(e.value)
        cut = c.responses.create(model="gemma", input="Summarize.", max_output_tokens=100, temperature=0,
                                 previous_response_id=last.id, truncation="auto")
        assert 0 < cut.usage.input_tokens <= 256 - 100


def test_a_conversation_back_on_its_model_after_a_swap_reuses_the_restored_cache(tmp_path, llama_server, gemma):
    with RouterProcess(config(tmp_path, llama_server, gemma), tmp_path / "router.log") as r:
        c = client(r)
        one = ask(c, FACT + " " + "Tell me about lighthouses and the sea. " * 8)
        two = ask(c, "What is my cat called?", one.id)
        ask(c, "Hello.", model="gemma-b", store=False)  # gemma is swapped out: its KV cache is saved
        three = ask(c, "And my name?", two.id)  # back on gemma: the cache is restored
        cached = three.usage.input_tokens_details.cached_tokens
        assert cached >= two.usage.input_tokens - 4, (cached, two.usage.input_tokens, three.usage.input_tokens)


def test_the_active_model_name_goes_to_whichever_model_is_loaded(tmp_path, llama_server, tiny_dir):
    models = {m: {"path": str(tiny_dir / f"{m}.gguf")} for m in ("tiny-a", "tiny-b")}
    cfg = write_config(tmp_path / "config.yaml", models, router={"models_max": 1, "active_model": "active"},
                       spawn={"command": child_command(llama_server)})
    with RouterProcess(cfg, tmp_path / "router.log") as r:
        c = openai.OpenAI(base_url=r.url + "/v1", api_key="unused", timeout=60, max_retries=0)
        for model in ("tiny-b", "tiny-a"):
            c.chat.completions.create(model=model, max_tokens=2, messages=[{"role": "user", "content": "hi"}])
            reply = c.chat.completions.create(model="active", max_tokens=2,
                                              messages=[{"role": "user", "content": "hi"}])
            assert reply.choices[0].message.content is not None
            kids = [p for p in r.children() if "llama-server" in p.name()]
            assert len(kids) == 1 and f"{model}.gguf" in " ".join(kids[0].cmdline()), "no swap: the loaded one served"


def test_a_streamed_reply_is_kept_when_its_client_closes_as_soon_as_it_ends(tmp_path, llama_server, tiny_dir):
    """A client that closes its connection right after the stream's last byte (many do: one
    connection per request) cancels the router's handler; the reply is stored all the same,
    so the next turn by previous_response_id finds it."""
    models = {"tiny-a": {"path": str(tiny_dir / "tiny-a.gguf")}}
    cfg = write_config(tmp_path / "config.yaml", models, spawn={"command": child_command(llama_server)})
    with RouterProcess(cfg, tmp_path / "router.log") as r:
        ids = []
        for _ in range(5):  # the handler may or may not have finished when the close arrives: try a few
            body = json.dumps({"model": "tiny-a", "input": "hi", "max_output_tokens": 4, "stream": True}).encode()
            with socket.create_connection(("127.0.0.1", r.port), timeout=60) as sock:
                sock.sendall(b"POST /v1/responses HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
                got = b""
                while not got.endswith(b"\r\n0\r\n\r\n"):  # the chunked stream's end, then close at once
                    chunk = sock.recv(65536)
                    assert chunk, got[-300:]
                    got += chunk
            done = got[got.index(b"event: response.completed"):]
            ids.append(json.loads(done[done.index(b"data: ") + 6:].split(b"\n", 1)[0])["response"]["id"])
        c = openai.OpenAI(base_url=r.url + "/v1", api_key="unused", timeout=60, max_retries=0)
        for response_id in ids:
            kept = wait_for(lambda rid=response_id: _retrieved(c, rid), 10)
            assert kept.id == response_id
        follow = c.responses.create(model="tiny-a", input="and then?", max_output_tokens=4,
                                    previous_response_id=ids[-1])
        assert follow.id not in ids


def _retrieved(c: openai.OpenAI, response_id: str) -> Any:
    try:
        return c.responses.retrieve(response_id)
    except openai.NotFoundError:
        return None


def wait_for(check: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while (found := check()) is None:
        assert time.monotonic() < deadline, "the reply was never stored"
        time.sleep(0.1)
    return found
