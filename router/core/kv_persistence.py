"""Conversations survive a swap: save a child's KV cache before it stops,
restore it when the model starts again.

Without this, every swap throws the prompt cache away and coming back to a
model means reading the whole conversation again (seconds to minutes on a
CPU). llama-server can write a slot's cache to a file and read it back
(`POST /slots/{id}?action=save|restore`, with `--slot-save-path`), so the
router does it from outside, for every llama-server child:

- before a stop for a swap, TTL, reload or unload (`manager.before_stop`),
  every slot that holds tokens is saved, the whole save bounded by
  `router.slot_save_timeout` so a stuck child never holds a swap for long;
- after a start, before the first request is let through
  (`manager.after_ready`), the model's saved slots are restored - but only
  files whose fingerprint (router/backend/slotfiles.py) equals the new child's;
- a child that crashed saves nothing; its last saved files stay and are used
  as long as the fingerprint matches.

Outcomes are in `manager.status[model].kv` and on the event bus
(`kv_saved`, `kv_restored`). A failure here is logged and never fails a
load or blocks a stop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import weakref
from dataclasses import asdict
from pathlib import Path
from typing import Any

from router.backend.argv import arg_value, given_slots
from router.backend.child import ChildProcess
from router.backend.launch import ensure_slot_save_dir
from router.backend.slotfiles import (
    PARTIAL_SUFFIX,
    SAVE_PATH_FLAG,
    enforce_budget,
    fingerprint,
    model_files,
    slot_file_name,
)
from router.core.manager import ModelManager
from router.core.status import KVStatus, KVTransfer, ModelStatus
from router.upstream.pool import UpstreamError

log = logging.getLogger("router.kvcache")

VERSION_TIMEOUT_S = 10.0
_versions: dict[tuple[str, int, int], str] = {}


class SlotError(RuntimeError):
    """llama-server refused or failed a slot action."""

    def __init__(self, message: str, status: int):
        self.status = status
        super().__init__(message)


async def server_version(binary: str, env: dict[str, str]) -> str:
    """`llama-server --version`, once per binary file (its identity is the key)."""
    try:
        st = os.stat(binary)
    except OSError:
        return "unknown"
    key = (os.path.realpath(binary), st.st_size, st.st_mtime_ns)
    if key in _versions:
        return _versions[key]
    try:
        proc = await asyncio.create_subprocess_exec(
            binary, "--version", stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, env=env)
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), VERSION_TIMEOUT_S)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return "unknown"
    except OSError:
        return "unknown"
    lines = out.decode("utf-8", "replace").splitlines()
    version = "\n".join(ln for ln in lines if ln.startswith(("version:", "built with"))) or "unknown"
    _versions[key] = version
    return version


class KVPersistence:
    """The save/restore hooks of one router; `install()` registers them."""

    def __init__(self, manager: ModelManager):
        self.manager = manager
        self._fingerprints: weakref.WeakKeyDictionary[ChildProcess, str] = weakref.WeakKeyDictionary()

    def install(self) -> None:
        if self.manager.config.router.kv_persistence is False:
            return
        ensure_slot_save_dir(self.manager.config)  # children get --slot-save-path only when it exists
        self.manager.before_stop.append(self.save)
        self.manager.after_ready.append(self.restore)

    # ----- helpers ---------------------------------------------------------
    def _directory(self, child: ChildProcess) -> Path | None:
        """The child's --slot-save-path (backend/launch.py adds it), or None: not ours to manage."""
        if not child.plan.native or self.manager.config.router.kv_persistence is False:
            return None
        value = arg_value(child.plan.argv, SAVE_PATH_FLAG)
        return Path(value) if value else None

    def _status(self, model: str) -> KVStatus:
        return self.manager.status.setdefault(model, ModelStatus()).kv

    async def _fingerprint(self, child: ChildProcess) -> str:
        """Taken once, at start: a model file replaced later does not describe this child."""
        fp = self._fingerprints.get(child)
        if fp is None:
            version = await server_version(child.plan.argv[0], child.plan.env)
            fp = fingerprint(child.plan.argv, child.plan.env, version)
            self._fingerprints[child] = fp
        return fp

    async def _slot_ids(self, child: ChildProcess, timeout: float) -> list[int]:
        try:
            answer = await self.manager.client.get(child.base_url, "/slots", timeout=timeout)
            if answer.status == 200:
                return [int(s["id"]) for s in answer.json() if isinstance(s, dict) and "id" in s]
        except (UpstreamError, ValueError, KeyError, TypeError):
            pass
        # /slots is off (--no-slots): every slot id there can be.
        return list(range(given_slots(child.plan.argv) or 1))

    async def _action(self, child: ChildProcess, slot: int, action: str, filename: str,
                      timeout: float) -> dict[str, Any]:
        answer = await self.manager.client.post_json(child.base_url, f"/slots/{slot}?action={action}",
                                                     {"filename": filename}, timeout=timeout)
        data = answer.json()
        if answer.status != 200 or not isinstance(data, dict):
            err = data.get("error") if isinstance(data, dict) else None
            message = err.get("message") if isinstance(err, dict) else None
            raise SlotError(str(message or f"HTTP {answer.status}"), answer.status)
        return data

    def _fail(self, model: str, what: str, error: BaseException | str) -> None:
        text = str(error) or type(error).__name__
        self._status(model).last_error = f"{what}: {text}"
        log.warning("[%s] KV cache %s failed: %s", model, what, text)

    # ----- before a stop ---------------------------------------------------
    async def save(self, model: str, child: ChildProcess) -> None:
        directory = self._directory(child)
        if directory is None or child.returncode is not None or not child.ready.is_set():
            return
        limit = self.manager.config.router.slot_save_timeout
        t0 = time.monotonic()
        deadline = t0 + limit
        saved = tokens = size = 0
        try:
            async with asyncio.timeout(limit):
                fp = await self._fingerprint(child)
                for slot in await self._slot_ids(child, limit):
                    try:
                        n, b = await self._save_slot(model, child, directory, fp, slot,
                                                     max(0.1, deadline - time.monotonic()))
                    except SlotError as e:
                        self._fail(model, "save", f"slot {slot}: {e}")
                        continue
                    if n:
                        saved, tokens, size = saved + 1, tokens + n, size + b
        except TimeoutError:
            self._fail(model, "save", f"gave up after {limit:g} s (router.slot_save_timeout)")
        except Exception as e:  # a failed save loses a cache, never blocks the stop
            self._fail(model, "save", e)
        if saved:
            self._record(model, "save", t0, saved, tokens, size)
        removed = await asyncio.to_thread(enforce_budget, directory, self.manager.config.router.slot_save_max_bytes)
        if removed:
            log.info("disk budget: removed %d old slot file(s) from %s", len(removed), directory)

    async def _save_slot(self, model: str, child: ChildProcess, directory: Path, fp: str, slot: int,
                         timeout: float) -> tuple[int, int]:
        """Save through a `.partial` file, so a cut-short save never replaces a good file
        and an empty slot never overwrites what an earlier run saved."""
        final = slot_file_name(model, fp, slot)
        partial = directory / (final + PARTIAL_SUFFIX)
        try:
            data = await self._action(child, slot, "save", partial.name, timeout)
            n = int(data.get("n_saved") or 0)
            if n > 0:
                os.replace(partial, directory / final)
                return n, int(data.get("n_written") or 0)
            return 0, 0
        finally:
            partial.unlink(missing_ok=True)

    # ----- after a start ---------------------------------------------------
    async def restore(self, model: str, child: ChildProcess) -> None:
        directory = self._directory(child)
        if directory is None:
            return
        status = self._status(model)
        status.enabled = True
        limit = self.manager.config.router.slot_save_timeout
        t0 = time.monotonic()
        deadline = t0 + limit
        restored = tokens = size = 0
        try:
            async with asyncio.timeout(limit):
                fp = await self._fingerprint(child)
                status.fingerprint = fp
                files = await asyncio.to_thread(model_files, directory, model)
                others = [f for f in files if f.fingerprint != fp]
                status.not_restored = len(others)
                if others:
                    log.info("[%s] %d saved slot file(s) were made with other settings (model file, context "
                             "arguments or llama-server build changed): not restored", model, len(others))
                for f in sorted((f for f in files if f.fingerprint == fp), key=lambda f: f.slot):
                    try:
                        data = await self._action(child, f.slot, "restore", f.path.name,
                                                  max(0.1, deadline - time.monotonic()))
                    except SlotError as e:
                        # Kept: llama-server says "no space or invalid file" alike, and the
                        # next save of this slot replaces a damaged file anyway.
                        self._fail(model, "restore", f"{f.path.name}: {e}")
                        continue
                    except Exception:
                        if await _died(child):  # the file killed it (llama-server asserts on some
                            await asyncio.to_thread(_set_aside, model, f.path)  # torn files): never again
                        raise
                    restored += 1
                    tokens += int(data.get("n_restored") or 0)
                    size += int(data.get("n_read") or 0)
                    os.utime(f.path)  # just used: the last to go under the disk budget
        except TimeoutError:
            self._fail(model, "restore", f"gave up after {limit:g} s (router.slot_save_timeout)")
        except Exception as e:  # a failed restore is an empty cache, never a failed load
            self._fail(model, "restore", e)
        if restored:
            self._record(model, "restore", t0, restored, tokens, size)

    def _record(self, model: str, what: str, t0: float, slots: int, tokens: int, size: int) -> None:
        ms = (time.monotonic() - t0) * 1000
        transfer = KVTransfer(at=time.time(), ms=round(ms, 1), slots=slots, tokens=tokens, bytes=size)
        status = self._status(model)
        if what == "save":
            status.saves += 1
            status.last_save = transfer
            verb, event = "saved", "kv_saved"
        else:
            status.restores += 1
            status.last_restore = transfer
            verb, event = "restored", "kv_restored"
        log.info("[%s] KV cache %s: %d slot(s), %d tokens, %.1f MB in %.0f ms",
                 model, verb, slots, tokens, size / 1e6, ms)
        self.manager.events.emit(model, event, asdict(transfer))


DIED_WAIT_S = 1.0  # how long a child that stopped answering mid-restore may take to show its exit


async def _died(child: ChildProcess) -> bool:
    """Whether the child exited (waiting up to DIED_WAIT_S for its exit to show)."""
    try:
        await asyncio.wait_for(child.exited.wait(), DIED_WAIT_S)
    except TimeoutError:
        return False
    return True


def _set_aside(model: str, path: Path) -> None:
    """Rename a slot file whose restore killed the child: the restarted child starts cold
    instead of dying on it again; the file stays for a look (`*.damaged`, never restored,
    outside the disk budget's files)."""
    target = path.with_name(f"{path.name}.damaged")
    try:
        os.replace(path, target)
    except OSError as e:
        log.error("[%s] the child died restoring %s and it cannot be set aside (%s): deleting it", model,
                  path.name, e.strerror or e)
        path.unlink(missing_ok=True)
        return
    log.error("[%s] the child died restoring %s: the file is set aside as %s and the model starts cold",
              model, path.name, target.name)
