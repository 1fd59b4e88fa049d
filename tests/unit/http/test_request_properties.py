"""Properties of reading a request, for any input hypothesis can think of: a
body is a JSON object or a clear 4xx, never another exception; the model a
request names comes from its JSON body, its form field or its query string;
model names never hold a path or a control character; bodies over the limit
are a 413; and no key of a request body reaches a child's command line
unless the catalogue whitelists it. The last test sends random requests to
the whole application in-process: none may be answered with a 5xx."""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import urllib.parse
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp import streams
from aiohttp.test_utils import TestClient, TestServer, make_mocked_request
from hypothesis import HealthCheck, assume, event, example, given, settings
from hypothesis import strategies as st
from yarl import URL

from router.app import create_app
from router.backend.launch import SpawnError, build_launch
from router.catalogue.config import NAME_RE, RESERVED_FLAGS
from router.catalogue.parse import parse_config
from router.http.app_keys import MANAGER
from router.http.errors import HTTPError
from router.http.launch_args import LAUNCH_KEYS, MAX_ARGS, check_args, load_overrides, refuse_launch_keys
from router.http.request import keep_alive_seconds, parse_json_object, read_body, read_request, take_keep_alive

DEEP = int(os.environ.get("FUZZ_EXAMPLES", "0"))  # e.g. FUZZ_EXAMPLES=5000 to search longer than the default
FAST = settings(max_examples=DEEP or 300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
JSON_CT = {"Content-Type": "application/json"}
BOUNDARY = "llamarouterBOUNDARY"

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)
json_objects = st.dictionaries(st.text(max_size=12) | st.sampled_from([*sorted(LAUNCH_KEYS), "model", "stream"]),
                               json_values, max_size=6)


def is_client_error(e: HTTPError) -> bool:
    return 400 <= e.status < 500 and isinstance(e.message, str) and e.message != ""


# ----- parse_json_object: a dict or a 4xx, whatever the bytes --------------------------

def body_bytes() -> st.SearchStrategy[bytes]:
    """Random bytes, and bytes that are nearly JSON: valid objects and values, cut, padded,
    nested deeply, with NaN, a BOM, or in another encoding."""
    valid = json_values.map(lambda v: json.dumps(v).encode())
    return st.one_of(
        st.binary(max_size=200),
        valid,
        json_objects.map(lambda v: json.dumps(v, ensure_ascii=False).encode()),
        st.tuples(valid, st.integers(0, 50)).map(lambda t: t[0][: t[1]]),
        st.tuples(valid, st.binary(max_size=8)).map(lambda t: t[0] + t[1]),
        st.integers(1, 50_000).map(lambda n: b'{"a":' + b"[" * n + b"]" * n + b"}"),
        st.sampled_from([b"NaN", b"-Infinity", b'{"t": NaN}', b'{"t": 1e999}', b"\xef\xbb\xbf{}",
                         b'{"a": 1' + b"0" * 5000 + b"}"]),
        json_objects.map(lambda v: json.dumps(v).encode("utf-16")),
    )


@FAST
@given(body_bytes())
def test_any_body_is_an_object_or_a_4xx(body):
    try:
        data = parse_json_object(body)
    except HTTPError as e:
        assert is_client_error(e), (e.status, e.message)
    else:
        assert isinstance(data, dict)


@FAST
@given(json_objects)
def test_every_json_object_is_read_back_as_sent(obj):
    assert parse_json_object(json.dumps(obj).encode()) == obj


# ----- read_request: the model a request names ----------------------------------------

def mocked(method: str, path: str, headers: dict[str, str] | None = None) -> Any:
    return make_mocked_request(method, path, headers=headers or {})


def run(coro: Any) -> Any:
    return asyncio.run(coro)


names = st.text(max_size=40)


@FAST
@given(json_objects, st.one_of(st.none(), names))
def test_a_json_body_names_its_model_else_the_query_does(obj, query_model):
    path = "/v1/chat/completions" + (f"?{urllib.parse.urlencode({'model': query_model})}" if query_model else "")
    try:
        name, data = run(read_request(mocked("POST", path, JSON_CT), json.dumps(obj).encode()))
    except HTTPError as e:
        assert e.status == 400 and e.code == "args_not_allowed"
        assert LAUNCH_KEYS & obj.keys(), "only launch keys are refused in a body that is an object"
        return
    assert not LAUNCH_KEYS & obj.keys()
    assert data == obj
    assert name == (obj.get("model") or query_model or None)


