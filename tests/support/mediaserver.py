"""A STAND-IN for the media servers llama-swap routes to: stable-diffusion.cpp's
sd-server (OpenAI images API and AUTOMATIC1111's /sdapi/v1), an OpenAI-API
speech server (a TTS server's /v1/audio/speech and /v1/audio/voices) and
audio.cpp's server (/v1/tasks/run).

No such server installs from a package registry here with a model it could
run (whisper.cpp, stable-diffusion.cpp and the TTS servers on PyPI all fetch
weights at run time), so the router's media routes are proven against this:
it answers each path with a reply of the documented shape, and tells what it
received in headers (X-Received-Sha256, X-Received-Length, X-Received-Path
with the query, X-Received-Content-Type, X-Received-Authorization), so a test
can check that the body the client sent reached the server byte for byte.

Run as `python -m tests.support.mediaserver --port P`.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import struct
import time
from io import BytesIO
from typing import Any

from aiohttp import web
from python_multipart import parse_form

PNG_1X1 = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")


def wav(samples: int = 800, rate: int = 8000) -> bytes:
    """A short silent 16-bit mono WAV, what /v1/audio/speech answers with response_format wav."""
    data = b"\x00\x00" * samples
    return (b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 1, rate,
                                                                                     rate * 2, 2, 16)
            + b"data" + struct.pack("<I", len(data)) + data)


def received(request: web.Request, body: bytes) -> dict[str, str]:
    return {"X-Received-Sha256": hashlib.sha256(body).hexdigest(), "X-Received-Length": str(len(body)),
            "X-Received-Path": request.path_qs, "X-Received-Content-Type": request.headers.get("Content-Type", ""),
            "X-Received-Authorization": request.headers.get("Authorization", "")}


def model_of(body: bytes) -> str | None:
    try:
        return json.loads(body).get("model")
    except (ValueError, AttributeError):
        return None


def build_app() -> web.Application:
    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def speech(request: web.Request) -> web.Response:
        body = await request.read()
        return web.Response(body=wav(), content_type="audio/wav", headers=received(request, body))

    async def voices(request: web.Request) -> web.Response:
        body = await request.read()
        model = request.query.get("model") or model_of(body)
        return web.json_response({"voices": ["alloy", "nova"], "model": model}, headers=received(request, body))

    async def generations(request: web.Request) -> web.Response:
        body = await request.read()
        return web.json_response({"created": int(time.time()), "model": model_of(body),
                                  "data": [{"b64_json": base64.b64encode(PNG_1X1).decode()}]},
                                 headers=received(request, body))

    async def edits(request: web.Request) -> web.Response:
        body = await request.read()
        fields: dict[str, str] = {}  # the form as the real server reads it: its fields and files

        def on_field(f: Any) -> None:
            fields[f.field_name.decode()] = (f.value or b"").decode()

        def on_file(f: Any) -> None:
            fields[f.field_name.decode()] = f"<file {(f.file_name or b'').decode()} {f.size} bytes>"

        parse_form({"Content-Type": request.headers["Content-Type"], "Content-Length": str(len(body))},
                   BytesIO(body), on_field, on_file)
        return web.json_response({"created": int(time.time()), "fields": fields,
                                  "data": [{"b64_json": base64.b64encode(PNG_1X1).decode()}]},
                                 headers=received(request, body))

    async def sd_image(request: web.Request) -> web.Response:
        body = await request.read()
        params = json.loads(body)
        return web.json_response({"images": [base64.b64encode(PNG_1X1).decode()], "parameters": params,
                                  "info": json.dumps({"prompt": params.get("prompt", ""), "seed": 1})},
                                 headers=received(request, body))

    async def loras(request: web.Request) -> web.Response:
        return web.json_response([{"name": "detail-tweaker", "path": "/loras/detail-tweaker.safetensors"}],
                                 headers=received(request, b""))

    async def chat(request: web.Request) -> web.Response:
        body = await request.read()
        return web.json_response({"object": "chat.completion", "model": model_of(body), "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}]},
            headers=received(request, body))

    async def task(request: web.Request) -> web.Response:
        body = await request.read()
        return web.json_response({"task": json.loads(body).get("task"), "status": "done"},
                                 headers=received(request, body))

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_get("/health", health)
    app.router.add_post("/v1/audio/speech", speech)
    app.router.add_get("/v1/audio/voices", voices)
    app.router.add_post("/v1/audio/voices", voices)
    app.router.add_post("/v1/images/generations", generations)
    app.router.add_post("/v1/images/edits", edits)
    app.router.add_post("/sdapi/v1/txt2img", sd_image)
    app.router.add_post("/sdapi/v1/img2img", sd_image)
    app.router.add_get("/sdapi/v1/loras", loras)
    app.router.add_post("/chat/completions", chat)  # a server whose API has no /v1 (the /v/ paths)
    app.router.add_post("/v1/tasks/run", task)  # audio.cpp's generic task API
    return app


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    args = p.parse_args()
    web.run_app(build_app(), host="127.0.0.1", port=args.port, print=None)


if __name__ == "__main__":
    main()
