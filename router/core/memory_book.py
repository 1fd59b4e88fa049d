"""What placement knows about memory: the budget of each device, and each
model's figure - the estimate for its launch plan until a load has measured
it, then what that load really used (kept across restarts in memory.json next
to the KV cache folder, keyed by model and launch fingerprint).

A measured figure is the larger of what the child reported allocating (its
buffers, when it logs them: -lv 4, which `router.memory.probe` asks for on
the first load of a launch plan, plus the process's own overhead) and the
resident memory of its process tree; without a report the estimate is its
floor (resident memory under-counts pages not touched yet). GPU figures
come from the reported buffers or NVML.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from router.backend.argv import arg_value
from router.backend.launch import LaunchPlan
from router.backend.memory_estimate import GPU_RUNTIME, Estimate, estimate
from router.backend.memory_measure import Platform, read_platform, reported_buffers
from router.backend.slotfiles import fingerprint
from router.catalogue.config import MemorySettings, ModelSpec
from router.catalogue.sources import gguf_meta
from router.discovery.naming import split_parts

log = logging.getLogger("router.placement")

STORE_NAME = "memory.json"
Memory = dict[str, int]


def resolve_budget(settings: MemorySettings, platform: Platform | None = None) -> Memory | None:
    """Bytes per device from the settings; "auto" reads the device's total minus
    the reserve; a device that cannot be read is left out. None: no budget.
    On unified memory (`unified_memory`) there is one device, "ram"."""
    needs_nvml = settings.gpu == "auto" or (isinstance(settings.gpu, tuple) and "auto" in settings.gpu)
    if platform is None and _reads_platform(settings):
        platform = read_platform()
    if unified_memory(settings, platform):
        return _unified_budget(settings, platform)
    budget: Memory = {}
    if settings.ram == "auto" and platform is not None:
        budget["ram"] = max(platform.ram - settings.reserve, 0)
    elif isinstance(settings.ram, int):
        budget["ram"] = settings.ram
    gpu = settings.gpu
    if gpu is not None:
        totals = platform.gpus if needs_nvml and platform is not None else None
        if isinstance(gpu, tuple):
            values: tuple[int | str, ...] = gpu
        else:  # one value for every GPU (one GPU when none can be counted)
            values = (gpu,) * (len(totals) if totals else 1)
        for i, v in enumerate(values):
            if v == "auto":
                if totals and i < len(totals):
                    budget[f"gpu{i}"] = max(totals[i] - settings.reserve, 0)
            elif isinstance(v, int):
                budget[f"gpu{i}"] = v
    return budget or None


def _reads_platform(settings: MemorySettings) -> bool:
    """Whether the settings ask anything of the machine (an auto budget, or detection)."""
    gpu = settings.gpu
    return "auto" in (settings.ram, settings.unified, gpu) or (isinstance(gpu, tuple) and "auto" in gpu)


def unified_memory(settings: MemorySettings, platform: Platform | None) -> bool:
    """Whether the GPU computes in the RAM: `router.memory.unified`, or when "auto",
    what the platform says (Apple silicon; an NVIDIA GPU without memory of its own)."""
    if isinstance(settings.unified, bool):
        return settings.unified
    return platform is not None and platform.unified


def _unified_budget(settings: MemorySettings, platform: Platform | None) -> Memory | None:
    """One budget for everything a model takes: what llama-server offloads (-ngl)
    stays in the same RAM. "auto": the RAM less the reserve, capped by what the
    platform lets the GPU use (Metal's working-set limit), since past it Metal
    fails or pages. A size is taken as written; GPU budgets do not apply."""
    if settings.ram == "auto" and platform is not None:
        ram = max(platform.ram - settings.reserve, 0)
        if platform.working_set is not None and platform.working_set < ram:
            log.info("unified memory: the budget is the GPU's working-set limit, %.2f GiB (%s), "
                     "below the RAM less the reserve (%.2f GiB)", platform.working_set / 1024 ** 3,
                     platform.working_set_source, ram / 1024 ** 3)
            ram = platform.working_set
        return {"ram": ram}
    if isinstance(settings.ram, int):
        if platform is not None and platform.working_set is not None and settings.ram > platform.working_set:
            log.warning("unified memory: router.memory.ram (%.2f GiB) is above the GPU's working-set limit "
                        "(%.2f GiB, %s): offloaded models past it may fail to load", settings.ram / 1024 ** 3,
                        platform.working_set / 1024 ** 3, platform.working_set_source)
        return {"ram": settings.ram}
    return None


@dataclass(frozen=True)
class Measured:
    devices: Memory
    buffers: dict[str, dict[str, int]]  # what the child reported, per device and kind
    rss: int | None
    at: float


class MemoryBook:
    def __init__(self, settings: MemorySettings, store_dir: Path | None, platform: Platform | None = None):
        self.settings = settings
        self.platform = platform  # None: this machine's, read once when the settings ask
        self._resolve()
        self._path = store_dir / STORE_NAME if store_dir is not None else None
        self._store: dict[str, dict[str, Any]] = self._read()
        self.estimates: dict[str, Estimate] = {}
        self.keys: dict[str, str] = {}  # model -> the key of its current launch plan

    def _resolve(self) -> None:
        if self.platform is None and _reads_platform(self.settings):
            self.platform = read_platform()
        self.budget = resolve_budget(self.settings, self.platform)
        self.unified = unified_memory(self.settings, self.platform)

    @property
    def gpus(self) -> int:
        return sum(1 for d in self.budget or {} if d.startswith("gpu"))

    def set_settings(self, settings: MemorySettings) -> None:
        if settings != self.settings:
            self.settings = settings
            self._resolve()

    # ----- figures ---------------------------------------------------------
    def key(self, model: str, plan: LaunchPlan) -> str:
        return f"{model}:{fingerprint(plan.argv, plan.env, '')}"

    def figure(self, spec: ModelSpec, plan: LaunchPlan) -> Memory:
        """The memory `spec` takes with this launch plan: measured if a load with
        the same plan measured it, else the estimate."""
        key = self.key(spec.name, plan)
        self.keys[spec.name] = key
        est = self.estimate(spec, plan)
        measured = self._store.get(key)
        if measured and isinstance(measured.get("devices"), dict):
            return {d: int(n) for d, n in measured["devices"].items()}
        return est.devices

    def estimate(self, spec: ModelSpec, plan: LaunchPlan) -> Estimate:
        path = spec.path or arg_value(plan.argv, "-m", "--model")
        meta = gguf_meta(path)
        if meta is None:
            est = Estimate(0, 0, 0, 0, 0, {"ram": 0})
        else:
            projector = gguf_meta(spec.mmproj) if spec.mmproj else None
            est = estimate(meta, plan.argv, shard_bytes=_shard_bytes(path, meta), projector=projector,
                           gpus=self.gpus)
        self.estimates[spec.name] = est
        return est

    def measured(self, model: str) -> dict[str, Any] | None:
        key = self.keys.get(model)
        return self._store.get(key) if key else None

    def needs_report(self, spec: ModelSpec, plan: LaunchPlan) -> bool:
        """Whether this load should report its buffers (nothing measured for its plan yet)."""
        return self.budget is not None and self.settings.probe and self.key(spec.name, plan) not in self._store

    def record(self, model: str, plan: LaunchPlan, log_lines: list[str], rss: int | None,
               gpu_used: Memory | None = None) -> Memory:
        """What a load used, from the child's report and the OS; kept for the next load."""
        key = self.key(model, plan)
        buffers = reported_buffers(log_lines)
        est = self.estimates.get(model)
        overhead = est.overhead if est else 0
        devices: Memory = {}
        for device, kinds in buffers.items():
            # The process's own memory comes on top of its buffers: in RAM its overhead, on a
            # GPU the runtime's (CUDA context). Unified memory: a GPU's buffers are in the RAM.
            into = "ram" if self.unified else device
            own = overhead if device == "ram" else 0 if self.unified else GPU_RUNTIME
            devices[into] = devices.get(into, 0) + sum(kinds.values()) + own
        if rss is not None:
            devices["ram"] = max(devices.get("ram", 0), rss)
        if not buffers and est is not None:
            # Resident memory alone under-counts what is allocated but not touched yet
            # (a big context's KV cache): never go below the estimate without a report.
            for device, n in est.devices.items():
                devices[device] = max(devices.get(device, 0), n)
        for device, used in (gpu_used or {}).items():
            devices[device] = max(devices.get(device, 0), used)
        before = self._store.get(key, {})
        previous = before.get("devices", {})
        if not buffers and previous:  # a later load without a report: keep the report, and a larger figure
            devices = {d: max(n, int(previous.get(d, 0))) for d, n in devices.items()}
            buffers = before.get("buffers") or {}
        self._store[key] = asdict(Measured(devices, buffers, rss, time.time()))
        self.keys[model] = key
        self._write()
        return devices

    def raise_ram(self, model: str, rss: int) -> Memory | None:
        """A running child grew past its figure: the new peak is its figure from now on."""
        key = self.keys.get(model)
        entry = self._store.get(key) if key else None
        if entry is None or rss <= int(entry["devices"].get("ram", 0)):
            return None
        entry["devices"]["ram"] = rss
        entry["rss"] = rss
        self._write()
        return {d: int(n) for d, n in entry["devices"].items()}

    # ----- the file --------------------------------------------------------
    def _read(self) -> dict[str, dict[str, Any]]:
        if self._path is None:
            return {}
        try:
            data = json.loads(self._path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _write(self) -> None:
        if self._path is None:
            return
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".memory.", dir=self._path.parent)
            with os.fdopen(fd, "w") as f:
                json.dump(self._store, f, indent=1, sort_keys=True)
            os.replace(tmp, self._path)
        except OSError as e:
            log.warning("cannot keep memory figures in %s: %s", self._path, e.strerror or e)


def _shard_bytes(path: str | None, meta: Any) -> int | None:
    """Tensor bytes of every shard of a split model (None: not split)."""
    if not path or not meta.is_split:
        return None
    parts = split_parts(os.path.basename(path))
    if not parts:
        return None
    prefix, _, count = parts
    total = 0
    for n in range(1, count + 1):
        shard = gguf_meta(str(Path(path).with_name(f"{prefix}-{n:05d}-of-{count:05d}.gguf")))
        total += shard.tensor_bytes if shard is not None else 0
    return total
