"""A stand-in for llama-server in `make gpu-check`: it takes the memory the
router estimates for a model's buffers (weights, KV, compute) on the GPU
with plain allocations through the CUDA driver API (ctypes on libcuda:
cuMemAlloc, then cuMemset so the pages are real), logs them the way
llama-server does, and answers /health and /v1/chat/completions
(tests/support/fakebackend.py). What NVML then reports for the process is
those buffers plus the CUDA context, so it proves the NVML side of placement
(per-process figures, free memory during swaps) where no CUDA llama-server
could be built; it says nothing about llama.cpp's own buffers.

`--memory ram` takes the same bytes in RAM instead (the dry run, no GPU).

    python -m bench.gpu_standin --model M.gguf --port P [--memory gpu|ram] [llama-server args...]
"""

from __future__ import annotations

import argparse
import ctypes
import sys

MiB = 1024 * 1024
CHUNK = 1024 * MiB


def buffers(model: str, argv: list[str], gpus: int) -> tuple[dict[str, int], int]:
    """What llama-server would allocate for this model and these arguments, by the
    router's own estimate: its model, KV and compute buffers, and its whole figure
    on the device they go to (with the process's or the CUDA runtime's own memory)."""
    from router.backend.memory_estimate import estimate
    from router.discovery.gguf_meta import read_gguf_meta

    e = estimate(read_gguf_meta(model), argv, gpus=gpus)
    return {"model": e.weights, "KV": e.kv, "compute": e.compute}, e.devices.get("gpu0" if gpus else "ram", 0)


def take_vram(nbytes: int) -> list[int]:
    """Allocate and touch `nbytes` on GPU 0 in its primary context; the pointers."""
    cuda = ctypes.CDLL("libcuda.so.1")

    def check(rc: int, what: str) -> None:
        if rc != 0:
            raise RuntimeError(f"{what} failed: CUDA error {rc}")

    dev, ctx = ctypes.c_int(), ctypes.c_void_p()
    check(cuda.cuInit(0), "cuInit")
    check(cuda.cuDeviceGet(ctypes.byref(dev), 0), "cuDeviceGet")
    check(cuda.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), dev), "cuDevicePrimaryCtxRetain")
    check(cuda.cuCtxSetCurrent(ctx), "cuCtxSetCurrent")
    cuda.cuMemsetD8_v2.argtypes = [ctypes.c_uint64, ctypes.c_ubyte, ctypes.c_size_t]
    pointers = []
    left = nbytes
    while left > 0:
        size = min(left, CHUNK)
        ptr = ctypes.c_uint64()
        check(cuda.cuMemAlloc_v2(ctypes.byref(ptr), ctypes.c_size_t(size)), f"cuMemAlloc({size})")
        check(cuda.cuMemsetD8_v2(ptr.value, 0, size), "cuMemsetD8")
        pointers.append(ptr.value)
        left -= size
    check(cuda.cuCtxSynchronize(), "cuCtxSynchronize")
    return pointers


def take_ram(nbytes: int) -> bytearray:
    block = bytearray(nbytes)
    for i in range(0, nbytes, 4096):  # touch every page: resident, as a loaded buffer is
        block[i] = 1
    return block


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", "-m", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--memory", choices=("gpu", "ram"), default="gpu")
    a, _ = p.parse_known_args(argv)
    args = sys.argv[1:] if argv is None else argv
    sizes, figure = buffers(a.model, args, gpus=1 if a.memory == "gpu" else 0)

    import psutil
    from aiohttp import web

    from tests.support.fakebackend import build_app

    if a.memory == "gpu":  # NVML adds the CUDA context to these: the runtime part of the estimate
        held: object = take_vram(sum(sizes.values()))
    else:  # in RAM the interpreter is the process's overhead: take what the figure leaves
        held = take_ram(max(figure - psutil.Process().memory_info().rss, 0))
    device = "CUDA0" if a.memory == "gpu" else "CPU"
    for kind, n in sizes.items():  # llama-server's -lv 4 lines, which the router reads
        print(f"gpu_standin: {device:>10} {kind} buffer size = {n / MiB:8.2f} MiB", flush=True)
    web.run_app(build_app(0.0), host=a.host, port=a.port, print=None)
    del held  # the memory stays taken until the router stops this process


if __name__ == "__main__":
    main()
