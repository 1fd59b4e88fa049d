"""How much memory a child uses and how much the machine has, read from the
operating system, from the child's own report, and from NVML on NVIDIA GPUs;
and whether the GPU shares the machine's RAM (Apple silicon), with the part
of it the GPU may use."""

from __future__ import annotations

import platform as _platform
import re
import subprocess
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psutil

MiB = 1024 * 1024
# llama.cpp, at -lv 4: "load_tensors:   CPU_Mapped model buffer size =   235.16 MiB",
# "llama_kv_cache:        CUDA0 KV buffer size =    12.00 MiB", "sched_reserve: CPU compute buffer size = ..."
_BUFFER_RE = re.compile(r"\b(?P<tok>[A-Za-z][A-Za-z0-9_]*)\s+(?P<kind>model|KV|compute|output)"
                        r" buffer size =\s*(?P<mib>[\d.]+) MiB")
_HOST = {"Host", "Metal", "BLAS"}  # Metal: unified memory, counted as RAM
_UNIFIED_PREFIXES = ("MTL", "Metal")  # Metal's devices ("MTL0", "MTL0_Mapped") compute in the RAM


def rss_bytes(pid: int | None) -> int | None:
    """Resident memory of a process, or None when it is gone."""
    if pid is None:
        return None
    try:
        return psutil.Process(pid).memory_info().rss
    except (psutil.Error, OSError):
        return None


def tree_pids(pid: int | None) -> set[int]:
    """A process and its descendants (a wrapper script's llama-server too); empty when it is gone."""
    if pid is None:
        return set()
    try:
        return {pid, *(c.pid for c in psutil.Process(pid).children(recursive=True))}
    except (psutil.Error, OSError):
        return {pid}


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
        if tok in _HOST or tok.startswith(("CPU", *_UNIFIED_PREFIXES)) or tok.endswith("_Host"):
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
    return _nvml_gpus()[0]


def _nvml_gpus() -> tuple[list[int] | None, bool]:
    """(each NVIDIA GPU's memory or None, whether a GPU has no memory of its own).
    An integrated GPU that shares the machine's RAM (DGX Spark's GB10) is listed
    by NVML but has no memory figure: NVML answers "not supported"."""
    with _nvml() as nv:
        if nv is None:
            return None, False
        try:
            handles = [nv.nvmlDeviceGetHandleByIndex(i) for i in range(nv.nvmlDeviceGetCount())]
        except Exception:
            return None, False
        not_supported = getattr(nv, "NVMLError_NotSupported", ())
        totals: list[int] = []
        for handle in handles:
            try:
                totals.append(int(nv.nvmlDeviceGetMemoryInfo(handle).total))
            except not_supported:
                return None, True
            except Exception:
                return None, False
        return totals or None, False


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


# ----- unified memory -------------------------------------------------------
# macOS's default GPU working-set limit (Metal's recommendedMaxWorkingSetSize) when it
# cannot be read: about two thirds of the RAM up to 36 GiB, three quarters above.
WORKING_SET_SMALL, WORKING_SET_LARGE, WORKING_SET_THRESHOLD = 2 / 3, 3 / 4, 36 * 1024 ** 3
# Metal's figure, asked in a child process so that the router itself never loads Metal
# (a crash there costs the child, not the router); CoreGraphics first, as command-line
# tools need it for MTLCreateSystemDefaultDevice to find the GPU.
_METAL_PROBE = """
import ctypes
ctypes.CDLL("/System/Library/Frameworks/CoreGraphics.framework/CoreGraphics")
metal = ctypes.CDLL("/System/Library/Frameworks/Metal.framework/Metal")
objc = ctypes.CDLL("/usr/lib/libobjc.A.dylib")
metal.MTLCreateSystemDefaultDevice.restype = ctypes.c_void_p
objc.sel_registerName.restype = ctypes.c_void_p
objc.sel_registerName.argtypes = [ctypes.c_char_p]
send = ctypes.CFUNCTYPE(ctypes.c_uint64, ctypes.c_void_p, ctypes.c_void_p)(
    ctypes.cast(objc.objc_msgSend, ctypes.c_void_p).value)
device = metal.MTLCreateSystemDefaultDevice()
print(send(device, objc.sel_registerName(b"recommendedMaxWorkingSetSize")) if device else 0)
"""


@dataclass(frozen=True)
class Platform:
    """What this machine says about its memory: read once by `read_platform`,
    built by hand in tests to simulate another machine (an Apple silicon Mac,
    a DGX Spark) without one."""

    system: str  # platform.system(): "Darwin", "Linux"...
    machine: str  # platform.machine(): "arm64", "x86_64", "aarch64"...
    ram: int  # total RAM, bytes
    gpus: tuple[int, ...] | None = None  # each NVIDIA GPU's own memory (NVML); None: none seen
    gpu_in_ram: bool = False  # an NVIDIA GPU without memory of its own (NVML says "not supported")
    working_set: int | None = None  # what the GPU may use of the RAM, where the platform says
    working_set_source: str = ""  # where that figure came from, for the log

    @property
    def unified(self) -> bool:
        """Whether the GPU computes in the machine's RAM: Apple silicon (Metal), or an
        NVIDIA GPU that NVML reports without memory of its own (DGX Spark's GB10)."""
        return (self.system == "Darwin" and self.machine == "arm64") or self.gpu_in_ram


def read_platform() -> Platform:
    """This machine: its RAM, its NVIDIA GPUs (NVML), and on Apple silicon Metal's limit."""
    system, machine = _platform.system(), _platform.machine()
    ram = total_ram()
    gpus, gpu_in_ram = _nvml_gpus()
    working_set, source = None, ""
    if system == "Darwin" and machine == "arm64":
        working_set, source = metal_working_set(ram, _metal_limit(), _sysctl_int("iogpu.wired_limit_mb"))
    return Platform(system, machine, ram, tuple(gpus) if gpus else None, gpu_in_ram, working_set, source)


def metal_working_set(ram: int, metal: int | None, wired_limit_mb: int | None) -> tuple[int, str]:
    """The part of the RAM Metal lets the GPU use, and where the figure came from:
    Metal's own recommendedMaxWorkingSetSize when it could be read; else the
    limit set with `sysctl iogpu.wired_limit_mb` (0: macOS's default); else
    macOS's default, about 2/3 of the RAM up to 36 GiB and 3/4 above."""
    if metal:
        return metal, "Metal's recommendedMaxWorkingSetSize"
    if wired_limit_mb:
        return wired_limit_mb * 1024 * 1024, "sysctl iogpu.wired_limit_mb"
    share = WORKING_SET_SMALL if ram <= WORKING_SET_THRESHOLD else WORKING_SET_LARGE
    return int(ram * share), f"{'2/3' if share == WORKING_SET_SMALL else '3/4'} of the RAM (macOS's default)"


def _metal_limit() -> int | None:
    try:
        out = subprocess.run([sys.executable, "-c", _METAL_PROBE], capture_output=True, text=True, timeout=15)
        if out.returncode != 0:
            return None
        return int(out.stdout.strip()) or None
    except (OSError, ValueError, subprocess.SubprocessError):
        return None


def _sysctl_int(name: str) -> int | None:
    try:
        out = subprocess.run(["sysctl", "-n", name], capture_output=True, text=True, timeout=5)
        return int(out.stdout.strip()) if out.returncode == 0 else None
    except (OSError, ValueError, subprocess.SubprocessError):
        return None