@FAST
@given(st.sampled_from(["GET", "HEAD", "DELETE"]), names, body_bytes())
def test_get_head_and_delete_take_the_model_from_the_query_only(method, model, body):
    path = "/props?" + urllib.parse.urlencode({"model": model})
    name, data = run(read_request(mocked(method, path, JSON_CT), body))
    assert (name, data) == (model, None)


def form(fields: list[tuple[str, bytes, str | None]]) -> bytes:
    out = b""
    for field, value, filename in fields:
        disp = f'form-data; name="{field}"' + (f'; filename="{filename}"' if filename else "")
        out += f"--{BOUNDARY}\r\nContent-Disposition: {disp}\r\n\r\n".encode() + value + b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode()


form_values = st.text(max_size=60).filter(lambda s: BOUNDARY not in s and "\r" not in s)


@FAST
@given(form_values, st.binary(max_size=300), st.booleans(), st.one_of(st.none(), names))
def test_a_multipart_body_names_its_model_in_a_form_field(model, audio, model_first, query_model):
    fields = [("model", model.encode(), None), ("file", audio, "a.wav")]
    if not model_first:
        fields.reverse()
    path = "/v1/audio/transcriptions" + (f"?{urllib.parse.urlencode({'model': query_model})}" if query_model else "")
    request = mocked("POST", path, {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})
    name, data = run(read_request(request, form(fields)))
    assert data is None
    assert name == (model.strip() or query_model or None)


@FAST
@given(st.binary(max_size=300), st.sampled_from([
    f"multipart/form-data; boundary={BOUNDARY}", "multipart/form-data", "multipart/mixed; boundary=" + "x" * 80,
    'multipart/form-data; boundary=""']))
def test_any_multipart_body_is_a_name_or_a_4xx(body, ctype):
    try:
        name, _ = run(read_request(mocked("POST", "/v1/audio/transcriptions", {"Content-Type": ctype}), body))
    except HTTPError as e:
        assert is_client_error(e)
    else:
        assert name is None or isinstance(name, str)


# ----- model names: the catalogue's rule ---------------------------------------------

part = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:+-]{0,20}", fullmatch=True)


@FAST
@given(part, part, st.sampled_from(["Q4_K_M", "Q8_0", "IQ2_XXS", "BF16", "q5_k_s"]))
def test_hugging_face_references_are_names(user, repo, quant):
    assume(":" not in user + repo)
    assert NAME_RE.match(f"{user}/{repo}:{quant}")
    assert NAME_RE.match(f"{user}/{repo}")


@FAST
@given(st.text(max_size=140))
@example("tiny-a\n")
@example("../etc/passwd")
@example("a//b")
@example("/abs")
def test_a_name_the_rule_accepts_is_never_a_path_or_a_control_character(name):
    if not NAME_RE.match(name):
        return
    assert 1 <= len(name) <= 128
    assert not name.startswith("/") and not name.endswith("/") and "//" not in name
    assert ".." not in name.split("/") and "." not in name.split("/")
    assert not any(ord(c) < 32 or ord(c) == 127 for c in name)
    assert not name.startswith("-")
    assert re.fullmatch(r"[A-Za-z0-9._:+/-]+", name)


# ----- body limits -----------------------------------------------------------------------

def stub_app(**router: Any) -> dict[Any, Any]:
    return {MANAGER: SimpleNamespace(config=parse_config({"router": router}, "<test>"))}


async def read_sized(body: bytes, limit: int) -> bytes:
    protocol = SimpleNamespace(_reading_paused=False, pause_reading=lambda **_: None, resume_reading=lambda **_: None)
    payload = streams.StreamReader(protocol, 2**16, loop=asyncio.get_running_loop())
    payload.feed_data(body)
    payload.feed_eof()
    request = make_mocked_request("POST", "/v1/chat/completions", headers={"Content-Length": str(len(body))},
                                  payload=payload, client_max_size=limit, app=stub_app())
    return await read_body(request)


