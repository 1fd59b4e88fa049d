"""A table of malformed requests: each gets a clear 4xx JSON error, and the
router keeps serving. One router (tiny models) serves the whole table."""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass, field

import pytest
import requests

from tests.support.opskit import TIMEOUT, chat, tiny_catalogue, tiny_router

pytestmark = pytest.mark.real

MAX_BODY = 64 * 1024
CHAT = "/v1/chat/completions"
MSG = [{"role": "user", "content": "hi"}]


def js(obj) -> bytes:
    return json.dumps(obj).encode()


@dataclass
class Case:
    name: str
    body: bytes | None
    status: int
    path: str = CHAT
    method: str = "POST"
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "application/json"})
    says: str = ""  # a word the error message must contain


CASES = [
    # Not JSON, or not a JSON object.
    Case("truncated JSON", b'{"model": "tiny-a", "messages": [', 400, says="not valid JSON"),
    Case("truncated string", b'{"model": "tiny-', 400, says="not valid JSON"),
    Case("empty body", b"", 400, says="empty"),
    Case("only whitespace", b" \r\n\t ", 400, says="empty"),
    Case("JSON array", b"[]", 400, says="JSON object"),
    Case("JSON string", b'"tiny-a"', 400, says="JSON object"),
    Case("JSON number", b"42", 400, says="JSON object"),
    Case("JSON null", b"null", 400, says="JSON object"),
    Case("trailing garbage", b'{"model": "tiny-a"} x', 400, says="not valid JSON"),
    Case("single quotes", b"{'model': 'tiny-a'}", 400, says="not valid JSON"),
    Case("NaN is not JSON", b'{"model": "tiny-a", "temperature": NaN}', 400, says="NaN"),
    Case("deep nesting", b'{"model": "tiny-a", "x": ' + b"[" * 30_000 + b"]" * 30_000 + b"}", 400,
         says="nested"),
    # Odd encodings.
    Case("invalid UTF-8", b'{"model": "tiny-\xff\xfe"}', 400, says="UTF-8"),
    Case("UTF-16 body", '{"model": "tiny-a"}'.encode("utf-16"), 400, says="UTF-8"),
    Case("UTF-8 byte order mark", b'\xef\xbb\xbf{"model": "tiny-a"}', 400, says="BOM"),
    Case("gzip claimed, not gzip", js({"model": "tiny-a", "messages": MSG}), 400,
         headers={"Content-Type": "application/json", "Content-Encoding": "gzip"}, says="cannot be read"),
    # Wrong types for "model".
    Case("model missing", js({"messages": MSG}), 400, says="missing 'model'"),
    Case("model empty", js({"model": "", "messages": MSG}), 400, says="missing 'model'"),
    Case("model is a number", js({"model": 7, "messages": MSG}), 400, says="must be a string"),
    Case("model is a list", js({"model": ["tiny-a"], "messages": MSG}), 400, says="must be a string"),
    Case("model is an object", js({"model": {"name": "tiny-a"}}), 400, says="must be a string"),
    Case("model is true", js({"model": True}), 400, says="must be a string"),
    Case("unknown model", js({"model": "tiny-z", "messages": MSG}), 404, says="not found"),
    # Names that must never reach a path or a command line.
    Case("path traversal", js({"model": "../../etc/passwd"}), 400, says="invalid model name"),
    Case("absolute path", js({"model": "/etc/passwd"}), 400, says="invalid model name"),
    Case("slash", js({"model": "tiny-a/../tiny-b"}), 400, says="invalid model name"),
    Case("NUL byte", js({"model": "tiny-a\u0000"}), 400, says="invalid model name"),
    Case("newline", js({"model": "tiny-a\n--port 1"}), 400, says="invalid model name"),
    Case("escape character", js({"model": "\u001b[31mtiny-a"}), 400, says="invalid model name"),
    Case("leading dash", js({"model": "--help"}), 400, says="invalid model name"),
    Case("very long name", js({"model": "a" * 10_000}), 400, says="invalid model name"),
    Case("traversal in ?model=", None, 400, path="/props?model=..%2F..%2Fetc", method="GET"),
    Case("traversal in /upstream", None, 400, path="/upstream/..%2Fetc/health", method="GET"),
    Case("traversal in /logs", None, 400, path="/logs/..%2F..%2Fetc%2Fpasswd", method="GET"),
    # Anthropic's API without its message list (llama-server itself answers 500).
    Case("messages missing", js({"model": "tiny-a", "max_tokens": 4}), 400, path="/v1/messages",
         says="'messages' is required"),
    Case("messages not a list", js({"model": "tiny-a", "messages": "hi"}), 400, path="/v1/messages",
         says="'messages' is required"),
    # Sizes.
    Case("body over the limit", js({"model": "tiny-a", "pad": "x" * (MAX_BODY * 3)}), 413, says="too large"),
    # Per-request attempts to change the child's command line.
    Case("args in a chat request", js({"model": "tiny-a", "messages": MSG, "args": ["--port", "1"]}), 400,
         says="cannot be set per request"),
    Case("spawn in a chat request", js({"model": "tiny-a", "spawn": {"command": ["/bin/sh"]}}), 400,
         says="cannot be set per request"),
    Case("load with args not whitelisted", js({"model": "tiny-a", "args": ["--temp", "1"]}), 400,
         path="/models/load", says="not allowed"),
    Case("load with a reserved flag", js({"model": "tiny-b", "args": ["--model", "/etc/passwd"]}), 400,
         path="/models/load", says="not allowed"),
    Case("load with a flag=value reserved", js({"model": "tiny-b", "args": ["--port=1"]}), 400,
         path="/models/load", says="not allowed"),
    Case("load with args as a string", js({"model": "tiny-b", "args": "--temp 1"}), 400,
         path="/models/load", says="list of strings"),
    Case("load with a control character", js({"model": "tiny-b", "args": ["--temp", "1\n--port"]}), 400,
         path="/models/load", says="printable"),
    Case("load with a value first", js({"model": "tiny-b", "args": ["1", "--temp"]}), 400,
         path="/models/load", says="start with a flag"),
    Case("load with env", js({"model": "tiny-b", "env": {"LD_PRELOAD": "/x.so"}}), 400,
         path="/models/load", says="comes from the catalogue"),
    # Wrong methods and routes.
    Case("GET on a POST route", None, 405, method="GET"),
    Case("PUT on a POST route", js({"model": "tiny-a"}), 405, method="PUT"),
    Case("unknown route", None, 404, path="/v1/nothing-here", method="GET"),
    Case("multipart without parts", b"garbage", 400, path="/v1/audio/transcriptions",
         headers={"Content-Type": "multipart/form-data; boundary=zzz"}, says="multipart"),
]


