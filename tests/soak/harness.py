"""One soak run, from an empty folder to the invariant table.

1. Set up: three tiny GGUF models, the slot folder (a small tmpfs when it can
   be mounted), the catalogue, a real router process (RouterProcess, JSON log).
2. Record: /models/sse and /api/activity/stream (threads), inotify on the slot
   folder, the router's /proc figures and children.
3. Warm-up: the clients alone; then a rest, where the router's fds are counted.
4. Chaos phase: the clients and the chaos together for `duration_s`; the
   catalogue is put back at its end; a rest again, and the slot files are read.
5. Stop the router (SIGTERM), look for any llama-server of this run still
   alive anywhere, and evaluate every invariant.

`SOAK_BREAK` (comma-separated) breaks the run on purpose, to prove that the
checks fail: `leak-child` is done here (an orphaned llama-server), the others
in the router process by tests/soak/mutants/sitecustomize.py.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from router.backend.slotfiles import PARTIAL_SUFFIX
from tests.soak import invariants as inv
from tests.soak.catalogue import ALIAS, MODELS, Catalogue, soak_catalogue
from tests.soak.chaos import Action, Chaos
from tests.soak.clients import Outcome, run_clients
from tests.soak.inotify import FolderWatch
from tests.soak.monitor import EventRecorder, ProcessWatch, Sample, run_processes
from tests.soak.report import Report, read_log, save, summarize
from tests.soak.slotdir import SlotFileState, SlotFolder, read_slot_file
from tests.support.routerproc import RouterProcess, free_port
from tests.support.tinygguf import write_tiny_model

MUTANTS = Path(__file__).resolve().parent / "mutants"
ROUTER_BREAKS = {"hang", "leak-fd", "leak-mem", "evict-busy", "two-models", "kv-partial", "kv-stale"}
HARNESS_BREAKS = {"leak-child"}


@dataclass
class SoakSettings:
    run_dir: Path
    llama_server: Path
    duration_s: float = 600.0  # the chaos phase
    warmup_s: float = 20.0
    clients: int = 300
    # Each request's own timeout, drawn from this range: well above the worst wait a correct router
    # gives 300 clients on a loaded 2-core machine (a 10-minute run saw p99 38 s, max 56 s).
    timeouts: tuple[float, float] = (120.0, 180.0)
    think: tuple[float, float] = (0.0, 0.4)  # a client's pause between two requests
    chaos_every: tuple[float, float] = (3.0, 7.0)
    read_timeout: float = 3.0
    max_body_bytes: int = 256 * 1024
    tmpfs_bytes: int = 1024 * 1024
    slot_save_max_bytes: int = 120 * 1024  # a few tiny conversations: the disk budget is hit all the time
    ram: str = "40MiB"  # one tiny model fits (~23 MiB), two do not
    seed: int = 1
    breaks: frozenset[str] = frozenset()

    @staticmethod
    def breaks_from_env() -> frozenset[str]:
        wanted = frozenset(b.strip() for b in os.environ.get("SOAK_BREAK", "").split(",") if b.strip())
        unknown = wanted - ROUTER_BREAKS - HARNESS_BREAKS
        if unknown:
            raise ValueError(f"SOAK_BREAK: unknown {sorted(unknown)}; known: "
                             f"{sorted(ROUTER_BREAKS | HARNESS_BREAKS)}")
        return wanted


@dataclass
class Recording:
    outcomes: list[Outcome] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)
    model_events: list[dict] = field(default_factory=list)
    activity: list[dict] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    main: tuple[float, float] = (0.0, 0.0)
    rest_before: Sample | None = None
    rest_after: Sample | None = None
    files_at_end: list[SlotFileState] = field(default_factory=list)
    file_events: list = field(default_factory=list)
    inotify_overflow: bool = False
    proc: ProcessWatch | None = None
    leftovers: list[str] = field(default_factory=list)
    exit_code: int | None = None
    disk_fill: bool = False


def run_soak(s: SoakSettings) -> Report:
    s.run_dir.mkdir(parents=True, exist_ok=True)
    models_dir = s.run_dir / "models"
    models_dir.mkdir(exist_ok=True)
    for i, name in enumerate(MODELS):
        write_tiny_model(models_dir / f"{name}.gguf", name=name, seed=i)
    rec = Recording()
    with SlotFolder(s.run_dir / "slots", s.tmpfs_bytes) as slots:
        rec.disk_fill = slots.mounted
        catalogue = Catalogue(s.run_dir / "config.yaml", soak_catalogue(
            models_dir, slots.path, s.llama_server, read_timeout=s.read_timeout, max_body_bytes=s.max_body_bytes,
            slot_save_max_bytes=s.slot_save_max_bytes, ram=s.ram))
        catalogue.write(catalogue.original())
        router = RouterProcess(catalogue.path, s.run_dir / "router.log", "--log-format", "json",
                               env=_router_env(s.breaks))
        try:
            router.wait_ready()
            _record_run(s, router, catalogue, slots, rec)
        finally:
            rec.exit_code, rec.leftovers = _stop_router(router, s.run_dir)
    log, raw_tracebacks = read_log(s.run_dir / "router.log")
    checks = evaluate(s, rec, log, raw_tracebacks)
    report = Report(checks, inv.render(checks), summarize(s, rec, slots), s.run_dir)
    save(report, rec)
    return report


def _router_env(breaks: frozenset[str]) -> dict[str, str]:
    mine = breaks & ROUTER_BREAKS
    if not mine:
        return {}
    path = os.pathsep.join(p for p in (str(MUTANTS), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path, "SOAK_BREAK": ",".join(sorted(mine))}


def _record_run(s: SoakSettings, router: RouterProcess, catalogue: Catalogue, slots: SlotFolder,
                rec: Recording) -> None:
    models = EventRecorder(router.url, "/models/sse")
    activity = EventRecorder(router.url, "/api/activity/stream")
    files = FolderWatch(slots.path)
    rec.proc = ProcessWatch(router.proc.pid, s.run_dir).start()
    try:
        asyncio.run(_drive(s, router, catalogue, slots, rec))
        _wait_quiet(models)
        rec.rest_after = rec.proc.sample()
        rec.files_at_end = [read_slot_file(p) for p in sorted(slots.path.iterdir())
                            if p.is_file() and not p.name.endswith(PARTIAL_SUFFIX)]
    finally:
        rec.proc.stop()
        for r in (models, activity):
            r.close()
            if r.ended_early:
                rec.dropped.append(f"{r.path} ended early ({r.error or 'the router closed it'})")
        files.close()
    rec.model_events = [e.data for e in models.events]
    rec.activity = [e.data for e in activity.events]
    rec.file_events, rec.inotify_overflow = files.events, files.overflowed


async def _drive(s: SoakSettings, router: RouterProcess, catalogue: Catalogue, slots: SlotFolder,
                 rec: Recording) -> None:
    def names() -> list[str]:
        return [*MODELS, *MODELS, *MODELS, ALIAS]  # the alias is 404 unless a reload gave it

    await run_clients(router.url, names, s.clients, s.warmup_s, rec.outcomes, seed=s.seed, timeouts=s.timeouts,
                      think=s.think, max_body=s.max_body_bytes, phase="w")
    await asyncio.sleep(3.0)
    assert rec.proc is not None
    rec.rest_before = rec.proc.sample()
    chaos = Chaos(router.proc.pid, router.children, slots, catalogue, s.read_timeout, s.seed, s.chaos_every)
    t0 = time.time()
    if "leak-child" in s.breaks:
        _leak_child(s)
    await asyncio.gather(run_clients(router.url, names, s.clients, s.duration_s, rec.outcomes, seed=s.seed + 1,
                                     timeouts=s.timeouts, think=s.think, max_body=s.max_body_bytes, phase="c"),
                         chaos.run(until=t0 + s.duration_s))
    rec.main = (t0, t0 + s.duration_s)
    rec.actions = chaos.actions


def _leak_child(s: SoakSettings) -> None:
    """SOAK_BREAK=leak-child: the harness itself leaves a llama-server of this run
    orphaned (its parent, a shell, exits at once) and never stops it."""
    cmd = (f"'{s.llama_server}' --model '{s.run_dir / 'models' / 'tiny-a.gguf'}' --host 127.0.0.1 "
           f"--port {free_port()} -c 512 >/dev/null 2>&1 & echo $!")
    subprocess.run(["sh", "-c", cmd], capture_output=True, text=True, timeout=10, start_new_session=True)


def _wait_quiet(models: EventRecorder, quiet_s: float = 2.0, limit_s: float = 30.0) -> None:
    """Until the router's state has not changed for `quiet_s` (the last swap, reload or TTL done)."""
    deadline = time.time() + limit_s
    seen = -1
    while time.time() < deadline:
        n = len(models.events)
        if n == seen:
            return
        seen = n
        time.sleep(quiet_s)