@FAST
@given(st.integers(0, 5000), st.integers(1, 4000))
def test_a_body_over_the_limit_is_a_413_and_any_other_is_read_whole(size, limit):
    body = b"x" * size
    try:
        assert asyncio.run(read_sized(body, limit)) == body
        assert size <= limit
    except HTTPError as e:
        assert size > limit and e.status == 413 and e.code == "body_too_large"


# ----- keep_alive ------------------------------------------------------------------------

@FAST
@given(json_values | st.integers(min_value=10**300, max_value=10**400) | st.from_regex(r"-?(\d+(ms|h|m|s))+",
                                                                                    fullmatch=True))
@example(10**400)
@example("1e999")
@example("nan")
def test_keep_alive_is_finite_seconds_or_a_400(value):
    try:
        seconds = take_keep_alive({"model": "m", "keep_alive": value})
    except HTTPError as e:
        assert e.status == 400 and e.code == "invalid_keep_alive"
        with pytest.raises(ValueError):
            keep_alive_seconds(value)
    else:
        assert seconds is not None and math.isfinite(seconds)


# ----- launch keys: nothing reaches a command line unless whitelisted ----------------------

FLAGS = ["--temp", "--top-k", "--ctx-size", "-c", "--no-mmap", "--flash-attn", *sorted(RESERVED_FLAGS)[:6]]
arg_text = st.one_of(st.sampled_from(FLAGS), st.sampled_from(FLAGS).map(lambda f: f + "=1"),
                     st.from_regex(r"-?\d+(\.\d+)?", fullmatch=True), st.text(max_size=12),
                     st.sampled_from(["-inf", "-nan", "-1_000", "-1e5", "--5", "-٣", "-", "--", "--port=1"]))


def catalogue(tmp: Path) -> Any:
    return parse_config({"spawn": {"command": ["/bin/true", "--model", "$path", "--port", "$port"]},
                         "models": {"m": {"path": str(tmp / "m.gguf")}}}, "<test>")


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return catalogue(tmp_path_factory.mktemp("launch"))


@FAST
@given(st.lists(arg_text, max_size=MAX_ARGS + 2), st.lists(st.sampled_from(FLAGS), max_size=4, unique=True))
def test_only_whitelisted_flags_reach_a_command_line(config, args, allow):
    spec = replace(config.models["m"], allow_args=tuple(allow))
    base = build_launch(config, spec, port=5000).argv
    try:
        accepted = load_overrides(spec, {"model": "m", "args": args})
    except HTTPError as e:
        assert e.status == 400 and e.code == "args_not_allowed"
        return
    argv = build_launch(config, spec, port=5000, extra_args=accepted).argv  # the last check agrees
    tail = argv[len(base):]
    assert list(tail) == args
    for a in tail:
        assert a and len(a) <= 256 and not any(ord(c) < 32 or ord(c) == 127 for c in a)
        if a.startswith("-") and not re.fullmatch(r"-\d+(\.\d+)?", a):
            flag = a.split("=", 1)[0]
            assert flag in allow and flag not in RESERVED_FLAGS


@FAST
@given(json_objects)
def test_a_load_body_adds_nothing_but_its_whitelisted_args(config, data):
    spec = replace(config.models["m"], allow_args=("--temp",))
    try:
        extra = load_overrides(spec, data)
    except HTTPError as e:
        assert e.status == 400 and e.code == "args_not_allowed"
        return
    assert set(data) & LAUNCH_KEYS <= {"args", "extra_args"}
    if not extra:
        return
    assert extra == tuple(data.get("args") or data.get("extra_args"))
    assert all(a == "--temp" or not a.startswith("-") or re.fullmatch(r"-\d+(\.\d+)?", a) for a in extra)


def test_the_command_line_builder_checks_again(config):
    spec = replace(config.models["m"], allow_args=("--temp",))
    for extra in (("--top-k", "1"), ("--port", "1"), ("--temp=1", "--model=/etc/passwd")):
        with pytest.raises(SpawnError):
            build_launch(config, spec, port=5000, extra_args=extra)


@FAST
@given(json_objects)
def test_an_inference_body_never_carries_launch_settings(data):
    if LAUNCH_KEYS & data.keys():
        with pytest.raises(HTTPError) as e:
            refuse_launch_keys(data)
        assert e.value.status == 400
    else:
        refuse_launch_keys(data)


