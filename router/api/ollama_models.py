"""The catalogue's models as Ollama describes them: names with a tag, the
entries of /api/tags and /api/ps, and /api/show's details, model_info and
capabilities, all from the GGUF header (router/discovery/gguf_meta.py).

What Ollama keeps in its own store is derived here from the file: `size` is
the model's files (every shard, the projector), `modified_at` their newest
mtime, and `digest` a SHA-256 of the file's path, size and mtime (hashing
gigabytes per listing is out of the question; the digest changes when the
file does). These functions read files (stat, GGUF headers): the routes call
them off the event loop.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from router.backend.argv import arg_value, has_flag
from router.catalogue.config import ModelSpec
from router.catalogue.sources import gguf_meta
from router.discovery.gguf_meta import GGUFError, GGUFMeta, read_gguf_kv
from router.discovery.naming import split_parts

HF_PREFIXES = ("hf.co/", "huggingface.co/")
# llama-server's flags as Ollama's parameter names (GET /api/show's `parameters`).
PARAMETERS = (
    (("-c", "--ctx-size"), "num_ctx"), (("-n", "--predict", "--n-predict"), "num_predict"),
    (("--temp", "--temperature"), "temperature"), (("--top-k",), "top_k"), (("--top-p",), "top_p"),
    (("--min-p",), "min_p"), (("--repeat-penalty",), "repeat_penalty"), (("--repeat-last-n",), "repeat_last_n"),
    (("--presence-penalty",), "presence_penalty"), (("--frequency-penalty",), "frequency_penalty"),
    (("-s", "--seed"), "seed"), (("--keep",), "num_keep"), (("-t", "--threads"), "num_thread"),
    (("-ngl", "--gpu-layers", "--n-gpu-layers"), "num_gpu"), (("-b", "--batch-size"), "num_batch"),
)
_FIM_KEYS = ("tokenizer.ggml.fim_pre_token_id", "tokenizer.ggml.prefix_token_id")
_THINKING = re.compile(r"<think>|enable_thinking|reasoning_content|<\|channel\|>|thinking", re.IGNORECASE)
_LONG_FOREVER_S = (2**63 - 1) / 1e9  # Go's longest time.Duration: Ollama's expires_at for keep_alive < 0


def ollama_name(name: str) -> str:
    """`gemma` -> `gemma:latest`; a name with a tag (`user/repo:Q4_K_M`) stays."""
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def name_candidates(requested: str) -> list[str]:
    """The catalogue names an Ollama client may mean, most literal first: the name as
    sent, without `hf.co/` (how Ollama users name Hugging Face GGUFs), without `:latest`."""
    out = [requested]
    for prefix in HF_PREFIXES:
        if requested.lower().startswith(prefix):
            out.append(requested[len(prefix):])
    for name in list(out):
        if name.endswith(":latest"):
            out.append(name.removesuffix(":latest"))
    return out


def human_number(n: int) -> str:
    """Ollama's parameter_size (format.HumanNumber): 268098176 -> "268.10M", 7e9 -> "7B"."""
    for unit, size in (("B", 10**9), ("M", 10**6)):
        if n >= size:
            v = n / size
            return f"{v:.0f}{unit}" if v == int(v) else (f"{v:.1f}{unit}" if unit == "B" else f"{v:.2f}{unit}")
    return f"{n / 1000:.0f}K" if n >= 1000 else str(n)


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def expires_at(now_wall: float, idle_s: float | None, ttl: float) -> str:
    """When an idle model unloads: its TTL after it went idle (a busy one: after now);
    no TTL (0, or keep_alive < 0) is Ollama's "never", 292 years away."""
    if ttl <= 0:
        return iso(now_wall + _LONG_FOREVER_S)
    return iso(now_wall + ttl - (idle_s or 0.0))


def _shards(path: str, meta: GGUFMeta | None) -> list[str]:
    if meta is None or not meta.is_split:
        return [path]
    parts = split_parts(os.path.basename(path))
    if parts is None:
        return [path]
    folder, (prefix, _, count) = os.path.dirname(path), parts
    return [os.path.join(folder, f"{prefix}-{i:05d}-of-{count:05d}.gguf") for i in range(1, count + 1)]


def _stat(path: str) -> os.stat_result | None:
    try:
        return os.stat(path)
    except OSError:
        return None


def facts(spec: ModelSpec, listed_as: str | None = None) -> dict[str, Any]:
    """name, model, modified_at, size, digest and details: a /api/tags entry (`listed_as`: the
    id it is listed under when that is not the model's, a selector's)."""
    meta = gguf_meta(spec.model_file)
    files = _shards(spec.model_file, meta) if spec.model_file else []
    stats = [s for s in map(_stat, [*files, *([spec.mmproj] if spec.mmproj else [])]) if s is not None]
    size = sum(s.st_size for s in stats)
    mtime = max((s.st_mtime for s in stats), default=0.0)
    first = stats[0] if files and stats else None
    ident = f"{os.path.realpath(files[0])}\0{first.st_size}\0{first.st_mtime_ns}" if files and first else spec.name
    params = sum((m.n_params or 0) for m in map(gguf_meta, files) if m is not None) if len(files) > 1 else \
        (meta.n_params if meta else None)
    arch = meta.architecture if meta else None
    families = [arch] if arch else []
    if spec.mmproj:
        families.append("clip")
    name = ollama_name(listed_as or spec.name)
    return {"name": name, "model": name, "modified_at": iso(mtime), "size": size,
            "digest": hashlib.sha256(ident.encode()).hexdigest(),
            "details": {"parent_model": "", "format": "gguf" if files else "", "family": arch or "",
                        "families": families or None, "parameter_size": human_number(params) if params else "",
                        "quantization_level": (meta.quantization or "") if meta else ""}}


