"""Ollama's model management, on the router's catalogue: /api/pull downloads
a Hugging Face GGUF (`hf.co/user/repo:Q4_K_M`, as Ollama users name them, or
`user/repo:Q4_K_M`) through the router's downloader (core/downloads.py, the
machinery of llama.cpp's POST /models) with Ollama's NDJSON progress;
/api/delete deletes a model of the Hugging Face cache as DELETE /models does.

What has no counterpart here answers a clear error (400, not_supported): /api/create and
/api/blobs (Ollama's own store, built from Modelfiles), /api/push (the Ollama
registry), and /api/copy, whose copy would be an alias written into the
catalogue (`aliases:` in the model's entry does it). A copy to a name the
model already answers to is a success, which changes nothing.
"""

from __future__ import annotations

import asyncio
from pathlib import PurePosixPath
from typing import Any

from aiohttp import web

from router.api.ollama_models import HF_PREFIXES
from router.api.ollama_relay import NDJSON, read_json, resolve
from router.api.ollama_reply import line
from router.api.ollama_translate import wants_stream
from router.core.downloads import Download
from router.core.model_files import cache_removal, prune_hf_repo, remove_model
from router.core.reload import reload_models
from router.discovery.huggingface import parse_hf_ref
from router.http.access import INFERENCE, Models, declare
from router.http.app_keys import DOWNLOADS, MANAGER, RELOADER
from router.http.errors import HTTPError

NOT_HERE = 400  # a request for what llama-router does not do, not a failure of the router


def hf_ref(name: Any) -> str:
    """The `user/repo[:QUANT]` an Ollama pull names: `hf.co/` and `:latest` dropped. Ollama's
    own library (`llama3.2`) cannot be reached from here: 400, saying what can."""
    if not isinstance(name, str) or not name.strip():
        raise HTTPError(400, "model is required", code="model_required")
    ref = name.strip()
    for prefix in HF_PREFIXES:
        if ref.lower().startswith(prefix):
            ref = ref[len(prefix):]
    ref = ref.removesuffix(":latest")
    try:
        parse_hf_ref(ref)
    except ValueError:
        raise HTTPError(400, f"cannot pull '{name[:120]}': llama-router pulls GGUF models from Hugging Face, named "
                        "hf.co/user/repo:QUANT (e.g. hf.co/ggml-org/gemma-3-270m-GGUF:Q8_0); Ollama's library is "
                        "not one of its sources", code="invalid_model") from None
    return ref


def progress_lines(progress: dict[str, dict[str, int | None]]) -> bytes:
    """Ollama's `pulling` objects, one per file: its name stands for the layer digest."""
    out = b""
    for url, p in progress.items():
        file = PurePosixPath(url.split("?", 1)[0]).name
        obj: dict[str, Any] = {"status": f"pulling {file}", "digest": file}
        if p.get("total"):
            obj["total"] = p["total"]
        if p.get("done"):
            obj["completed"] = p["done"]
        out += line(obj)
    return out


@declare(INFERENCE, Models.EVERY)
async def handle_pull(request: web.Request) -> web.StreamResponse:
    data = await read_json(request)
    ref = hf_ref(data.get("model") or data.get("name"))
    streamed = wants_stream(data)
    manager, downloads = request.app[MANAGER], request.app[DOWNLOADS]
    q = manager.events.subscribe()  # before the download starts: none of its events is missed
    try:
        try:
            resolve(request, ref)
            present = True
        except HTTPError:
            present = False
        dl: Download | None = None if present else (downloads.find(ref) or downloads.start(ref))
        resp: web.StreamResponse | None = None
        if streamed:
            resp = web.StreamResponse(headers={"Content-Type": NDJSON})
            await resp.prepare(request)
            await resp.write(line({"status": "pulling manifest"}) + (progress_lines(dl.progress) if dl else b""))
        error = await _follow(q, dl, resp) if dl is not None else None
    finally:
        manager.events.unsubscribe(q)
    if resp is None:
        if error is not None:
            raise HTTPError(500, error, code="pull_failed")
        return web.json_response({"status": "success"})
    await resp.write(line({"error": error} if error is not None else {"status": "success"}))
    await resp.write_eof()
    return resp


async def _follow(q: asyncio.Queue[Any], dl: Download, resp: web.StreamResponse | None) -> str | None:
    """Relay `dl`'s progress until it ends: None when it succeeded, else why not."""
    while True:
        msg = await q.get()
        if msg["model"] != dl.name:
            continue
        event, data = msg["event"], msg["data"]
        if event == "download_progress" and resp is not None:
            await resp.write(progress_lines(data.get("progress") or {}))
        elif event == "download_failed":
            return f"pull failed: {data.get('reason') or 'unknown error'}"
        elif event == "download_finished":
            if data.get("reload_error"):
                return f"downloaded, but the catalogue could not be reloaded: {data['reload_error']}"
            return None


@declare(INFERENCE, Models.EVERY)
async def handle_delete(request: web.Request) -> web.Response:
    """A download in progress is cancelled; a model of the Hugging Face cache loses its files
    (a model of the catalogue file stays: 400 model_not_removable, as DELETE /models)."""
    data = await read_json(request)
    name = data.get("model") or data.get("name")
    manager, reloader, downloads = request.app[MANAGER], request.app[RELOADER], request.app[DOWNLOADS]
    try:
        ref = hf_ref(name)
    except HTTPError:
        ref = None
    if ref is not None and await downloads.cancel(ref):
        repo = parse_hf_ref(ref)[0]
        if not downloads.fetching(repo):
            await asyncio.to_thread(prune_hf_repo, repo)
        await reload_models(reloader, f"removed {ref}")
        return web.Response(status=200)
    spec = resolve(request, name)
    await remove_model(manager, reloader, spec, cache_removal(manager.config, spec))
    return web.Response(status=200)


@declare(INFERENCE, Models.EVERY)
async def handle_copy(request: web.Request) -> web.Response:
    data = await read_json(request)
    spec = resolve(request, data.get("source"))
    destination = data.get("destination")
    if not isinstance(destination, str) or not destination:
        raise HTTPError(400, "destination is required", code="invalid_request")
    try:
        if resolve(request, destination) is spec:
            return web.Response(status=200)  # it already answers to that name
    except HTTPError:
        pass
    raise HTTPError(NOT_HERE, f"copying is not supported here: to serve '{spec.name}' as '{destination[:120]}' too, "
                    "add it to the model's `aliases` in the catalogue (docs/ollama.md)", code="not_supported")


@declare(INFERENCE, Models.NONE)
async def handle_not_here(request: web.Request) -> web.Response:
    what = {"/api/create": "creating models from a Modelfile", "/api/push": "pushing to the Ollama registry"}.get(
        request.path, "Ollama's blob store")
    raise HTTPError(NOT_HERE, f"{what} is not supported by llama-router: models come from GGUF files in its "
                    "catalogue and folders, or from Hugging Face with /api/pull (docs/ollama.md)", code="not_supported")


def add_store_routes(app: web.Application) -> list[str]:
    """The paths it registered."""
    r = app.router
    r.add_post("/api/pull", handle_pull)
    r.add_delete("/api/delete", handle_delete)
    r.add_post("/api/copy", handle_copy)
    for path in ("/api/create", "/api/push", "/api/blobs/{digest}"):
        r.add_post(path, handle_not_here)
    return ["/api/pull", "/api/delete", "/api/copy", "/api/create", "/api/push"]
