"""How much memory a child uses and how much the machine has, read from the
operating system, from the child's own report, and from NVML on NVIDIA GPUs."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import psutil

MiB = 1024 * 1024
# llama.cpp, at -lv 4: "load_tensors:   CPU_Mapped model buffer size =   235.16 MiB",
# "llama_kv_cache:        CUDA0 KV buffer size =    12.00 MiB", "sched_reserve: CPU compute buffer size = ..."
_BUFFER_RE = re.compile(r"\b(?P<tok>[A-Za-z][A-Za-z0-9_]*)\s+(?P<kind>model|KV|compute|output)"
                        r" buffer size =\s*(?P<mib>[\d.]+) MiB")
_HOST = {"Host", "Metal", "BLAS"}  # Metal: unified memory, counted as RAM


def rss_bytes(pid: int | None) -> int | None:
    """Resident memory of a process, or None when it is gone."""
    if pid is None:
        return None
    try:
        return psutil.Process(pid).memory_info().rss
    except (psutil.Error, OSError):
        return None


def tree_rss_bytes(pid: int | None) -> int | None:
    """Resident memory of a process and its children (a wrapper script's llama-server too)."""
    if pid is None:
        return None
    try:
        proc = psutil.Process(pid)
        total = proc.memory_info().rss
        for child in proc.children(recursive=True):
            try:
                total += child.memory_info().rss
            except (psutil.Error, OSError):
                pass
        return total
    except (psutil.Error, OSError):
        return None


def reported_buffers(lines: Iterable[str]) -> dict[str, dict[str, int]]:
    """The buffers a llama-server child reported while loading, per device
    ("ram", "gpu0"...) and kind (model, KV, compute, output), in bytes."""
    out: dict[str, dict[str, int]] = {}
    for line in lines:
        m = _BUFFER_RE.search(line)
        if not m:
            continue
        tok = m["tok"]
        if tok in _HOST or tok.startswith("CPU") or tok.endswith("_Host"):
            device = "ram"
        else:
            digits = re.search(r"\d+", tok)
            device = f"gpu{digits.group() if digits else 0}"
        kind = m["kind"].lower()
        per = out.setdefault(device, {})
        per[kind] = per.get(kind, 0) + int(float(m["mib"]) * MiB)
    return out


def total_ram() -> int:
    return psutil.virtual_memory().total


@contextmanager
def _nvml() -> Iterator[Any]:
    """pynvml, initialised, or None when there is no library, driver or GPU."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # no library, no driver, no GPU: each raises its own error type
        yield None
        return
    try:
        yield pynvml
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass


def gpu_totals() -> list[int] | None:
    """Each NVIDIA GPU's memory, when nvidia-ml-py can see one; None otherwise."""
    with _nvml() as nv:
        if nv is None:
            return None
        try:
            return [int(nv.nvmlDeviceGetMemoryInfo(nv.nvmlDeviceGetHandleByIndex(i)).total)
                    for i in range(nv.nvmlDeviceGetCount())]
        except Exception:
            return None


def gpu_used_by(pids: set[int]) -> dict[str, int] | None:
    """GPU memory used by these processes, per GPU, from NVML; None without NVML."""
    with _nvml() as nv:
        if nv is None:
            return None
        try:
            out: dict[str, int] = {}
            for i in range(nv.nvmlDeviceGetCount()):
                for p in nv.nvmlDeviceGetComputeRunningProcesses(nv.nvmlDeviceGetHandleByIndex(i)):
                    if p.pid in pids and p.usedGpuMemory:
                        out[f"gpu{i}"] = out.get(f"gpu{i}", 0) + int(p.usedGpuMemory)
            return out
        except Exception:
            return None
