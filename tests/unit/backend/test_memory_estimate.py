"""Memory estimates against figures computed by hand (the way llama.cpp sizes
its buffers), for the kinds of model people run."""

from __future__ import annotations

from pathlib import Path

from router.backend.memory_estimate import (
    GPU_RUNTIME,
    PROCESS_OVERHEAD,
    PROJECTOR_SCRATCH,
    VOCAB_BYTES,
    LaunchArgs,
    compute_bytes,
    estimate,
    kv_bytes,
)
from router.discovery.gguf_meta import GGUFMeta

MiB = 1024 * 1024
GiB = 1024 * MiB


def meta(**kw) -> GGUFMeta:
    base = dict(path=Path("/m.gguf"), architecture="llama", name="m", context_length=4096, block_count=32,
                head_count_kv=32, sliding_window=None, file_size=0, n_params=None, quantization="Q4_K_M",
                is_projector=False, embedding_length=4096, head_count=32, vocab_size=32000,
                feed_forward_length=11008, tensor_bytes=4 * GiB)
    base.update(kw)
    return GGUFMeta(**base)


def test_dense_kv_is_layers_times_cells_times_heads_times_k_and_v():
    # Llama 2 7B shape at 4096 tokens, f16: 32 x 4096 x 32 x (128 + 128) x 2 bytes = 2 GiB
    assert kv_bytes(meta(), LaunchArgs.parse(["-c", "4096"])) == 2 * GiB


def test_gqa_divides_the_kv_cache_by_the_group_size():
    # Llama 3 8B: 8 KV heads of 128; 8192 tokens: 32 x 8192 x 8 x 256 x 2 = 1 GiB
    assert kv_bytes(meta(head_count_kv=8), LaunchArgs.parse(["--ctx-size=8192"])) == 1 * GiB


def test_cache_types_scale_k_and_v_separately():
    m, ctx = meta(head_count_kv=8), ["-c", "8192"]
    assert kv_bytes(m, LaunchArgs.parse([*ctx, "-ctk", "q8_0", "-ctv", "q8_0"])) == 1 * GiB * 34 // 64
    # K in q4_0 (18 bytes per 32 values instead of 2 bytes each), V still f16
    assert kv_bytes(m, LaunchArgs.parse([*ctx, "-ctk", "q4_0"])) == GiB // 2 * 18 // 64 + GiB // 2


def test_no_context_argument_means_the_trained_context_as_llama_server_does():
    assert kv_bytes(meta(context_length=8192), LaunchArgs.parse([])) == 4 * GiB


def test_sliding_window_layers_hold_the_window_unless_swa_full():
    # Gemma 3 270M: 18 layers (every 6th global), 1 KV head, 256 + 256 wide, window 512.
    g = meta(architecture="gemma3", block_count=18, head_count=4, head_count_kv=1, key_length=256,
             value_length=256, sliding_window=512, embedding_length=640, context_length=32768)
    per_cell = 1 * (256 + 256) * 2
    # global: 3 layers x 4096 cells; sliding: 15 layers x pad(512 x 1 slot + 512) = 1024 cells
    assert kv_bytes(g, LaunchArgs.parse(["-c", "4096", "-np", "1"])) == (3 * 4096 + 15 * 1024) * per_cell
    assert kv_bytes(g, LaunchArgs.parse(["-c", "4096", "-np", "1", "--swa-full"])) == 18 * 4096 * per_cell
    # 4 slots: the window is kept per sequence, pad(512 x 4 + 512) = 2560 cells
    assert kv_bytes(g, LaunchArgs.parse(["-c", "4096", "-np", "4"])) == (3 * 4096 + 15 * 2560) * per_cell


def test_per_layer_kv_heads_are_summed_layer_by_layer():
    m = meta(block_count=4, head_count_kv_layers=(8, 8, 0, 4), head_count=8, embedding_length=1024)
    assert kv_bytes(m, LaunchArgs.parse(["-c", "1024"])) == 1024 * (8 + 8 + 0 + 4) * 256 * 2


def test_a_mixture_of_experts_loads_every_expert_and_keeps_a_dense_kv_cache():
    moe = meta(expert_count=64, expert_used_count=8, tensor_bytes=60 * GiB, head_count_kv=4)
    e = estimate(moe, ["-c", "4096"])
    assert e.weights == 60 * GiB
    assert e.kv == 32 * 4096 * 4 * 256 * 2


def test_a_split_model_counts_every_shard():
    first = meta(tensor_bytes=1 * GiB, split_count=3, split_no=0)
    assert estimate(first, ["-c", "4096"], shard_bytes=5 * GiB).weights == 5 * GiB


def test_a_projector_adds_its_tensors_and_scratch():
    proj = meta(is_projector=True, tensor_bytes=800 * MiB)
    e = estimate(meta(), ["-c", "4096"], projector=proj)
    assert e.projector == 800 * MiB + PROJECTOR_SCRATCH
    assert e.devices == {"ram": e.total}


def test_compute_is_masks_activations_and_logits():
    # f16 mask: 512 tokens x 4096 cells x 2 bytes; activations 512 x 4 x 3 x (11008 + 4096); logits 32000 x 4 x 1 slot
    expected = 512 * 4096 * 2 + 512 * 4 * 3 * (11008 + 4096) + 32000 * 4
    assert compute_bytes(meta(), LaunchArgs.parse(["-c", "4096", "-np", "1"])) == expected


def test_overhead_grows_with_the_vocabulary():
    assert estimate(meta(vocab_size=262144), []).overhead == PROCESS_OVERHEAD + 262144 * VOCAB_BYTES


def test_offloaded_layers_go_to_the_gpus_by_tensor_split():
    m = meta(block_count=32, tensor_bytes=4 * GiB, head_count_kv=8)
    e = estimate(m, ["-c", "8192", "-ngl", "16", "-ts", "3,1"], gpus=2)
    half = (4 * GiB + 1 * GiB) // 2  # half the layers' weights and KV
    assert e.devices["ram"] == 4 * GiB + 1 * GiB - half + e.overhead
    gpu_total = half + e.compute
    # each GPU that holds layers also holds the CUDA runtime's own memory
    assert e.devices["gpu0"] == gpu_total * 3 // 4 + GPU_RUNTIME and e.devices["gpu1"] == gpu_total // 4 + GPU_RUNTIME
    assert e.runtime == 2 * GPU_RUNTIME and e.total == sum(e.devices.values())
    assert estimate(m, ["-ngl", "99"], gpus=0).devices.keys() == {"ram"}  # no GPU budget: all RAM


def test_without_ngl_every_layer_goes_to_the_gpu():
    """llama-server's default is -ngl auto: every layer that fits, and placement makes room."""
    m = meta(block_count=32, tensor_bytes=4 * GiB, head_count_kv=8)
    e = estimate(m, ["-c", "8192"], gpus=1)
    assert e.devices == estimate(m, ["-c", "8192", "-ngl", "99"], gpus=1).devices
    assert e.devices["gpu0"] == e.weights + e.kv + e.compute + GPU_RUNTIME
    assert e.devices["ram"] == e.overhead
    assert estimate(m, ["-c", "8192", "-ngl", "0"], gpus=1).devices.keys() == {"ram"}  # -ngl 0: CPU only
