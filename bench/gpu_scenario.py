"""The memory-placement scenario that `make gpu-check` runs (bench/gpu_check.py):
tests/e2e/test_memory_placement.py's course on one device's memory, GPU
(NVML) or, in the dry run, RAM (NVML simulated from resident memory), each
step a check, with the estimate and the measured figure of each model."""

from __future__ import annotations

import json
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MiB = 1024 * 1024
GiB = 1024 * MiB
ADMIN = "gpu-check-admin-token"
MARGIN = 0.08  # the budget is this far from each figure that decides a step, so measured figures may differ
TOLERANCE = 0.15  # estimate vs measured, per model
REQUEST_S = 60


@dataclass(frozen=True)
class Shape:
    """The generated model (tests/support/tinygguf.py write_sized_model)."""

    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int
    n_ff: int


# On the GPU: 1.3 GiB of weights, 32 KiB of KV per cell. Dry run: a few MiB for 2 CPU cores.
SHAPES = {"gpu": Shape(16, 2048, 16, 4, 5632), "dry": Shape(4, 256, 4, 2, 768)}
CONTEXTS = {"gpu": {"small": 4096, "mid": 16384, "big": 65536, "huge": 131072},
            "dry": {"small": 8192, "mid": 16384, "big": 65536, "huge": 131072}}
ORDER = ("small", "mid", "big", "huge")


def model_args(name: str, ctx: int) -> list[str]:
    """Each model's arguments: its context, one slot, every layer on the GPU; `huge` keeps
    its KV cache in f32, so that it can never fit the budget."""
    return ["-c", str(ctx), "-np", "1", "-ngl", "99", *(["-ctk", "f32", "-ctv", "f32"] if name == "huge" else [])]


def plan_budget(figures: dict[str, int]) -> int:
    """A budget where small and mid fit together, small and big fit together, the
    three do not, and huge never fits; each at least MARGIN away from it."""
    s, m, b, h = (figures[n] for n in ORDER)
    fits, over = max(s + m, s + b), s + m + b
    budget = (fits + over) // 2
    if fits > budget * (1 - MARGIN) or over < budget * (1 + MARGIN) or h <= budget * (1 + MARGIN):
        raise ValueError(f"these sizes make no scenario: {figures} (budget {budget})")
    return budget


# ----- where it runs ---------------------------------------------------------
@dataclass
class Device:
    """The memory the scenario fills: a GPU through NVML, or (dry run) the RAM
    through a simulated NVML whose figures are the children's resident memory."""

    kind: str  # "gpu" or "dry"
    name: str
    key: str  # the budget's device: "gpu0" or "ram"
    total: int
    nvml: Any
    arch: str | None = None  # CUDA architecture, "90"
    driver: str = ""


class SimulatedNvml:
    """The slice of pynvml the check uses, answered from a process tree's resident
    memory: a device of `total` bytes whose processes are the router's children."""

    class _Info:
        def __init__(self, total: int, used: int):
            self.total, self.used, self.free = total, used, total - used

    class _Proc:
        def __init__(self, pid: int, used: int):
            self.pid, self.usedGpuMemory = pid, used

    def __init__(self, total: int):
        self.total = total
        self.root: int | None = None  # the router's pid, once it runs

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        return i

    def nvmlDeviceGetComputeRunningProcesses(self, handle: int) -> list[Any]:
        import psutil

        out = []
        try:
            kids = psutil.Process(self.root).children(recursive=True) if self.root else []
        except psutil.Error:
            kids = []
        for p in kids:
            try:
                out.append(self._Proc(p.pid, p.memory_info().rss))
            except psutil.Error:
                pass
        return out

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> Any:
        used = sum(p.usedGpuMemory for p in self.nvmlDeviceGetComputeRunningProcesses(handle))
        return self._Info(self.total, used)


# ----- the scenario ----------------------------------------------------------
@dataclass
class Row:
    model: str
    args: list[str]
    estimate: dict[str, int]  # the parts
    estimated: int  # on the budget's device
    recorded: int | None  # the router's measured figure on that device
    nvml_peak: int | None  # NVML's (or the simulated) per-process figure, the peak while it ran


@dataclass
class Check:
    what: str
    ok: bool
    detail: str = ""


@dataclass
class Scenario:
    device: str
    backend: str
    key: str
    budget: int
    reserve: int
    total: int
    rows: list[Row] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    min_free: int | None = None
    idle_free: int | None = None  # before the router started
    samples: int = 0
    seconds: float = 0.0
    asserts_estimate: bool = True  # the stand-in's memory is the estimate by construction
    settings: str = ""  # router.memory as the scenario set it, for the table
    measured_by: str = "NVML, peak"

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)


