"""Downloads into the Hugging Face cache while the router serves: llama.cpp's
`POST /models` and `POST /admin/download` share this machinery.

`download_gguf` blocks, so each download runs in a daemon thread of its own
(a download stuck on the network never holds up the event loop, nor the
router's exit). Its progress hook runs in that thread: it throttles the
reports (the first and last of each file always pass) and hands them to the
loop, which keeps them for `GET /models` (`status.value: "downloading"`) and
emits `download_progress` events. Cancelling is cooperative: the hook raises
at its next report, and the partial file stays in the cache for a later
download to resume. At the end the model list is reloaded, so the model
(an HF cache source) is listed, then `download_finished` or
`download_failed` (with the reason) is sent.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from router.catalogue.importer import CatalogueWriteError, set_router_key
from router.core.manager import ModelManager
from router.core.refusal import Refused
from router.core.reload import Reloader
from router.discovery.huggingface import HFError, download_gguf, parse_hf_ref
from router.discovery.scan import DiscoveredModel

log = logging.getLogger("router.downloads")

PROGRESS_EVERY_S = 0.25  # at most 4 download_progress events a second per download
CANCEL_WAIT_S = 10.0  # how long a cancel waits for the download to notice


class DownloadCancelled(Exception):
    """Raised by the progress hook of a cancelled download, in its thread."""


def download_key(ref: str) -> tuple[str, str]:
    """The identity of a download: `acme/x:q4_k_m` and `acme/X:Q4_K_M` fetch the same files.
    ValueError (from parse_hf_ref) on anything that is not `user/repo[:QUANT]`."""
    repo, quant = parse_hf_ref(ref)
    return repo.lower(), (quant or "").upper()


class Throttle:
    """Which progress reports of one download are worth an event: the first and the
    last of each file, and otherwise one every `every_s` seconds."""

    def __init__(self, every_s: float = PROGRESS_EVERY_S):
        self.every_s = every_s
        self._last = float("-inf")
        self._seen: set[str] = set()

    def due(self, url: str, done: int, total: int | None, now: float) -> bool:
        first = url not in self._seen
        self._seen.add(url)
        if first or (total is not None and done >= total) or now - self._last >= self.every_s:
            self._last = now
            return True
        return False


@dataclass
class Download:
    name: str  # as the client wrote it: the model's name in events and lists while it downloads
    key: tuple[str, str]
    startup_model: bool = False  # an admin download: the first one becomes router.startup_model
    progress: dict[str, dict[str, int | None]] = field(default_factory=dict)  # url -> {"done", "total"}
    started_at: float = field(default_factory=time.time)
    cancelled: threading.Event = field(default_factory=threading.Event)
    ended: asyncio.Event = field(default_factory=asyncio.Event)

    def view(self) -> dict[str, Any]:
        """For the admin API: where it stands, in bytes."""
        totals = [p["total"] for p in self.progress.values()]
        return {"model": self.name, "started_at": self.started_at, "progress": dict(self.progress),
                "done_bytes": sum(p["done"] or 0 for p in self.progress.values()),
                "total_bytes": sum(t for t in totals if t is not None) if totals and None not in totals else None,
                "cancelling": self.cancelled.is_set(), "startup_model": self.startup_model}


class Downloads:
    """The downloads in progress, by `download_key`; one per model at a time."""

    def __init__(self, manager: ModelManager, reloader: Reloader):
        self.manager = manager
        self.reloader = reloader
        self._active: dict[tuple[str, str], Download] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def find(self, name: str) -> Download | None:
        try:
            return self._active.get(download_key(name))
        except ValueError:
            return None

    def fetching(self, repo_id: str) -> bool:
        """Whether a download of this repo (any quant) runs."""
        return any(repo == repo_id.lower() for repo, _ in self._active)

    def start(self, ref: Any, *, startup_model: bool = False) -> Download:
        """Start downloading `ref` (`user/repo[:QUANT]`) in the background; Refused when it cannot be."""
        if not isinstance(ref, str) or not ref.strip():
            raise Refused("invalid", "model must be a non-empty string", code="model_required")
        name = ref.strip()
        try:
            key = download_key(name)
        except ValueError as e:
            raise Refused("invalid", str(e), code="invalid_model") from None
        if key in self._active or self.manager.config.resolve(name) is not None:
            raise Refused("invalid", f"model '{name}' already exists", code="model_exists")  # llama.cpp's answer
        if not self.manager.config.sources.hf_cache:
            raise Refused("conflict", "downloads land in the Hugging Face cache, which this catalogue does not serve: "
                          "set sources.hf_cache: true", code="hf_cache_disabled")
        dl = self._active[key] = Download(name=name, key=key, startup_model=startup_model)
        task = asyncio.create_task(self._run(dl), name=f"download {name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        log.info("[%s] download started", name)
        self.manager.events.emit(name, "status_change", {"status": "downloading"})
        return dl

    async def cancel(self, name: str, wait_s: float = CANCEL_WAIT_S) -> bool:
        """Ask a download to stop, and wait (a while) until it has; False when none runs."""
        dl = self.find(name)
        if dl is None:
            return False
        log.info("[%s] cancelling the download", dl.name)
        dl.cancelled.set()
        try:
            await asyncio.wait_for(dl.ended.wait(), wait_s)
        except TimeoutError:
            log.warning("[%s] the download has not stopped yet; it will at its next progress report", dl.name)
        return True

    def entries(self, now: int) -> list[dict[str, Any]]:
        """The downloads as llama.cpp's GET /models lists them."""
        return [{"id": dl.name, "aliases": [], "tags": [], "object": "model", "owned_by": "llama-router",
                 "created": now, "status": {"value": "downloading", "args": [], "progress": dict(dl.progress)}}
                for dl in self._active.values()]

    def views(self) -> list[dict[str, Any]]:
        return [dl.view() for dl in self._active.values()]

    async def close(self) -> None:
        for dl in self._active.values():
            dl.cancelled.set()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # ----- one download ------------------------------------------------------
    async def _run(self, dl: Download) -> None:
        loop = asyncio.get_running_loop()
        result: asyncio.Future[DiscoveredModel] = loop.create_future()
        threading.Thread(target=self._work, args=(dl, loop, result), name=f"download {dl.name}", daemon=True).start()
        try:
            try:
                model = await result
            except DownloadCancelled:
                self._failed(dl, "cancelled")
            except HFError as e:
                self._failed(dl, str(e))
            except Exception as e:
                log.exception("[%s] download failed", dl.name)
                self._failed(dl, f"{type(e).__name__}: {e}")
            else:
                await self._finished(dl, model)
        finally:
            self._active.pop(dl.key, None)
            dl.ended.set()

    def _work(self, dl: Download, loop: asyncio.AbstractEventLoop, result: asyncio.Future[DiscoveredModel]) -> None:
        """The download thread: everything it tells the loop goes through call_soon_threadsafe."""
        throttle = Throttle()

        def report(url: str, done: int, total: int | None) -> None:
            if dl.cancelled.is_set():
                raise DownloadCancelled(dl.name)
            if throttle.due(url, done, total, time.monotonic()):
                loop.call_soon_threadsafe(self._progress, dl, url, done, total)

        def hand_over(fn: Any, value: Any) -> None:
            try:
                loop.call_soon_threadsafe(lambda: result.done() or fn(value))
            except RuntimeError:
                pass  # the loop is closed: the router has exited

        try:
            model = download_gguf(dl.name, progress=False, progress_cb=report)
        except Exception as e:
            hand_over(result.set_exception, e)
        else:
            hand_over(result.set_result, model)

    def _progress(self, dl: Download, url: str, done: int, total: int | None) -> None:
        if dl.key not in self._active:
            return
        dl.progress[url] = {"done": done, "total": total}
        self.manager.events.emit(dl.name, "download_progress", {"progress": dict(dl.progress)})

    def _failed(self, dl: Download, reason: str) -> None:
        self._active.pop(dl.key, None)
        log.warning("[%s] download failed: %s", dl.name, reason)
        self.manager.events.emit(dl.name, "download_failed", {"reason": reason})

    async def _finished(self, dl: Download, model: DiscoveredModel) -> None:
        """Reload first, so a client that fetches the list on `download_finished` finds the model."""
        res = await self.reloader.reload(f"downloaded {dl.name}")
        name = self._catalogued(model)
        if name is not None and dl.startup_model:
            await self._make_startup_model(name)
        self._active.pop(dl.key, None)
        log.info("[%s] downloaded %s; served as %s", dl.name, model.path, name or "(not in the catalogue)")
        data: dict[str, Any] = {"id": name, "path": str(model.path)}
        if not res.ok:
            data["reload_error"] = res.error
        self.manager.events.emit(dl.name, "download_finished", data)
        if res.ok:
            self.manager.events.emit("*", "models_reload", {})

    def _catalogued(self, model: DiscoveredModel) -> str | None:
        """The catalogue's name for the downloaded file (found by the reload's HF cache scan)."""
        real = os.path.realpath(model.path)
        for spec in self.manager.config.models.values():
            if spec.path and os.path.realpath(spec.path) == real:
                return spec.name
        return None

    async def _make_startup_model(self, name: str) -> None:
        path = self.reloader.path
        if path is None:
            log.info("[%s] no catalogue file to record the start-up model in", name)
            return
        try:
            changed = await asyncio.to_thread(set_router_key, path, "startup_model", name, replace=False)
        except CatalogueWriteError as e:
            log.error("[%s] cannot make it the start-up model: %s", name, e)
            return
        if changed:
            log.info("[%s] is now router.startup_model in %s", name, path)
            await self.reloader.reload("start-up model set")
