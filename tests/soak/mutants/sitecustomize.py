"""Deliberately broken routers, to prove that the soak's invariants can fail.

The soak harness puts this folder first on the router process's PYTHONPATH
when `SOAK_BREAK` names a router-side break, so Python imports this file
before `python -m router` starts, and it monkeypatches the router in that
process only. Nothing in `router/` knows about it; the harness alone reads
SOAK_BREAK. Each break violates one invariant on purpose:

- `hang`: one inference request in 60 never answers (no request hung);
- `leak-fd`: every other inference request opens /dev/null and keeps it (file descriptors flat);
- `leak-mem`: every inference request keeps 16 KiB for ever (RSS flat);
- `evict-busy`: a swap stops its victims even while they serve requests (never a busy model stopped);
- `two-models`: a swap starts its target without waiting for the victims to exit
  (one model at a time, never two loads at once);
- `kv-partial`: every save leaves a copy of its `.partial` file and restores offer them (no .partial restored);
- `kv-stale`: every other save is reported but not committed to its file (restored KV = last save).

(`leak-child`, the sixth, lives in the harness: it leaves a llama-server orphan.)
"""

from __future__ import annotations

import importlib.util
import os

# The router's children inherit its environment, and a crashing llama-server runs gdb, whose
# embedded Python would read this file too: only a Python that can import the router breaks it.
_BREAKS = ({b.strip() for b in os.environ.get("SOAK_BREAK", "").split(",") if b.strip()}
           if importlib.util.find_spec("router") is not None else set())


def _break_inference() -> None:
    import asyncio
    import itertools

    import router.api.inference as inference

    original = inference.handle_inference
    counter = itertools.count(1)
    leaked: list[int] = []
    kept: list[bytearray] = []

    async def handle_inference(request):
        n = next(counter)
        if "leak-fd" in _BREAKS and n % 2 == 0:
            leaked.append(os.open(os.devnull, os.O_RDONLY))
        if "leak-mem" in _BREAKS:
            kept.append(bytearray(os.urandom(16384)))  # random: pages that are really touched
        if "hang" in _BREAKS and n % 60 == 0:
            await asyncio.Event().wait()  # never set: the client waits until it gives up
        return await original(request)

    inference.handle_inference = handle_inference


def _break_scheduler() -> None:
    from router.core import scheduler as s

    original = s.Scheduler._pump

    def _pump(self):
        effects = original(self)
        swap = self._swap
        if swap is None or swap.started:
            return effects
        if "evict-busy" in _BREAKS:
            for name in swap.victims:
                v = self._models.get(name)
                if v is not None and v.state is s.State.READY and v.inflight:
                    v.state = s.State.STOPPING
                    effects.append(s.Stop(name, "swap"))
        if "two-models" in _BREAKS:
            target = self._models[swap.target]
            if target.state is s.State.STOPPED:
                target.state = s.State.STARTING
                target.unload_reason = None
                swap.started = True
                effects.append(s.Start(swap.target))
        return effects

    s.Scheduler._pump = _pump  # type: ignore[method-assign]


def _break_kv() -> None:
    import shutil
    from dataclasses import replace

    import router.core.kv_persistence as kvp
    from router.backend.slotfiles import PARTIAL_SUFFIX, model_files

    if "kv-partial" in _BREAKS:
        original_save = kvp.KVPersistence._save_slot

        async def _save_slot(self, model, child, directory, fp, slot, timeout):
            n, size = await original_save(self, model, child, directory, fp, slot, timeout)
            final = directory / kvp.slot_file_name(model, fp, slot)
            if n and final.exists():
                shutil.copyfile(final, str(final) + PARTIAL_SUFFIX)
            return n, size

        def with_partials(directory, model):
            files = model_files(directory, model)
            partials = [replace(f, path=f.path.with_name(f.path.name + PARTIAL_SUFFIX)) for f in files]
            return [p for p in partials if p.path.exists()] + files

        kvp.KVPersistence._save_slot = _save_slot  # type: ignore[method-assign]
        kvp.model_files = with_partials

    if "kv-stale" in _BREAKS:
        class _StaleOs:
            """os, except that every other replace() is dropped: a save reported, never committed."""

            calls = 0

            def __getattr__(self, name: str) -> object:
                return getattr(os, name)

            def replace(self, src: object, dst: object) -> None:
                _StaleOs.calls += 1
                if _StaleOs.calls % 2:
                    os.replace(src, dst)  # type: ignore[arg-type]

        kvp.os = _StaleOs()  # type: ignore[assignment]


if _BREAKS & {"hang", "leak-fd", "leak-mem"}:
    _break_inference()
if _BREAKS & {"evict-busy", "two-models"}:
    _break_scheduler()
if _BREAKS & {"kv-partial", "kv-stale"}:
    _break_kv()
