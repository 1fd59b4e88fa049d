"""Generators of tiny GGUF files for tests.

Router tests need *real* models that a real ``llama-server`` can load and
serve, but downloading or loading a real model takes seconds to minutes and
hundreds of megabytes.  The files written here are a few hundred kilobytes,
load in well under a second, and still exercise the whole server path:
tokenizer, chat template, prompt processing, sampling, streaming.

What is written
---------------
``write_tiny_model``
    A 2-layer ``llama`` architecture model (embedding 64, 4 heads, 2 KV heads,
    F32 weights, seeded random values) with a SentencePiece-style ("llama")
    vocabulary of 512 tokens: ``<unk> <s> </s>``, the 256 byte-fallback tokens
    ``<0x00>``..``<0xFF>``, the ChatML control tokens ``<|im_start|>`` /
    ``<|im_end|>``, every printable ASCII character, a few whole words and
    padding.  A ChatML ``tokenizer.chat_template`` makes
    ``/v1/chat/completions`` work.

    The weights are random, but one residual dimension is pinned to a constant
    so that the output layer has a per-token bias: control and byte tokens get
    a large negative logit.  The model therefore never emits EOS, ``<|im_end|>``
    or half a UTF-8 sequence, which keeps every completion printable text of
    exactly ``n_predict`` / ``max_tokens`` tokens -- predictable for tests.
    (A request with no limit runs until the slot's context is full; at
    thousands of tokens/s that is still well under a second.)

``write_split_model``
    The same model split over ``n_shards`` files named
    ``STEM-00001-of-0000N.gguf`` with ``split.no`` / ``split.count`` /
    ``split.tensors.count`` written by ``GGUFWriter``'s own splitting support;
    ``llama-server --model`` on the first shard loads all of them.

``write_tiny_projector``
    A GGUF with ``general.type = "mmproj"`` and a few ``clip.*`` keys -- enough
    for a metadata reader to classify it as a multimodal projector.  It is not
    a loadable CLIP model.

``write_not_gguf`` / ``write_truncated_gguf``
    Broken inputs for error-path tests.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import numpy as np
from gguf import GGUFWriter, LlamaFileType, TokenType

__all__ = [
    "CHATML_TEMPLATE",
    "TINY_VOCAB_SIZE",
    "write_not_gguf",
    "write_sized_model",
    "write_split_model",
    "write_tiny_model",
    "write_tiny_projector",
    "write_truncated_gguf",
]

ARCH = "llama"

# Model shape.  Small enough to load instantly, big enough that every ggml CPU
# kernel takes its ordinary path (head_dim 16, GQA 2:1).
N_LAYER = 2
N_EMBD = 64
N_HEAD = 4
N_HEAD_KV = 2
N_FF = 128
HEAD_DIM = N_EMBD // N_HEAD
RMS_EPS = 1e-5
ROPE_FREQ_BASE = 10000.0

# ChatML, the most widely recognised template: llama.cpp detects it both via
# Jinja and via its legacy built-in template heuristics.
CHATML_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{%- endif -%}"
)

# SentencePiece marks a word boundary (space) with U+2581.
_SPM_SPACE = "\u2581"

_WORDS = [
    "the", "and", "hello", "world", "model", "router", "test", "tiny", "llama",
    "server", "token", "user", "assistant", "system", "you", "are", "is", "a",
    "of", "to", "in", "it", "that", "for", "on", "with", "as", "this", "be",
]

UNK_ID, BOS_ID, EOS_ID = 0, 1, 2

# Vocabulary is padded with unused tokens up to this size.
TINY_VOCAB_SIZE = 512


def _build_vocab() -> tuple[list[str], list[float], list[int]]:
    """Return (tokens, scores, token types) of the tiny SPM vocabulary.

    llama.cpp's SPM tokenizer needs the byte tokens ``<0x00>``..``<0xFF>``:
    it maps every character missing from the vocabulary (the newline
    included) to them.  Without them the model still loads, but tokenizing
    such text fails (HTTP 500 ``unordered_map::at``), so all 256 are present.  Scores only steer which
    adjacent pieces SPM merges first; longer words score higher so that
    ``"▁hello"`` wins over its letters.
    """
    tokens: list[str] = ["<unk>", "<s>", "</s>"]
    types: list[int] = [TokenType.UNKNOWN, TokenType.CONTROL, TokenType.CONTROL]
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    types += [TokenType.BYTE] * 256
    tokens += ["<|im_start|>", "<|im_end|>"]
    types += [TokenType.CONTROL] * 2
    n_special = len(tokens)

    pieces = [_SPM_SPACE] + [chr(c) for c in range(0x21, 0x7F)]
    words = [_SPM_SPACE + w for w in _WORDS]
    # SPM can only reach a multi-character piece through a chain of
    # intermediate pieces that are themselves in the vocabulary, so add every
    # prefix of every word too.
    seen = set(pieces)
    for w in words:
        for i in range(2, len(w) + 1):
            p = w[:i]
            if p not in seen:
                seen.add(p)
                pieces.append(p)
    tokens += pieces
    types += [TokenType.NORMAL] * len(pieces)

    # Pad to a round vocabulary size with unused placeholder tokens.
    size = max(TINY_VOCAB_SIZE, len(tokens))
    tokens += [f"<unused{i}>" for i in range(size - len(tokens))]
    types += [TokenType.UNUSED] * (size - len(types))

    scores = [0.0] * n_special + [
        float(len(t)) if ty == TokenType.NORMAL else -1e4
        for t, ty in zip(tokens[n_special:], types[n_special:], strict=True)
    ]
    return tokens, scores, types



def _tensors(n_vocab: int, types: list[int], seed: int) -> dict[str, np.ndarray]:
    """Seeded random weights, with a logit bias that keeps output printable.

    Residual dimension 0 is set to a constant in every token embedding and no
    layer writes to it (row 0 of ``attn_output`` and ``ffn_down`` is zero), so
    after the final RMS norm it is a positive constant.  Column 0 of the
    output matrix then acts as a per-token bias: strongly negative for every
    non-NORMAL token (control, byte, unknown, unused), zero otherwise.

    Shapes are numpy (row-major) order, i.e. ggml's ``ne`` reversed.
    """
    rng = np.random.default_rng(seed)

    def rand(*shape: int, scale: float = 0.02) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    n_embd_kv = N_HEAD_KV * HEAD_DIM
    embd = rand(n_vocab, N_EMBD, scale=0.5)
    embd[:, 0] = 1.0
    out = rand(n_vocab, N_EMBD, scale=1.0)
    out[:, 0] = 0.0
    suppressed = np.array([t != TokenType.NORMAL for t in types])
    out[suppressed, 0] = -100.0

    t: dict[str, np.ndarray] = {
        "token_embd.weight": embd,
        "output_norm.weight": np.ones(N_EMBD, dtype=np.float32),
        "output.weight": out,
    }
    for i in range(N_LAYER):
        wo = rand(N_EMBD, N_EMBD)
        wo[0, :] = 0.0
        down = rand(N_EMBD, N_FF)
        down[0, :] = 0.0
        t.update({
            f"blk.{i}.attn_norm.weight": np.ones(N_EMBD, dtype=np.float32),
            f"blk.{i}.attn_q.weight": rand(N_EMBD, N_EMBD),
            f"blk.{i}.attn_k.weight": rand(n_embd_kv, N_EMBD),
            f"blk.{i}.attn_v.weight": rand(n_embd_kv, N_EMBD),
            f"blk.{i}.attn_output.weight": wo,
            f"blk.{i}.ffn_norm.weight": np.ones(N_EMBD, dtype=np.float32),
            f"blk.{i}.ffn_gate.weight": rand(N_FF, N_EMBD),
            f"blk.{i}.ffn_up.weight": rand(N_FF, N_EMBD),
            f"blk.{i}.ffn_down.weight": down,
        })
    return t


def _add_tokenizer(w: GGUFWriter, tokens: list[str], scores: list[float], types: list[int]) -> None:
    """The one tokenizer every generated model carries: the tiny vocabulary and a ChatML template."""
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(BOS_ID)
    w.add_eos_token_id(EOS_ID)
    w.add_unk_token_id(UNK_ID)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.add_add_space_prefix(True)
    w.add_chat_template(CHATML_TEMPLATE)


def _add_model(
    w: GGUFWriter, *, name: str, n_ctx_train: int, seed: int, sliding_window: int | None
) -> None:
    """Add metadata, tokenizer and tensors of the tiny model to ``w``."""
    tokens, scores, types = _build_vocab()

    w.add_type("model")
    w.add_name(name)
    w.add_file_type(LlamaFileType.ALL_F32)
    w.add_quantization_version(2)

    w.add_vocab_size(len(tokens))
    w.add_context_length(n_ctx_train)
    w.add_embedding_length(N_EMBD)
    w.add_block_count(N_LAYER)
    w.add_feed_forward_length(N_FF)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(N_HEAD_KV)
    w.add_rope_dimension_count(HEAD_DIM)
    w.add_rope_freq_base(ROPE_FREQ_BASE)
    w.add_layer_norm_rms_eps(RMS_EPS)
    if sliding_window is not None:
        # Metadata only: the llama architecture has no SWA layers, llama.cpp
        # ignores the key.  It is there for metadata readers (KV-cache sizing).
        w.add_sliding_window(int(sliding_window))

    _add_tokenizer(w, tokens, scores, types)

    for tname, arr in _tensors(len(tokens), types, seed).items():
        w.add_tensor(tname, arr)


def _write(w: GGUFWriter) -> None:
    try:
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
    finally:
        w.close()


def write_tiny_model(
    path: str | os.PathLike[str],
    *,
    name: str = "tiny",
    n_ctx_train: int = 2048,
    seed: int = 0,
    sliding_window: int | None = None,
) -> Path:
    """Write a tiny, servable ``llama`` GGUF model to ``path`` and return it.

    ``name`` becomes ``general.name`` (how the router and ``/v1/models`` may
    label it), ``n_ctx_train`` becomes ``llama.context_length``, ``seed`` makes
    the weights (and so the file bytes) differ between models while staying
    reproducible, and ``sliding_window`` -- when given -- is written as
    ``llama.attention.sliding_window`` for metadata readers.
    The file is about 560 KB.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    w = GGUFWriter(path, ARCH)
    _add_model(w, name=name, n_ctx_train=n_ctx_train, seed=seed, sliding_window=sliding_window)
    _write(w)
    return path