class Sampler:
    """NVML every 0.1 s while the scenario runs: the device's free memory (its
    minimum) and each model's per-process figure (its peak), the child found by
    the `--alias NAME` on its command line."""

    def __init__(self, device: Device, router_pid: int):
        import psutil

        self.device, self.router = device, psutil.Process(router_pid)
        self.min_free: int | None = None
        self.peaks: dict[str, int] = {}
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _names(self) -> dict[int, str]:
        import psutil

        names = {}
        for p in self.router.children(recursive=True):
            try:
                cmd = p.cmdline()
            except psutil.Error:
                continue
            if "--alias" in cmd and cmd.index("--alias") + 1 < len(cmd):
                names[p.pid] = cmd[cmd.index("--alias") + 1]
        return names

    def sample(self) -> None:
        nv = self.device.nvml
        handle = nv.nvmlDeviceGetHandleByIndex(0)
        free = int(nv.nvmlDeviceGetMemoryInfo(handle).free)
        self.min_free = free if self.min_free is None else min(self.min_free, free)
        names = self._names()
        for proc in nv.nvmlDeviceGetComputeRunningProcesses(handle):
            name = names.get(proc.pid)
            if name and proc.usedGpuMemory:
                self.peaks[name] = max(self.peaks.get(name, 0), int(proc.usedGpuMemory))
        self.samples += 1

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sample()
            except Exception as e:  # a child gone between the listing and the reading: next sample
                print(f"sampler: {e}", file=sys.stderr)
            self._stop.wait(0.02)  # dense enough for a scenario of a second (a CPU dry run)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def write_models(directory: Path, kind: str) -> Path:
    from tests.support.tinygguf import write_sized_model

    path = directory / f"gpu-check-{kind}.gguf"
    if not path.is_file():
        shape = SHAPES[kind]
        write_sized_model(path, n_layer=shape.n_layer, n_embd=shape.n_embd, n_head=shape.n_head,
                          n_head_kv=shape.n_head_kv, n_ff=shape.n_ff)
    return path


def estimates(model: Path, kind: str) -> dict[str, Any]:
    """The router's estimate of each model (what its placement starts from)."""
    from router.backend.memory_estimate import estimate
    from router.discovery.gguf_meta import read_gguf_meta

    meta = read_gguf_meta(model)
    gpus = 1 if kind == "gpu" else 0
    return {n: estimate(meta, model_args(n, CONTEXTS[kind][n]), gpus=gpus) for n in ORDER}


def memory_settings(device: Device, budget: int) -> tuple[dict[str, Any], int]:
    """The catalogue's router.memory for the scenario and the reserve it implies: on a GPU
    `gpu: auto` less a reserve of the rest of the card (so the check of free memory is
    the reserve's own); in the dry run the RAM budget itself."""
    reserve = device.total - budget
    if device.kind == "gpu":
        return {"ram": "off", "gpu": "auto", "reserve": reserve, "probe": True, "unified": False}, reserve
    return {"ram": budget, "gpu": "off", "probe": True, "unified": False}, reserve


def run_scenario(device: Device, server: list[str], backend: str, model: Path, workdir: Path,
                 *, asserts_estimate: bool = True) -> Scenario:
    from tests.support.routerproc import RouterProcess, free_port, write_config

    t0 = time.monotonic()
    est = estimates(model, device.kind)
    figures = {n: e.devices.get(device.key, 0) for n, e in est.items()}
    budget = plan_budget(figures)
    memory, reserve = memory_settings(device, budget)
    args = {n: model_args(n, CONTEXTS[device.kind][n]) for n in ORDER}
    models: dict[str, Any] = {n: {"path": str(model), "args": args[n]} for n in ORDER}
    models["small"]["pinned"] = True
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = write_config(workdir / "config.yaml", models, router={
        "port": free_port(), "models_max": 0, "kv_persistence": False, "watch_config": False,
        "admin_token": ADMIN, "memory": memory},
        spawn={"command": [*server, "--model", "$path", "--alias", "$name", "--host", "$host", "--port", "$port"]})
    result = Scenario(device.name, backend, device.key, budget, reserve, device.total,
                      asserts_estimate=asserts_estimate, settings=_settings_text(memory, device),
                      measured_by="NVML, peak" if device.kind == "gpu" else "resident, peak")
    nv = device.nvml
    result.idle_free = int(nv.nvmlDeviceGetMemoryInfo(nv.nvmlDeviceGetHandleByIndex(0)).free)
    with RouterProcess(cfg, workdir / "router.log") as router:
        if isinstance(device.nvml, SimulatedNvml):
            device.nvml.root = router.proc.pid
        with Sampler(device, router.proc.pid) as sampler:
            _steps(router.url, result, budget, device.key)
            sampler.sample()
        status = _get(router.url + "/admin/status", admin=True)
    result.min_free, result.samples = sampler.min_free, sampler.samples
    _figures(result, status, args, est, sampler.peaks)
    _final_checks(result, status)
    result.seconds = round(time.monotonic() - t0, 1)
    return result


