"""Hot reload: apply an edited catalogue without dropping a request.

Triggers: the file changes (watchfiles), SIGHUP, POST /admin/reload and
POST /admin/rescan. The new file is read in full first; if it cannot be
used (YAML error, unknown key, missing file) the running catalogue stays
and the exact error is logged and returned. Otherwise:

- models whose launch settings (path, args, env, spawn, mmproj) did not
  change keep running untouched, even if their aliases or ttl changed;
- changed models that are running restart once idle;
- removed models stop once idle; requests already waiting for them fail.

Settings that only apply at start-up (RESTART_ONLY) are reported, not applied.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from router.catalogue.config import Config, ConfigError
from router.catalogue.sources import SETTLE_S
from router.core.manager import ModelManager

log = logging.getLogger("router.reload")

Loader = Callable[[], Config]
RESTART_ONLY = ("host", "port", "ollama_port", "max_body_bytes", "drain_timeout", "watch_config", "tls_cert", "tls_key")


@dataclass
class ReloadResult:
    ok: bool
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    restarting: list[str] = field(default_factory=list)
    needs_restart: list[str] = field(default_factory=list)  # router settings that apply at next start
    imported: list[str] = field(default_factory=list)  # new models of the import folders, written to the file
    missing: list[str] = field(default_factory=list)  # catalogued models whose file is gone
    skipped: list[dict[str, str]] = field(default_factory=list)  # files not taken: {"path", "reason"}
    error: str | None = None

    def to_json(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


def diff(old: Config, new: Config) -> ReloadResult:
    old_m, new_m = old.models, new.models
    res = ReloadResult(ok=True)
    res.added = sorted(set(new_m) - set(old_m))
    res.removed = sorted(set(old_m) - set(new_m))
    for name in sorted(set(old_m) & set(new_m)):
        before = (old_m[name].launch_key(), old.spawn_for(old_m[name]))
        after = (new_m[name].launch_key(), new.spawn_for(new_m[name]))
        (res.changed if before != after else res.kept).append(name)
    res.needs_restart = [k for k in RESTART_ONLY if getattr(old.router, k) != getattr(new.router, k)]
    res.imported = list(new.report.imported)
    res.missing = sorted(new.missing)
    res.skipped = [{"path": p, "reason": r} for p, r in new.report.skipped]
    return res


def _model_or_folder(_change: object, path: str) -> bool:
    """Watch GGUF files, and folders: a file copied into a folder made a moment
    before may land before the watch on that folder exists."""
    return path.lower().endswith(".gguf") or os.path.isdir(path)


def catalogue_events(old: Config, new: Config) -> list[tuple[str, str]]:
    """(model, event) for /models/sse: models added, removed, gone missing, found again."""
    out = [(n, "model_added") for n in sorted(set(new.models) - set(old.models))]
    out += [(n, "model_removed") for n in sorted(set(old.models) - set(new.models))]
    out += [(n, "model_missing") for n in sorted(new.missing - old.missing) if n in new.models]
    out += [(n, "model_found") for n in sorted(old.missing - new.missing) if n in new.models]
    return out


def apply_config(manager: ModelManager, new: Config, why: str) -> ReloadResult:
    """Switch `manager` to `new`: unchanged models keep running, changed ones restart
    once idle, removed ones stop once idle (a reload here, a new front's catalogue
    on a cluster host)."""
    old = manager.config
    res = diff(old, new)
    for item in res.skipped:
        log.info("reload (%s): skipped %s: %s", why, item["path"], item["reason"])
    if new == old:
        log.info("reload (%s): catalogue unchanged", why)
        return res
    res.restarting = [n for n in res.changed if manager.state(n).value != "unloaded"]
    manager.set_config(new, restart=res.restarting)
    for name, event in catalogue_events(old, new):
        spec = new.models.get(name) or old.models.get(name)
        manager.events.emit(name, event, {"path": spec.path if spec else None, "reason": why})
    for key in res.needs_restart:
        log.warning("reload (%s): router.%s changed; it applies when the router restarts", why, key)
    log.info("reload (%s): added %s, removed %s, changed %s (restarting when idle: %s), kept %s, "
             "missing %s", why, res.added or "-", res.removed or "-", res.changed or "-",
             res.restarting or "-", len(res.kept), res.missing or "-")
    return res


class Reloader:
    """Owns the catalogue's source: re-reads it, and applies it to the manager."""

    def __init__(self, manager: ModelManager, loader: Loader | None):
        self.manager = manager
        self.loader = loader
        self._lock = asyncio.Lock()
        self._watch: asyncio.Task[None] | None = None
        self._folder_watch: asyncio.Task[None] | None = None
        self._again: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    @property
    def path(self) -> Path | None:
        source = self.manager.config.source
        return None if source.startswith("<") else Path(source).expanduser().resolve()

    async def reload(self, why: str) -> ReloadResult:
        if self.loader is None:
            return ReloadResult(ok=False, error="the router was started without a catalogue file")
        async with self._lock:
            try:
                new = await asyncio.get_running_loop().run_in_executor(None, self.loader)
            except ConfigError as e:
                log.error("reload (%s) failed; keeping the running catalogue: %s", why, e)
                return ReloadResult(ok=False, error=str(e))
            old = self.manager.config
            self._look_again_if_unsettled(new)
            res = apply_config(self.manager, new, why)
            if self._folders(old) != self._folders(new):
                self._restart_folder_watch()
            return res

    # ----- file watching ---------------------------------------------------
    def start_watching(self) -> None:
        path = self.path
        if self.loader is None:
            return
        if path is not None and self.manager.config.router.watch_config:
            self._watch = asyncio.create_task(self._watch_file(path))
        self._restart_folder_watch()
        self._look_again_if_unsettled(self.manager.config)

    def _look_again_if_unsettled(self, new: Config) -> None:
        """A file was still being written: rescan once it has settled (a copy may
        end with no further change the watch could see)."""
        if new.report.unsettled and (self._again is None or self._again.done()):
            self._again = asyncio.create_task(self._reload_later(SETTLE_S + 0.2))

    async def _reload_later(self, delay: float) -> None:
        await asyncio.sleep(delay)
        await self.reload("a file settled")

    # ----- folder watching -------------------------------------------------
    @staticmethod
    def _folders(config: Config) -> tuple[str, ...]:
        """The model folders watched: llama.cpp-layout dirs and import folders that exist."""
        if not config.router.watch_folders:
            return ()
        dirs = dict.fromkeys(os.path.abspath(d) for d in (*config.sources.dirs, *config.sources.import_dirs))
        return tuple(d for d in dirs if os.path.isdir(d))

    def _restart_folder_watch(self) -> None:
        if self._folder_watch is not None:
            self._folder_watch.cancel()
            self._folder_watch = None
        folders = self._folders(self.manager.config)
        if folders and self.loader is not None and not self._stop.is_set():
            self._folder_watch = asyncio.create_task(self._watch_folders(folders))

    async def _watch_folders(self, folders: tuple[str, ...]) -> None:
        """A GGUF file added, changed or removed under a model folder: rescan once
        the changes stop for SETTLE_S (a file still being copied keeps changing)."""
        import watchfiles

        log.info("watching %s for new models", ", ".join(folders))
        step = int(SETTLE_S * 1000)
        try:
            async for changes in watchfiles.awatch(*folders, stop_event=self._stop, debounce=max(step * 4, 1600),
                                                   step=step, recursive=True, raise_interrupt=False,
                                                   watch_filter=_model_or_folder):
                if changes:
                    await self.reload("model folder changed")
        except asyncio.CancelledError:
            raise
        except Exception as e:  # the watcher must never take the router down
            log.error("stopped watching the model folders: %s", e)

    async def _watch_file(self, path: Path) -> None:
        import watchfiles

        # Watch the folder: editors replace files by rename, and a removed file may come back.
        folder = path.parent
        target = os.fspath(path)
        log.info("watching %s for changes", target)
        try:
            async for changes in watchfiles.awatch(folder, stop_event=self._stop, debounce=300, step=50,
                                                   recursive=False, raise_interrupt=False,
                                                   watch_filter=lambda _c, p: os.path.abspath(p) == target):
                if changes:
                    await self.reload("file changed")
        except asyncio.CancelledError:
            raise
        except Exception as e:  # the watcher must never take the router down
            log.error("stopped watching %s: %s", target, e)

    async def close(self) -> None:
        self._stop.set()
        tasks = [t for t in (self._watch, self._folder_watch, self._again) if t is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def reload_models(reloader: Reloader, why: str) -> ReloadResult:
    """Reload the model list; on success, tell event clients to fetch it again
    (llama.cpp's `{"model": "*", "event": "models_reload"}`)."""
    res = await reloader.reload(why)
    if res.ok:
        reloader.manager.events.emit("*", "models_reload", {})
    return res