def write_split_model(
    dir: str | os.PathLike[str],
    stem: str,
    n_shards: int = 2,
    *,
    name: str = "tiny-split",
    seed: int = 0,
) -> list[Path]:
    """Write the tiny model as ``n_shards`` split files; return their paths.

    Files are ``dir/STEM-00001-of-0000N.gguf`` ... in order.  The first shard
    carries all the metadata plus ``split.no`` (0-based), ``split.count`` and
    ``split.tensors.count``; the others carry only the ``split.*`` keys and
    their share of the tensors, exactly as ``gguf-split`` / the HF converters
    produce them.  Pass the first path to ``llama-server --model``.
    """
    n_tensors = 3 + 9 * N_LAYER
    if not 1 <= n_shards <= n_tensors:
        raise ValueError(f"n_shards must be in 1..{n_tensors}, got {n_shards}")
    per_shard = math.ceil(n_tensors / n_shards)
    if math.ceil(n_tensors / per_shard) != n_shards:
        raise ValueError(f"{n_tensors} tensors cannot be spread evenly over {n_shards} shards")
    d = Path(dir)
    d.mkdir(parents=True, exist_ok=True)
    # With one shard GGUFWriter writes a plain file without split keys.
    w = GGUFWriter(d / f"{stem}.gguf", ARCH, split_max_tensors=per_shard if n_shards > 1 else 0)
    _add_model(w, name=name, n_ctx_train=2048, seed=seed, sliding_window=None)
    assert w.path is not None
    paths = w.format_shard_names(w.path)
    _write(w)
    return paths