def _settings_text(memory: dict[str, Any], device: Device) -> str:
    if device.kind == "gpu":
        return f"`gpu: auto` with `reserve: {_size(memory['reserve'])}` of {_size(device.total)}"
    return f"`ram: {_size(memory['ram'])}` on a simulated device of {_size(device.total)}"


def _steps(url: str, r: Scenario, budget: int, key: str) -> None:
    """The e2e test's course, each step a check."""
    def step(what: str, models: tuple[str, ...], expected: set[str]) -> None:
        errors = []
        for m in models:
            status, body = _chat(url, m)
            if status != 200:
                errors.append(f"{m}: {status} {_message(body)[:300]}")
        loaded = _loaded(url)
        r.checks.append(Check(what, not errors and loaded == expected,
                              "; ".join([f"loaded: {sorted(loaded)}", *errors])))

    step("two models that fit run together", ("mid", "small"), {"mid", "small"})
    step("a third stops the least recently used (mid), not the pinned one", ("big",), {"small", "big"})
    step("mid again: the pinned small stays, big goes", ("mid",), {"small", "mid"})
    started = time.monotonic()
    status, body = _chat(url, "huge")
    seconds = time.monotonic() - started
    message = _message(body)
    wanted = f"the {key} budget is {_size(budget)}"
    r.checks.append(Check("a model bigger than the budget gets 503 at once, with the figures",
                          status == 503 and seconds < 2 and "needs" in message and wanted in message
                          and _loaded(url) == {"small", "mid"},
                          f"{status} in {seconds:.2f} s: {message}"))


def _message(body: Any) -> str:
    error = body.get("error") if isinstance(body, dict) else None
    return str(error.get("message", "")) if isinstance(error, dict) else str(error or "")


def _figures(r: Scenario, status: dict[str, Any], args: dict[str, list[str]], est: dict[str, Any],
             peaks: dict[str, int]) -> None:
    by_name = {m["model"]: m for m in status.get("models", [])}
    for n in ORDER:
        mem = (by_name.get(n) or {}).get("memory") or {}
        recorded = ((mem.get("measured") or {}).get("devices") or {}).get(r.key)
        r.rows.append(Row(n, args[n], est[n].parts(), est[n].devices.get(r.key, 0), recorded, peaks.get(n)))
    if not r.asserts_estimate:
        return
    for row in r.rows[:3]:  # huge never ran
        measured = row.nvml_peak if r.key != "ram" else row.recorded
        ok = bool(measured) and abs(row.estimated - measured) / measured <= TOLERANCE  # type: ignore[operator]
        r.checks.append(Check(f"{row.model}: estimate within {TOLERANCE:.0%} of the measured figure", ok,
                              f"estimate {mib(row.estimated)}, measured {mib(measured)}"))


def _final_checks(r: Scenario, status: dict[str, Any]) -> None:
    budget = (status.get("memory") or {}).get("budget")
    r.checks.append(Check("the router's budget is the one asked for", budget == {r.key: r.budget}, str(budget)))
    r.checks.append(Check("free memory never below the reserve while models swapped",
                          r.samples > 10 and r.min_free is not None and r.min_free >= r.reserve,
                          f"lowest free {mib(r.min_free)} over {r.samples} samples, reserve {mib(r.reserve)}"))


def _chat(url: str, model: str) -> tuple[int, Any]:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    return _request(url + "/v1/chat/completions", body)


def _loaded(url: str) -> set[str]:
    data = _get(url + "/v1/models").get("data", [])
    return {m["id"] for m in data if m["id"] in ORDER and m["status"]["value"] == "loaded"}


def _get(url: str, admin: bool = False) -> Any:
    return _request(url, None, admin)[1]


def _request(url: str, body: Any, admin: bool = False) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if admin:
        headers["Authorization"] = f"Bearer {ADMIN}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=REQUEST_S) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as e:
        try:
            return e.code, json.loads(e.read() or b"null")
        except ValueError:
            return e.code, None


def _size(n: int) -> str:
    """A size as the router's messages write it."""
    return f"{n / GiB:.2f} GiB" if n >= GiB else f"{n / MiB:.0f} MiB"


def mib(n: int | None) -> str:
    return "-" if n is None else f"{n / MiB:,.0f} MiB"