def _stop_router(router: RouterProcess, run_dir: Path) -> tuple[int | None, list[str]]:
    """SIGTERM, RouterProcess's own check that no child outlived it, then a scan of every
    process on the machine for a llama-server of this run; any found is killed by pid."""
    leftovers = []
    try:
        code: int | None = router.stop(signal.SIGTERM)
    except AssertionError as e:  # RouterProcess kills the survivors it names
        code = router.proc.returncode
        leftovers.append(f"RouterProcess.stop: {e}")
    time.sleep(0.5)
    for p in run_processes(run_dir):
        try:
            if p.status() == psutil.STATUS_ZOMBIE:
                continue
            leftovers.append(f"pid {p.pid} (parent {p.ppid()}): {' '.join(p.cmdline())[:160]}")
            p.kill()
        except psutil.Error:
            continue
    return code, leftovers


def evaluate(s: SoakSettings, rec: Recording, log: list[inv.LogLine], raw_tracebacks: int) -> list[inv.Check]:
    aliases = {ALIAS: "tiny-a"}
    shutdown = next((ln.at for ln in log if ln.logger == "router" and ln.message.startswith("shutting down")),
                    float("inf"))
    live = [ln for ln in log if ln.at < shutdown]
    replays = [ln for ln in live if "child lost before replying" in ln.message]
    proc = rec.proc or ProcessWatch(0, s.run_dir)
    return [
        *inv.check_replies(rec.outcomes),
        inv.check_upstream_failures(rec.outcomes, replays, rec.actions, s.read_timeout, aliases),
        *inv.check_processes(proc.strays, rec.leftovers, proc.max_live_children, 1, rec.exit_code,
                             proc.live_children_over),
        *inv.check_flat(proc.samples, rec.main, rec.rest_before, rec.rest_after),
        *inv.check_scheduler_events(rec.model_events, 1),
        inv.check_busy_stops(rec.activity, live, MODELS),
        *inv.check_kv(rec.model_events, live, rec.file_events, rec.inotify_overflow, rec.files_at_end, MODELS),
        inv.check_reloads(rec.actions, live),
        inv.check_streams(rec.dropped),
        inv.check_log(log, raw_tracebacks),
        inv.check_coverage(rec.outcomes, rec.actions, rec.model_events, s.clients, rec.disk_fill),
    ]