def write_tiny_projector(path: str | os.PathLike[str], *, ftype: str = "f16") -> Path:
    """Write a GGUF that metadata readers classify as a multimodal projector.

    It has ``general.architecture = "clip"`` and ``general.type = "mmproj"``
    (what ``convert_hf_to_gguf.py --mmproj`` writes), a few ``clip.*`` keys and
    one small tensor of dtype ``ftype`` ("f16" or "f32").  It is *not* a
    working vision encoder: do not hand it to ``llama-server --mmproj``.
    """
    dtypes = {"f32": (np.float32, LlamaFileType.ALL_F32), "f16": (np.float16, LlamaFileType.MOSTLY_F16)}
    if ftype not in dtypes:
        raise ValueError(f"ftype must be one of {sorted(dtypes)}, got {ftype!r}")
    dtype, file_type = dtypes[ftype]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    w = GGUFWriter(path, "clip")
    w.add_type("mmproj")
    w.add_name("tiny-mmproj")
    w.add_file_type(file_type)
    w.add_bool("clip.has_vision_encoder", True)
    w.add_bool("clip.has_text_encoder", False)
    w.add_string("clip.projector_type", "mlp")
    w.add_uint32("clip.vision.image_size", 32)
    w.add_uint32("clip.vision.patch_size", 16)
    w.add_uint32("clip.vision.embedding_length", 16)
    w.add_uint32("clip.vision.projection_dim", N_EMBD)
    w.add_tensor("mm.0.weight", np.random.default_rng(0).standard_normal((N_EMBD, 16)).astype(dtype))
    _write(w)
    return path


