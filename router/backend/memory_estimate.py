"""How much memory a model will take before it is loaded, from its GGUF header
and the child's own arguments (the way llama.cpp sizes its buffers).

    weights   tensor data of every shard (mapped from the file; counted as RAM
              unless layers are offloaded with -ngl to a GPU budget)
    kv        cells x layers x (K + V width) x cache type size; sliding-window
              layers hold only window x sequences + one micro-batch of cells
              unless --swa-full; the context is -c (0 or absent: the model's
              trained context), shared by the --parallel slots
    compute   the graph's scratch buffer: logits and activations of one
              micro-batch (-ub), and attention scores over the context
    projector the --mmproj file's tensors plus its own scratch
    overhead  the llama-server process itself (code, threads, HTTP)
    runtime   on each GPU that holds layers, the GPU runtime's own memory (the
              CUDA context and its libraries' workspaces), which NVML counts
              against the process but no buffer report names

Everything is pure arithmetic on `GGUFMeta` and argv, so the figures are
unit-tested against hand-computed ones; the manager replaces an estimate
with what a load really used (core/memory_book.py) for the next load of
the same model with the same arguments.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from router.backend.argv import arg_value, has_flag
from router.discovery.gguf_meta import GGUFMeta

MiB = 1024 * 1024
GiB = 1024 * MiB

# Per-architecture sliding-window layout, as llama.cpp sets it when the file does not say:
# every n-th layer attends to the whole context, the others to the window.
SWA_PATTERN = {"gemma2": 2, "gemma3": 6, "gemma3n": 5, "cohere2": 4, "gpt-oss": 2, "exaone4": 4, "llama4": 4}
# Bytes per element of the KV cache types llama-server accepts for -ctk/-ctv.
CACHE_TYPE_BYTES = {"f32": 4.0, "f16": 2.0, "bf16": 2.0, "q8_0": 34 / 32, "q5_1": 24 / 32, "q5_0": 22 / 32,
                    "q4_1": 20 / 32, "q4_0": 18 / 32, "iq4_nl": 18 / 32}
DEFAULT_UBATCH = 512
DEFAULT_PARALLEL = 4  # llama-server's "auto" slots
CELL_PAD = 256  # llama.cpp pads KV cache sizes to this many cells
PROCESS_OVERHEAD = 20 * MiB  # llama-server's own resident memory with a model of (almost) nothing
VOCAB_BYTES = 95  # the tokenizer's tables, per vocabulary entry (measured on Gemma 3's 262k tokens)
PROJECTOR_SCRATCH = 64 * MiB
# The CUDA runtime's own memory per GPU a child uses (context, kernels' stacks, cuBLAS):
# Ollama's figure for CUDA (its cudaMinimumMemory). `make gpu-check` measures it (docs/memory.md).
GPU_RUNTIME = 457 * MiB


@dataclass(frozen=True)
class Estimate:
    """Bytes per part, and where they go: "ram", or "gpu0", "gpu1"..."""

    weights: int
    kv: int
    compute: int
    projector: int
    overhead: int
    devices: dict[str, int] = field(default_factory=dict)
    runtime: int = 0  # the GPU runtime's own memory, summed over the GPUs used

    @property
    def total(self) -> int:
        return self.weights + self.kv + self.compute + self.projector + self.overhead + self.runtime

    def parts(self) -> dict[str, int]:
        return {"weights": self.weights, "kv": self.kv, "compute": self.compute,
                "projector": self.projector, "overhead": self.overhead, "runtime": self.runtime}


@dataclass(frozen=True)
class LaunchArgs:
    """What in a child's argv decides its memory."""

    ctx: int | None = None  # None or 0: the model's trained context
    parallel: int = DEFAULT_PARALLEL
    ubatch: int = DEFAULT_UBATCH
    cache_k: str = "f16"
    cache_v: str = "f16"
    swa_full: bool = False
    gpu_layers: int = 0
    tensor_split: tuple[float, ...] = ()
    flash_attn: bool = False

    @classmethod
    def parse(cls, argv: tuple[str, ...] | list[str], *, gpus: int = 0) -> LaunchArgs:
        """`gpus`: how many GPUs the budget knows; without one, -ngl places nothing off the CPU.
        Without -ngl, llama-server offloads every layer that fits (its default, "auto"):
        placement makes room for the model, so all of them."""
        flags = {"ctx": ("-c", "--ctx-size"), "parallel": ("-np", "--parallel"), "ubatch": ("-ub", "--ubatch-size"),
                 "cache_k": ("-ctk", "--cache-type-k"), "cache_v": ("-ctv", "--cache-type-v"),
                 "ngl": ("-ngl", "--gpu-layers", "--n-gpu-layers"), "ts": ("-ts", "--tensor-split"),
                 "fa": ("-fa", "--flash-attn")}
        values = {key: v for key, names in flags.items() if (v := arg_value(argv, *names)) is not None}
        parallel = _int(values.get("parallel"), DEFAULT_PARALLEL)
        ngl = values.get("ngl", "auto")
        gpu_layers = 0 if not gpus else (1 << 30 if ngl in ("auto", "all", "-1") else max(_int(ngl, 0), 0))
        split = tuple(float(x) for x in values.get("ts", "").replace("/", ",").split(",") if _is_float(x))
        return cls(
            ctx=_int(values.get("ctx"), 0) or None,
            parallel=parallel if parallel > 0 else DEFAULT_PARALLEL,
            ubatch=max(_int(values.get("ubatch"), DEFAULT_UBATCH), 1),
            cache_k=values.get("cache_k", "f16").lower(),
            cache_v=values.get("cache_v", "f16").lower(),
            swa_full=has_flag(argv, "--swa-full"),
            gpu_layers=gpu_layers,
            tensor_split=split[:gpus] if gpus else (),
            flash_attn=values.get("fa", "auto") in ("on", "1", "true"),
        )


