"""The endpoints llama-swap routes besides the text ones, routed by model to the
server the catalogue starts for it: speech, images (a multipart upload whose
model is a form field), stable-diffusion.cpp's /sdapi/v1 and the versionless
/v/ paths. The server is tests/support/mediaserver.py, a STAND-IN for
stable-diffusion.cpp's sd-server and a TTS server (none installs here with a
model it could run); it reports what it received, so each test checks that the
body reached it byte for byte. The /v/ paths are also checked against a real
llama-server."""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.support.opskit import TIMEOUT, tiny_catalogue
from tests.support.routerproc import RouterProcess, child_command, write_config

pytestmark = pytest.mark.real

# The stand-in, started by the router as any model's server.
STAND_IN = {"command": [sys.executable, "-m", "tests.support.mediaserver", "--port", "$port"],
            "health_endpoint": "/health"}


@pytest.fixture(scope="module")
def router(tmp_path_factory: pytest.TempPathFactory, llama_server: Path, tiny_dir: Path) -> Iterator[RouterProcess]:
    tmp = tmp_path_factory.mktemp("media")
    models = {"sd-turbo": {"spawn": STAND_IN, "aliases": ["kokoro"], "group": "media"},
              **tiny_catalogue(tiny_dir, "tiny-a", group="text")}
    cfg = write_config(tmp / "config.yaml", models, spawn={"command": child_command(llama_server)},
                       router={"watch_config": False, "models_max": 0})
    with RouterProcess(cfg, tmp / "router.log") as r:
        yield r


def reached(resp: requests.Response, sent: bytes, path: str) -> None:
    """The stand-in received exactly `sent` on `path`."""
    assert resp.status_code == 200, resp.text
    assert resp.headers["X-Received-Path"] == path
    assert resp.headers["X-Received-Length"] == str(len(sent))
    assert resp.headers["X-Received-Sha256"] == hashlib.sha256(sent).hexdigest()


# Written by hand, spacing and key order as a client might: any re-encoding would change the bytes.
SPEECH = b'{"model":"kokoro",  "input": "Hello \\u00e9t\\u00e9", "voice":"alloy","response_format" : "wav"}'
IMAGE = b'{ "model": "sd-turbo", "prompt": "a red fox", "n": 1, "size": "256x256", "response_format": "b64_json" }'
TXT2IMG = b'{"model":"sd-turbo","prompt":"a lighthouse","steps":4,"cfg_scale":1.0,"width":256,"height":256}'
IMG2IMG = b'{"model":"sd-turbo","init_images":["iVBORw0KGgo="],"prompt":"at night","denoising_strength":0.5}'


def test_speech_is_sent_to_the_model_the_body_names(router):
    resp = requests.post(router.url + "/v1/audio/speech", data=SPEECH, timeout=TIMEOUT,
                         headers={"Content-Type": "application/json"})
    reached(resp, SPEECH, "/v1/audio/speech")
    assert resp.headers["Content-Type"] == "audio/wav" and resp.content[:4] == b"RIFF"


def test_voices_by_query_and_by_body(router):
    resp = requests.get(router.url + "/v1/audio/voices", params={"model": "kokoro"}, timeout=TIMEOUT)
    reached(resp, b"", "/v1/audio/voices?model=kokoro")
    assert resp.json() == {"voices": ["alloy", "nova"], "model": "kokoro"}
    body = b'{"model": "kokoro"}'
    reached(requests.post(router.url + "/v1/audio/voices", data=body, timeout=TIMEOUT), body, "/v1/audio/voices")


def test_image_generation_and_the_sdapi(router):
    for path, body in (("/v1/images/generations", IMAGE), ("/sdapi/v1/txt2img", TXT2IMG),
                       ("/sdapi/v1/img2img", IMG2IMG)):
        resp = requests.post(router.url + path, data=body, headers={"Content-Type": "application/json"},
                             timeout=TIMEOUT)
        reached(resp, body, path)
    assert resp.json()["images"] and resp.json()["parameters"]["denoising_strength"] == 0.5
    loras = requests.get(router.url + "/sdapi/v1/loras", params={"model": "sd-turbo"}, timeout=TIMEOUT)
    reached(loras, b"", "/sdapi/v1/loras?model=sd-turbo")
    assert loras.json()[0]["name"] == "detail-tweaker"


def test_image_edits_upload_is_routed_by_its_form_field(router):
    # Binary bytes that look like a multipart boundary and line ends: they must arrive untouched.
    image = os.urandom(200_000) + b"\r\n--not-a-boundary\r\n" + bytes(range(256))
    mask = os.urandom(5000)
    prepared = requests.Request("POST", router.url + "/v1/images/edits", files={
        "image": ("fox.png", image, "image/png"), "mask": ("mask.png", mask, "image/png")},
        data={"prompt": "add a hat", "model": "sd-turbo", "n": "1"}).prepare()
    assert isinstance(prepared.body, bytes)
    resp = requests.Session().send(prepared, timeout=TIMEOUT)
    reached(resp, prepared.body, "/v1/images/edits")
    assert resp.headers["X-Received-Content-Type"] == prepared.headers["Content-Type"]
    assert resp.json()["fields"] == {"image": f"<file fox.png {len(image)} bytes>",
                                     "mask": f"<file mask.png {len(mask)} bytes>", "prompt": "add a hat",
                                     "model": "sd-turbo", "n": "1"}


def test_an_upload_naming_no_known_model_is_refused_in_the_api_shape(router):
    resp = requests.post(router.url + "/v1/images/edits", files={"image": ("a.png", b"x")},
                         data={"model": "dall-e-3"}, timeout=TIMEOUT)
    assert resp.status_code == 404
    assert resp.json()["error"]["code"] == "model_not_found"
    resp = requests.post(router.url + "/v1/images/edits", files={"image": ("a.png", b"x")}, timeout=TIMEOUT)
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "model_required"


def test_versionless_paths_reach_the_server_without_their_v(router):
    body = b'{"model": "sd-turbo", "messages": [{"role": "user", "content": "hi"}]}'
    resp = requests.post(router.url + "/v/chat/completions?trace=1", data=body, timeout=TIMEOUT)
    reached(resp, body, "/chat/completions?trace=1")
    task = b'{"model": "kokoro", "task": "tts", "input": {"text": "hi"}}'
    reached(requests.post(router.url + "/audioapi/v1/tasks/run", data=task, timeout=TIMEOUT), task, "/v1/tasks/run")
    # And a real llama-server's /chat/completions.
    real = requests.post(router.url + "/v/chat/completions", timeout=TIMEOUT, json={
        "model": "tiny-a", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4})
    assert real.status_code == 200, real.text
    assert real.json()["object"] == "chat.completion" and real.json()["model"] == "tiny-a"