def write_not_gguf(path: str | os.PathLike[str]) -> Path:
    """Write a plain text file (named whatever ``path`` says, e.g. ``x.gguf``).

    For tests that a ``.gguf`` suffix alone is not trusted: the magic is wrong.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("this is not a GGUF file, just text with a .gguf name\n", encoding="utf-8")
    return path


def write_truncated_gguf(path: str | os.PathLike[str], *, keep_fraction: float = 0.5) -> Path:
    """Write a valid tiny model, then cut it to ``keep_fraction`` of its size.

    With the default 0.5 the cut falls in the tensor data: the magic, header
    and all key/values are intact (a KV-only metadata reader may still succeed)
    but the tensor data is short, so ``gguf.GGUFReader`` and ``llama-server``
    reject the file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        full = write_tiny_model(Path(tmp) / "full.gguf")
        data = full.read_bytes()
    path.write_bytes(data[: int(len(data) * keep_fraction)])
    return path


def write_sized_model(
    path: str | os.PathLike[str],
    *,
    n_layer: int,
    n_embd: int,
    n_head: int,
    n_head_kv: int,
    n_ff: int,
    n_ctx_train: int = 131072,
    name: str = "sized",
    seed: int = 0,
) -> Path:
    """Write a servable ``llama`` GGUF of a chosen shape with F16 weights.

    For memory measurements that need a model of a known size (hundreds of
    MiB to GiBs: `make gpu-check`, bench/gpu_check.py) without a download.
    The tokenizer, chat template and printable-output bias are the tiny
    model's; every layer holds the same random weights (written once per
    layer), so a large file is quick to make. Tensor bytes are
    ``2 * (n_layer * (2 * n_embd**2 + 2 * n_embd * kv_width + 3 * n_embd * n_ff) + 2 * vocab * n_embd)``
    plus the F32 norms, where ``kv_width = n_head_kv * n_embd / n_head``.
    """
    tokens, scores, types = _build_vocab()
    rng = np.random.default_rng(seed)

    def rand(*shape: int, scale: float = 0.02) -> np.ndarray:
        return (rng.standard_normal(shape, dtype=np.float32) * scale).astype(np.float16)

    head_dim = n_embd // n_head
    kv_width = n_head_kv * head_dim
    embd = rand(len(tokens), n_embd, scale=0.5)
    embd[:, 0] = 1.0
    out = rand(len(tokens), n_embd, scale=1.0)
    out[:, 0] = 0.0
    out[np.array([t != TokenType.NORMAL for t in types]), 0] = -100.0
    wo, down = rand(n_embd, n_embd), rand(n_embd, n_ff)
    wo[0, :] = 0.0  # no layer writes to residual dimension 0 (the bias above stays a bias)
    down[0, :] = 0.0
    layer = {"attn_q": rand(n_embd, n_embd), "attn_k": rand(kv_width, n_embd), "attn_v": rand(kv_width, n_embd),
             "attn_output": wo, "ffn_gate": rand(n_ff, n_embd), "ffn_up": rand(n_ff, n_embd), "ffn_down": down}
    norm = np.ones(n_embd, dtype=np.float32)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    w = GGUFWriter(path, ARCH)
    w.add_type("model")
    w.add_name(name)
    w.add_file_type(LlamaFileType.MOSTLY_F16)
    w.add_quantization_version(2)
    w.add_vocab_size(len(tokens))
    w.add_context_length(n_ctx_train)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head_kv)
    w.add_rope_dimension_count(head_dim)
    w.add_rope_freq_base(ROPE_FREQ_BASE)
    w.add_layer_norm_rms_eps(RMS_EPS)
    _add_tokenizer(w, tokens, scores, types)
    w.add_tensor("token_embd.weight", embd)
    w.add_tensor("output_norm.weight", norm)
    w.add_tensor("output.weight", out)
    for i in range(n_layer):
        w.add_tensor(f"blk.{i}.attn_norm.weight", norm)
        w.add_tensor(f"blk.{i}.ffn_norm.weight", norm)
        for tname, arr in layer.items():
            w.add_tensor(f"blk.{i}.{tname}.weight", arr)
    _write(w)
    return path