@pytest.fixture(scope="module")
def router(tmp_path_factory, llama_server, tiny_dir):
    tmp = tmp_path_factory.mktemp("bad-input")
    models = tiny_catalogue(tiny_dir, "tiny-a", "tiny-b", tiny_b={"allow_args": ["--temp"]})
    with tiny_router(tmp, llama_server, models, max_body_bytes=MAX_BODY) as r:
        yield r


def send(url: str, case: Case) -> tuple[int, dict[str, str], bytes]:
    """Raw http.client, so the body goes on the wire exactly as written."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=TIMEOUT)
    try:
        conn.request(case.method, case.path, body=case.body, headers=case.headers)
        resp = conn.getresponse()
        return resp.status, dict(resp.headers), resp.read()
    finally:
        conn.close()


def test_the_table_is_large_enough():
    assert len(CASES) >= 30 and len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_malformed_request_gets_a_clear_4xx(router, case):
    status, headers, body = send(router.url, case)
    assert status == case.status, body[:300]
    assert headers.get("Content-Type", "").startswith("application/json")
    error = json.loads(body)["error"]
    assert error["message"] and error["type"] and error["code"]
    assert case.says in error["message"]
    if "name" in case.name or "traversal" in case.name or "NUL" in case.name:
        assert "passwd" not in error["message"] and "\x00" not in error["message"]
    assert requests.get(router.url + "/health", timeout=TIMEOUT).status_code == 200


def test_router_still_serves_after_the_table(router):
    reply = chat(router.url, "tiny-a")
    assert reply.status_code == 200 and reply.json()["choices"][0]["message"]["content"]
    assert router.proc.poll() is None
    for proc in router.children():
        assert "/etc/passwd" not in " ".join(proc.cmdline())
