"""Small GGUF files with chosen metadata (no real weights), for the metadata
reader, the folder scans, the importer and the Hugging Face tests."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import gguf
import numpy as np

QT = gguf.GGMLQuantizationType


def _tensor(kind: str, n_blocks: int = 1) -> dict:
    """Tensor kwargs for GGUFWriter.add_tensor of the given ggml type."""
    if kind == "F32":
        return {"tensor": np.ones(32 * n_blocks, dtype=np.float32)}
    if kind == "F16":
        return {"tensor": np.ones(32 * n_blocks, dtype=np.float16)}
    if kind == "BF16":
        return {"tensor": np.zeros(32 * n_blocks, dtype=np.uint16), "raw_dtype": QT.BF16}
    if kind == "Q4_K":
        return {"tensor": np.zeros((n_blocks, 144), dtype=np.uint8), "raw_dtype": QT.Q4_K}
    raise ValueError(kind)


def write_gguf(
    path: str | os.PathLike[str],
    *,
    arch: str = "llama",
    name: str | None = "Tiny",
    context_length: int | None = 4096,
    block_count: int | None = 2,
    head_count_kv: int | None = 2,
    embedding_length: int | None = 64,
    sliding_window: int | None = None,
    file_type: int | None = None,
    general_type: str | None = None,
    tensors: tuple[tuple[str, int], ...] = (("F32", 1),),
    shards: int = 1,
    extra: dict[str, str | int] | None = None,
    endianess: gguf.GGUFEndian = gguf.GGUFEndian.LITTLE,
) -> list[Path]:
    """Write a small real GGUF (or a split set: one tensor per shard); return the file(s)."""
    path = Path(path)
    if shards > 1 and len(tensors) < shards:
        tensors = tuple(tensors) + (("F32", 1),) * (shards - len(tensors))
    w = gguf.GGUFWriter(path, arch, split_max_tensors=1 if shards > 1 else 0, endianess=endianess)
    if name is not None:
        w.add_name(name)
    if general_type is not None:
        w.add_type(general_type)
    if context_length is not None:
        w.add_context_length(context_length)
    if block_count is not None:
        w.add_block_count(block_count)
    if head_count_kv is not None:
        w.add_head_count_kv(head_count_kv)
    if embedding_length is not None:
        w.add_embedding_length(embedding_length)
    if sliding_window is not None:
        w.add_sliding_window(sliding_window)
    if file_type is not None:
        w.add_file_type(file_type)
    for k, v in (extra or {}).items():
        w.add_string(k, v) if isinstance(v, str) else w.add_uint32(k, v)
    for i, (kind, n) in enumerate(tensors):
        w.add_tensor(f"blk.{i}.weight", **_tensor(kind, n))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return w.format_shard_names(path)


def write_projector(
    path: str | os.PathLike[str], ftype: str = "F16", *, projection_dim: int | None = 64,
    style: str = "type", ftype_key: bool = False,
) -> Path:
    """A multimodal projector: `general.type = mmproj` (style "type") or only `clip.*` keys ("clip")."""
    path = Path(path)
    w = gguf.GGUFWriter(path, "clip")
    if style == "type":
        w.add_type("mmproj")
    w.add_bool("clip.has_vision_encoder", True)
    if projection_dim is not None:
        w.add_uint32("clip.vision.projection_dim", projection_dim)
    if ftype_key:
        w.add_file_type({"F32": 0, "F16": 1, "BF16": 32}[ftype])
    w.add_tensor("v.norm.weight", **_tensor("F32", 1))
    w.add_tensor("mm.0.weight", **_tensor(ftype, 8))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


# ---------------------------------------------------------------- fields


def by_name(result: Any) -> dict[str, Any]:
    """A scan's models by name."""
    return {m.name: m for m in result.models}