def _int(value: str | None, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default


def _is_float(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def _pad(n: int) -> int:
    return -(-n // CELL_PAD) * CELL_PAD


def kv_bytes(meta: GGUFMeta, args: LaunchArgs) -> int:
    """The KV cache: full-attention layers hold the whole context; sliding-window
    layers hold window x sequences + one micro-batch (all of it with --swa-full)."""
    layers = meta.block_count or 0
    if not layers:
        return 0
    n_ctx, swa_cells, has_swa = _cells(meta, args)
    pattern = meta.sliding_window_pattern or SWA_PATTERN.get(meta.architecture or "", 0)
    head_count = meta.head_count or 1
    k_len = meta.key_length or (meta.embedding_length or 0) // head_count
    v_len = meta.value_length or k_len
    kv_heads = list(meta.head_count_kv_layers or [meta.head_count_kv or head_count] * layers)
    per_elem_k = CACHE_TYPE_BYTES.get(args.cache_k, 2.0)
    per_elem_v = CACHE_TYPE_BYTES.get(args.cache_v, 2.0)
    total = 0.0
    for i in range(layers):
        heads = kv_heads[i] if i < len(kv_heads) else kv_heads[-1]
        is_swa = has_swa and (i + 1) % pattern != 0
        cells = swa_cells if is_swa else n_ctx
        total += cells * heads * (k_len * per_elem_k + v_len * per_elem_v)
    return int(total)


def compute_bytes(meta: GGUFMeta, args: LaunchArgs) -> int:
    """The graph's scratch buffer (llama.cpp's "compute buffer"): per KV cache an
    f16 attention mask of one micro-batch over its cells, plus the activations of
    one micro-batch (feed-forward and attention widths), plus the output logits
    of each sequence. Fitted to what llama-server reports (docs/memory.md)."""
    n_ctx, swa_cells, has_swa = _cells(meta, args)
    ub = args.ubatch
    masks = ub * 2 * (n_ctx + (swa_cells if has_swa else 0))
    heads = meta.head_count or 1
    q_width = heads * (meta.key_length or (meta.embedding_length or 0) // heads)
    n_ff = meta.feed_forward_length or 4 * (meta.embedding_length or 0)
    activations = ub * 4 * 3 * (n_ff + q_width)
    logits = (meta.vocab_size or 32000) * 4 * args.parallel
    return masks + activations + logits


def _cells(meta: GGUFMeta, args: LaunchArgs) -> tuple[int, int, bool]:
    """(cells of full-attention layers, cells of sliding-window layers, whether there are such layers)."""
    n_ctx = _pad(args.ctx or meta.context_length or 4096)
    window = meta.sliding_window or 0
    pattern = meta.sliding_window_pattern or SWA_PATTERN.get(meta.architecture or "", 0)
    has_swa = bool(window and pattern)
    swa_cells = n_ctx if args.swa_full or not has_swa else min(n_ctx, _pad(window * args.parallel + args.ubatch))
    return n_ctx, swa_cells, has_swa


def overhead_bytes(meta: GGUFMeta) -> int:
    """The process itself: code, threads, HTTP, and the tokenizer's tables (which grow with the vocabulary)."""
    return PROCESS_OVERHEAD + (meta.vocab_size or 0) * VOCAB_BYTES


def estimate(meta: GGUFMeta, argv: tuple[str, ...] | list[str], *, shard_bytes: int | None = None,
             projector: GGUFMeta | None = None, gpus: int = 0) -> Estimate:
    """`shard_bytes`: tensor bytes of all shards of a split model (else this file's)."""
    args = LaunchArgs.parse(argv, gpus=gpus)
    weights = shard_bytes if shard_bytes is not None else meta.tensor_bytes
    kv = kv_bytes(meta, args)
    compute = compute_bytes(meta, args)
    proj = projector.tensor_bytes + PROJECTOR_SCRATCH if projector is not None else 0
    devices = _place(meta, args, weights, kv, compute, proj + overhead_bytes(meta), gpus)
    runtime = GPU_RUNTIME * sum(1 for d in devices if d != "ram")
    for d in devices:
        if d != "ram":
            devices[d] += GPU_RUNTIME
    return Estimate(weights, kv, compute, proj, overhead_bytes(meta), devices, runtime)


def _place(meta: GGUFMeta, args: LaunchArgs, weights: int, kv: int, compute: int, host: int,
           gpus: int) -> dict[str, int]:
    """Split the parts over devices: offloaded layers' weights and KV (and the
    compute buffer and projector, when anything is offloaded) go to the GPUs
    by --tensor-split (evenly without it; a GPU given no share gets nothing);
    the rest stays in RAM."""
    layers = meta.block_count or 1
    on_gpu = min(args.gpu_layers, layers) if gpus else 0
    if not on_gpu:
        return {"ram": weights + kv + compute + host}
    share = on_gpu / layers
    gpu_total = int((weights + kv) * share) + compute
    ram = weights + kv - int((weights + kv) * share) + host
    split = args.tensor_split or tuple(1.0 for _ in range(gpus))
    norm = sum(split) or 1.0
    devices = {"ram": ram}
    for i, w in enumerate(split):
        if w > 0:
            devices[f"gpu{i}"] = int(gpu_total * w / norm)
    return devices
