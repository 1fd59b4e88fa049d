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
from router.core.manager import ModelManager

log = logging.getLogger("router.reload")

Loader = Callable[[], Config]
RESTART_ONLY = ("host", "port", "max_body_bytes", "drain_timeout", "watch_config")


@dataclass
class ReloadResult:
    ok: bool
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    restarting: list[str] = field(default_factory=list)
    needs_restart: list[str] = field(default_factory=list)  # router settings that apply at next start
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
    return res


class Reloader:
    """Owns the catalogue's source: re-reads it, and applies it to the manager."""

    def __init__(self, manager: ModelManager, loader: Loader | None):
        self.manager = manager
        self.loader = loader
        self._lock = asyncio.Lock()
        self._watch: asyncio.Task[None] | None = None
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
            res = diff(old, new)
            if new == old:
                log.info("reload (%s): catalogue unchanged", why)
                return res
            res.restarting = [n for n in res.changed if self.manager.state(n).value != "unloaded"]
            self.manager.set_config(new, restart=res.restarting)
            for key in res.needs_restart:
                log.warning("reload (%s): router.%s changed; it applies when the router restarts", why, key)
            log.info("reload (%s): added %s, removed %s, changed %s (restarting when idle: %s), kept %s",
                     why, res.added or "-", res.removed or "-", res.changed or "-",
                     res.restarting or "-", len(res.kept))
            return res

    # ----- file watching ---------------------------------------------------
    def start_watching(self) -> None:
        path = self.path
        if path is None or self.loader is None or not self.manager.config.router.watch_config:
            return
        self._watch = asyncio.create_task(self._watch_file(path))

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
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)
