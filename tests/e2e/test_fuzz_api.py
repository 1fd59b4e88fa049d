"""Schemathesis against a live router: every operation of GET /openapi.json,
with generated valid and invalid requests, on a router serving two tiny
models on a real llama-server, with an admin token. No response may be a
5xx the router made, and responses must match the document.

A 5xx is accepted only when it is a child's own answer relayed as it is
(llama-server answers 501 for what a tiny model cannot do, such as
embeddings, and 500 for some malformed Anthropic bodies): the request is
sent again straight to the running child, and the child must answer the
same status. Everything else the router answers itself, and a 500 from it
is a bug.

The catalogue file is put back after each request that may change it
(PUT /admin/config, deletes, downloads), so later examples still find the
models. Downloads go to an empty Hugging Face cache in the test's folder,
offline.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from tests.support.routerproc import RouterProcess, child_command, write_config

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "5"))  # per operation and mode; more searches longer
pytestmark = [pytest.mark.real, pytest.mark.timeout(240 * max(1, EXAMPLES // 5))]

TOKEN = "fuzz-admin-token-1234"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MODELS = ("tiny-a", "tiny-b")
EVENT_STREAMS = ("/models/sse", "/logs/stream/{model}", "/api/activity/stream", "/admin/download/events")
# Requests that may change the catalogue file or the models it lists: the file is put back after each.
CHANGES = {("PUT", "/admin/config"), ("DELETE", "/admin/models/{name}"), ("DELETE", "/models"), ("POST", "/models"),
           ("POST", "/admin/download")}
# The WebUI's catch-all takes every method on every path no API route took, and answers 404
# "no route" for anything but GET: there is no resource to be 405 about.
CATCH_ALL = ("/", "/{tail}")
RELAYED: Counter[str] = Counter()  # child 5xx relayed as they are: reported at the end
ORIGINAL: dict[Path, str] = {}  # each catalogue file as the test wrote it


@pytest.fixture(scope="module")
def fuzz_router(tmp_path_factory: pytest.TempPathFactory, llama_server: Path,
                tiny_dir: Path) -> Iterator[RouterProcess]:
    tmp = tmp_path_factory.mktemp("fuzz")
    models_dir = tmp / "models"
    models_dir.mkdir()
    models: dict[str, Any] = {}
    for name in MODELS:  # copies: a fuzzed delete may only ever reach these
        shutil.copy(tiny_dir / f"{name}.gguf", models_dir / f"{name}.gguf")
        models[name] = {"path": str(models_dir / f"{name}.gguf"), "group": "fuzz"}  # side by side: no swaps
    models["tiny-a"].update(allow_args=["--temp", "--top-k"], aliases=["a"])
    cfg = write_config(tmp / "config.yaml", models,
                       router={"admin_token": TOKEN, "watch_config": False, "max_body_bytes": 256 * 1024,
                               "read_timeout": 30},
                       spawn={"command": child_command(llama_server, ctx=256)})
    env = {"HF_HOME": str(tmp / "hf"), "HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9"}
    with RouterProcess(cfg, tmp / "router.log", env=env) as router:
        ORIGINAL[cfg] = cfg.read_text()
        yield router
        log = router.log()
    assert "Traceback" not in log, log[log.index("Traceback") - 2000:][:6000]
    if RELAYED:
        print("\nchild 5xx relayed as they are:", dict(RELAYED))


@pytest.fixture(scope="module")
def api_schema(fuzz_router: RouterProcess) -> Any:
    config = schemathesis.Config.from_dict({
        "headers": AUTH,
        "request-timeout": 20,
        "max-stream-events": 2,
        "generation": {"max-examples": EXAMPLES, "mode": "all"},
    })
    return schemathesis.openapi.from_url(fuzz_router.url + "/openapi.json", config=config)


schema = schemathesis.pytest.from_fixture("api_schema")


@pytest.fixture(autouse=True)
def _node_id_for_schemathesis(request: pytest.FixtureRequest) -> None:
    """schemathesis 4.32 renames the test per operation through `node._nodeid`, which
    pytest 9.2 no longer has (it is `_id` now): give it one to rename."""
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid


def _child_port(url: str, model: str) -> int | None:
    """The port of `model`'s child once it is loaded, loading it when it is not running
    (a request with keep_alive 0 unloads its model right after the reply), to stay."""
    for _ in range(150):
        models = requests.get(url + "/admin/status", headers=AUTH, timeout=10).json()["models"]
        state = next((m for m in models if m["model"] == model), None)
        if state is None:
            return None
        if state["state"] == "loaded" and state["port"] and not state.get("waiting"):
            return state["port"]
        if state["state"] == "unloaded":
            # keep_alive -1: a fuzzed keep_alive of a few ms (it stays the model's TTL) would
            # unload it again before this loop could see it loaded.
            requests.post(url + "/tokenize", json={"model": model, "content": "x", "keep_alive": -1}, timeout=10)
        time.sleep(0.1)
    return None


def _model_of(case: Any) -> str:
    if case.operation.path.startswith("/upstream/"):
        return case.path_parameters["model"]
    if isinstance(case.body, dict) and isinstance(case.body.get("model"), str):
        return case.body["model"]
    return (case.query or {}).get("model") or ""


def _not_relayed(url: str, response: Any, case: Any) -> str | None:
    """Send the request straight to its model's child: None when it answers the same
    status (the router relayed the child's answer), else what it answered."""
    sent = response.request
    path = sent.path_url
    if case.operation.path.startswith("/upstream/"):
        path = "/" + path.split("/", 3)[3]
    elif case.operation.path.startswith("/v/"):  # llama-swap's versionless aliases reach the child without /v
        path = path[2:]
    model = {"a": "tiny-a"}.get(_model_of(case), _model_of(case))
    if model not in MODELS:
        return f"no model of the catalogue named ({model!r})"
    answers = []
    for _ in range(3):  # the child may be stopping (keep_alive 0) as we ask: ask its next one
        port = _child_port(url, model)
        if port is None:
            return f"{model} does not load"
        try:
            r = requests.request(sent.method, f"http://127.0.0.1:{port}{path}", data=sent.body, timeout=20,
                                 headers={k: v for k, v in sent.headers.items() if k.lower() == "content-type"})
        except requests.ConnectionError as e:
            answers.append(repr(e))
            continue
        if r.status_code == response.status_code:
            return None
        answers.append(f"{r.status_code} {r.text[:200]}")
    return f"the child of {model} answered: {answers}"


def _use_real_models(case: Any) -> None:
    """About two bodies in three name a model that exists, so the children answer too
    (decided by the body itself: a shrunk example stays the same example)."""
    body = case.body
    positive = case.meta is None or case.meta.generation.mode is GenerationMode.POSITIVE
    if positive and isinstance(body, dict) and isinstance(body.get("model"), str):
        pick = zlib.crc32(repr(sorted(body.items(), key=str)).encode()) % 3
        if pick < 2:
            body["model"] = MODELS[pick]


def _restore(router: RouterProcess) -> None:
    """Put the catalogue file back and reload it (SIGHUP: a fuzzed catalogue may have no admin token)."""
    if router.config.read_text() == ORIGINAL[router.config]:
        return
    router.config.write_text(ORIGINAL[router.config])
    router.proc.send_signal(signal.SIGHUP)
    for _ in range(100):
        r = requests.get(router.url + "/admin/status", headers=AUTH, timeout=10)
        if r.status_code == 200 and {m["model"] for m in r.json()["models"]} >= set(MODELS):
            return
        time.sleep(0.1)
    raise AssertionError(f"the catalogue was not restored: {r.status_code} {r.text[:300]}")


@schema.parametrize()
@settings(deadline=timedelta(seconds=20), suppress_health_check=list(HealthCheck))
def test_no_request_gets_a_5xx_from_the_router(case: Any, fuzz_router: RouterProcess) -> None:
    _use_real_models(case)
    timeout = 0.3 if case.operation.path in EVENT_STREAMS else 20  # an event stream is read this long
    response = case.call(timeout=timeout)
    try:
        if response.status_code >= 500:
            why = _not_relayed(fuzz_router.url, response, case)
            assert why is None, f"{case.method} {response.request.url} -> {response.status_code}: " \
                                f"{response.text[:500]}; {why}"
            RELAYED[f"{case.method} {case.operation.path} {response.status_code}"] += 1
        checks = [status_code_conformance, content_type_conformance, response_schema_conformance,
                  response_headers_conformance, negative_data_rejection]
        if case.operation.path not in CATCH_ALL:
            checks.append(unsupported_method)
        case.validate_response(response, checks=checks)
    finally:
        if (case.method.upper(), case.operation.path) in CHANGES:
            _restore(fuzz_router)


def test_a_child_error_without_a_body_gets_the_one_error_shape(fuzz_router: RouterProcess) -> None:
    """What the fuzzer found: llama-server refuses an odd multipart body with an empty 400,
    which the router relayed as it was; it now says so in the one error shape."""
    boundary = "fuzzboundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"odd\x1c\"\r\n\r\nx\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\ntiny-b\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\na\r\n"
            f"--{boundary}--\r\n").encode()
    r = requests.post(fuzz_router.url + "/v1/audio/transcriptions", data=body, timeout=30,
                      headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert r.status_code == 400 and r.headers["Content-Type"].startswith("application/json")
    error = r.json()["error"]
    assert error["code"] == 400 and "empty body" in error["message"]
