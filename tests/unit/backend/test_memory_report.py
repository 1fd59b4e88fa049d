"""Reading what a llama-server child says it allocated, and the budgets."""

from __future__ import annotations

import psutil

from router.backend.memory_measure import reported_buffers
from router.catalogue.config import MemorySettings
from router.core.memory_book import _shard_bytes, resolve_budget
from router.discovery.gguf_meta import read_gguf_meta
from tests.support.tinygguf import write_split_model, write_tiny_model

MiB = 1024 * 1024


def test_buffer_lines_are_summed_per_device_and_kind():
    lines = [
        "0.00.862 I load_tensors:   CPU_Mapped model buffer size =   235.16 MiB",
        "0.00.862 I load_tensors:   CPU_REPACK model buffer size =    12.66 MiB",
        "0.00.875 I llama_context:        CPU  output buffer size =     1.00 MiB",
        "0.00.875 I llama_kv_cache:        CPU KV buffer size =    12.00 MiB",
        "0.00.880 I llama_kv_cache:      CUDA0 KV buffer size =    60.00 MiB",
        "0.00.880 I load_tensors:        CUDA1 model buffer size =   100.00 MiB",
        "0.00.905 I sched_reserve:   CUDA_Host compute buffer size =     5.00 MiB",
        "an unrelated line about a buffer",
    ]
    got = reported_buffers(lines)
    assert got["ram"] == {"model": int((235.16 + 12.66) * MiB), "output": MiB, "kv": 12 * MiB, "compute": 5 * MiB}
    assert got["gpu0"] == {"kv": 60 * MiB} and got["gpu1"] == {"model": 100 * MiB}


def test_budgets_from_sizes_auto_and_off():
    assert resolve_budget(MemorySettings(ram=1000, gpu=None)) == {"ram": 1000}
    auto = resolve_budget(MemorySettings(ram="auto", gpu=None, reserve=MiB))
    assert auto == {"ram": psutil.virtual_memory().total - MiB}
    assert resolve_budget(MemorySettings(ram=None, gpu=(500, 700))) == {"gpu0": 500, "gpu1": 700}
    assert resolve_budget(MemorySettings(ram=None, gpu=None)) is None


def test_a_split_models_weights_are_every_shards(tmp_path):
    shards = write_split_model(tmp_path, "split", 3)
    whole = read_gguf_meta(write_tiny_model(tmp_path / "whole.gguf", name="tiny-split"))
    first = read_gguf_meta(shards[0])
    assert first.tensor_bytes < whole.tensor_bytes
    assert _shard_bytes(str(shards[0]), first) == sum(read_gguf_meta(s).tensor_bytes for s in shards)