def _key_values(path: str | None) -> dict[str, Any]:
    if not path:
        return {}
    try:
        return read_gguf_kv(path)
    except GGUFError:
        return {}


def model_info(kv: dict[str, Any], n_params: int | None, verbose: bool = False) -> dict[str, Any]:
    """The GGUF key/values under Ollama's keys (they are the same keys): floats rounded as
    float32 prints them, the chat template left out (it is /api/show's `template`), and the
    tokenizer's arrays as [] unless `verbose` (Ollama's answer; the vocabulary and its
    merges, arrays of strings, are never read: [] even then)."""
    out: dict[str, Any] = {}
    for k, v in kv.items():
        if k == "tokenizer.chat_template" or k.startswith("tokenizer.chat_template."):
            continue
        if isinstance(v, float):
            v = float(f"{v:.7g}")
        elif isinstance(v, list) and k.startswith("tokenizer.") and not verbose:
            v = []
        elif isinstance(v, list):
            v = [float(f"{x:.7g}") if isinstance(x, float) else x for x in v]
        out[k] = [] if v is None else v
    if n_params:
        out["general.parameter_count"] = n_params
    return dict(sorted(out.items()))


def capabilities(spec: ModelSpec, kv: dict[str, Any], argv: Sequence[str]) -> list[str]:
    """Ollama's capabilities, from the header and the command line: an embedding model
    (a pooling type in its header) has no `completion`; `tools` and `thinking` when the
    chat template speaks of them, `insert` with fill-in-the-middle tokens, `vision` with
    a projector."""
    arch = kv.get("general.architecture")
    template = kv.get("tokenizer.chat_template") or ""
    pooling = isinstance(arch, str) and f"{arch}.pooling_type" in kv
    caps = [] if pooling else ["completion"]
    if pooling or has_flag(argv, "--embedding") or has_flag(argv, "--embeddings"):
        caps.append("embedding")
    if "tools" in template:
        caps.append("tools")
    if any(k in kv for k in _FIM_KEYS):
        caps.append("insert")
    if spec.mmproj or has_flag(argv, "--mmproj") or has_flag(argv, "-mm"):
        caps.append("vision")
    if template and _THINKING.search(template):
        caps.append("thinking")
    return caps


def parameters(argv: Sequence[str]) -> str:
    """The launch settings Ollama lists as a Modelfile's PARAMETERs, one `name value` a line."""
    rows = []
    for flags, name in PARAMETERS:
        value = arg_value(argv, *flags)
        if value is not None:
            rows.append(f"{name:<30} {value}")
    return "\n".join(rows)


def show(spec: ModelSpec, argv: Sequence[str], verbose: bool = False) -> dict[str, Any]:
    """POST /api/show's answer."""
    base = facts(spec)
    kv = _key_values(spec.model_file)
    params = parameters(argv)
    modelfile = f"# Modelfile generated by llama-router\nFROM {spec.path or spec.name}\n"
    if spec.mmproj:
        modelfile += f"FROM {spec.mmproj}\n"
    modelfile += "".join(f"PARAMETER {row}\n" for row in params.splitlines())
    meta = gguf_meta(spec.model_file)
    out: dict[str, Any] = {
        "modelfile": modelfile, "parameters": params, "template": kv.get("tokenizer.chat_template") or "",
        "details": base["details"], "model_info": model_info(kv, meta.n_params if meta else None, verbose),
        "capabilities": capabilities(spec, kv, argv), "modified_at": base["modified_at"]}
    license_ = kv.get("general.license")
    if isinstance(license_, str):
        out["license"] = license_
    if spec.mmproj:
        out["projector_info"] = model_info(_key_values(spec.mmproj), None)
    return out


def ps_entry(spec: ModelSpec, memory: dict[str, int], rss: int | None, expires: str,
             context_length: int | None) -> dict[str, Any]:
    """One /api/ps entry: `size` the memory figure placement uses (else the child's resident
    memory), `size_vram` its GPU part."""
    base = facts(spec)
    size = sum(memory.values()) if memory else (rss or base["size"])
    vram = sum(v for d, v in memory.items() if d != "ram") if memory else 0
    return {**base, "expires_at": expires, "size": size, "size_vram": vram,
            "context_length": context_length or 0}


def context_length(argv: Sequence[str], spec: ModelSpec) -> int | None:
    """The context a running child was given (-c), else what its GGUF was trained for."""
    value = arg_value(argv, "-c", "--ctx-size")
    if value is not None and value.isdigit() and int(value) > 0:
        return int(value)
    meta = gguf_meta(spec.model_file)
    return meta.context_length if meta else None