@given(st.lists(st.text(max_size=8), max_size=3), st.sampled_from(sorted(RESERVED_FLAGS)))
@settings(max_examples=50, deadline=None)
def test_a_reserved_flag_is_refused_even_when_listed(config, values, flag):
    spec = replace(config.models["m"], allow_args=(flag,))
    with pytest.raises(HTTPError):
        check_args(spec, [flag, *values])


# ----- the whole application, in-process: no 5xx -----------------------------------------

ROUTES = [("POST", "/v1/chat/completions"), ("POST", "/completion"), ("POST", "/tokenize"),
          ("POST", "/v1/audio/transcriptions"), ("POST", "/slots/0"), ("GET", "/props"), ("GET", "/slots"),
          ("GET", "/models"), ("POST", "/models"), ("DELETE", "/models"), ("POST", "/models/load"),
          ("POST", "/models/unload"), ("POST", "/models/reload"), ("GET", "/logs/{m}"), ("GET", "/upstream/{m}/x"),
          ("POST", "/admin/models/{m}/load"), ("POST", "/admin/models/{m}/unload"), ("DELETE", "/admin/models/{m}"),
          ("POST", "/admin/download"), ("PUT", "/admin/config"), ("GET", "/admin/status"), ("GET", "/v1/stream"),
          ("DELETE", "/v1/stream"), ("POST", "/v1/streams/lookup"), ("GET", "/api/activity"),
          ("GET", "/dashboard/api/models"), ("PATCH", "/health"), ("GET", "/{m}")]
TOKEN = "admin-token-12345"


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[asyncio.AbstractEventLoop, TestClient]]:
    """The application with two models whose files do not exist: no child is ever started."""
    tmp = tmp_path_factory.mktemp("app")
    config = parse_config({"router": {"admin_token": TOKEN},
                           "sources": {"hf_cache": False},
                           "models": {"tiny-a": {"path": str(tmp / "tiny-a.gguf"), "allow_args": ["--temp"]},
                                      "tiny-b": {"path": str(tmp / "tiny-b.gguf"), "aliases": ["b"]}}}, "<test>")
    loop = asyncio.new_event_loop()
    client = TestClient(TestServer(create_app(config)), loop=loop)
    loop.run_until_complete(client.start_server())
    yield loop, client
    loop.run_until_complete(client.close())
    loop.close()


model_refs = st.one_of(st.sampled_from(["tiny-a", "tiny-b", "b", "nope", "..", "a%2Fb", "%00", "-x"]),
                       st.text(max_size=20).map(lambda s: urllib.parse.quote(s, safe="")))
queries = st.dictionaries(st.sampled_from(["model", "autoload", "files", "conv_id", "format", "tail", "reload"]),
                          st.text(max_size=12), max_size=3)
bodies = st.one_of(body_bytes(), json_objects.map(lambda o: json.dumps(o).encode()),
                   st.builds(lambda m, o: json.dumps({"model": m, **o}).encode(),
                             st.sampled_from(["tiny-a", "b", "nope"]), json_objects))
ctypes = st.sampled_from(["application/json", "application/yaml", "text/plain", "application/x-www-form-urlencoded",
                          f"multipart/form-data; boundary={BOUNDARY}", ""])


@settings(max_examples=DEEP or 250, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                    HealthCheck.function_scoped_fixture])
@given(st.sampled_from(ROUTES), model_refs, queries, bodies, ctypes, st.booleans())
def test_no_request_is_answered_with_a_5xx(live, route, model, query, body, ctype, admin):
    loop, client = live
    method, template = route
    path = template.replace("{m}", model)
    headers = {"Content-Type": ctype} if ctype else {}
    if admin:
        headers["Authorization"] = f"Bearer {TOKEN}"
    url = URL(path, encoded=True).with_query(query)

    async def send() -> tuple[int, bytes, str]:
        async with client.request(method, url, data=body, headers=headers) as r:
            return r.status, await r.read(), r.content_type

    status, data, content_type = loop.run_until_complete(send())
    event(f"{method} {template} -> {status}")
    assert status < 500, (method, str(url), status, data[:300])
    if status >= 400:
        assert content_type == "application/json"
        err = json.loads(data)["error"]
        assert isinstance(err["message"], str) and isinstance(err["type"], str) and "code" in err
