"""Read the metadata of a GGUF file without touching its tensor data.

Longer than 300 lines because it reads one binary format in full (header,
typed key/values, tensor infos) with a precise error for every way a file
can be cut short or corrupted.

`gguf.GGUFReader` builds a numpy view for every element of every array in
the header, which takes seconds on models with a 150k-260k token vocabulary
(8.5 s for Gemma 3 270M). The router scans whole folders of models at start-up
and on every rescan, so this module walks the header itself: it decodes the few
keys it needs, skips the big tokenizer arrays by their lengths, and reads the
tensor infos only for element counts, types and the expected end of the data.
The `gguf` package still supplies the format's constants (magic, value types,
quantisation block sizes, file-type names), so new quantisation types come
with a `gguf` upgrade. Only its `constants` module is loaded: the package's
`__init__` imports numpy and its reader, about 15 MiB of the router's
resident memory that nothing here uses (`_gguf_constants`).

Every failure - not GGUF, truncated, corrupt, unreadable - surfaces as
`GGUFError`, so callers scanning untrusted folders need one `except`.
"""

from __future__ import annotations

import importlib.util
import mmap
import os
import stat
import struct
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

__all__ = ["GGUFError", "GGUFMeta", "read_gguf_kv", "read_gguf_meta"]



def _gguf_constants() -> ModuleType:
    """`gguf.constants` without running `gguf/__init__` (numpy, the reader, the writer);
    the whole package where it is already imported or laid out otherwise."""
    if "gguf" in sys.modules:
        return sys.modules["gguf"]
    spec = importlib.util.find_spec("gguf")
    folder = spec.submodule_search_locations[0] if spec and spec.submodule_search_locations else None
    path = os.path.join(folder, "constants.py") if folder else None
    if path is None or not os.path.isfile(path):
        import gguf

        return gguf
    cspec = importlib.util.spec_from_file_location("router_gguf_constants", path)
    assert cspec is not None and cspec.loader is not None
    module = importlib.util.module_from_spec(cspec)
    cspec.loader.exec_module(module)
    return module


gguf = _gguf_constants()
_MAGIC = struct.pack("<I", gguf.GGUF_MAGIC)  # b"GGUF"
_SUPPORTED_VERSIONS = (2, 3)
_MAX_DIMS = 8  # ggml uses 4; leave room, but reject garbage
_MAX_KEY_LEN = 1 << 16
_MAX_NESTING = 4
_MAX_KEPT_ARRAY = 4096  # numeric arrays up to this length are decoded (per-layer values)
_MAX_KEPT_STRING = 1 << 16
_TOKENS = "tokenizer.ggml.tokens"

_VT = gguf.GGUFValueType
_SCALARS: dict[int, str] = {
    _VT.UINT8: "B", _VT.INT8: "b", _VT.UINT16: "H", _VT.INT16: "h",
    _VT.UINT32: "I", _VT.INT32: "i", _VT.FLOAT32: "f", _VT.BOOL: "?",
    _VT.UINT64: "Q", _VT.INT64: "q", _VT.FLOAT64: "d",
}
_PROJECTOR_FTYPES = ("BF16", "F16", "F32")


class GGUFError(ValueError):
    """A file could not be read as GGUF; carries the file and the reason."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


@dataclass(frozen=True)
class GGUFMeta:
    """What the router needs to know about one GGUF file.

    Counts describe this file only: for a split model, each shard carries a
    share of the tensors (`split_no` is 0-based, as in the `split.no` key).
    """

    path: Path
    architecture: str | None
    name: str | None
    context_length: int | None
    block_count: int | None
    head_count_kv: int | None
    sliding_window: int | None
    file_size: int
    n_params: int | None
    quantization: str | None
    is_projector: bool
    split_count: int | None = None
    split_no: int | None = None
    projector_ftype: str | None = None
    general_type: str | None = None
    embedding_length: int | None = None
    projection_dim: int | None = None
    tensor_count: int = 0
    version: int = 3
    # What a memory estimate needs (router/backend/memory_measure.py); None when the file does not say.
    tensor_bytes: int = 0  # tensor data in this file
    head_count: int | None = None
    key_length: int | None = None
    value_length: int | None = None
    head_count_kv_layers: tuple[int, ...] | None = None  # per-layer KV heads, when they differ
    sliding_window_pattern: int | None = None  # every n-th layer attends globally
    vocab_size: int | None = None
    expert_count: int | None = None
    expert_used_count: int | None = None
    feed_forward_length: int | None = None

    @property
    def is_split(self) -> bool:
        return self.split_count is not None and self.split_count > 1


class _Truncated(Exception):
    pass


class _Corrupt(Exception):
    pass


class _Cursor:
    """Bounds-checked little/big-endian reads over the mapped file."""

    __slots__ = ("buf", "end", "order", "pos")

    def __init__(self, buf: Any, end: int, order: str) -> None:
        self.buf = buf
        self.pos = 0
        self.end = end
        self.order = order

    def need(self, n: int) -> None:
        if n < 0 or self.pos + n > self.end:
            raise _Truncated(f"header ends past the end of the file (needs byte {self.pos + n}, file has {self.end})")

    def scalar(self, fmt: str) -> Any:
        s = struct.calcsize(fmt)
        self.need(s)
        (v,) = struct.unpack_from(self.order + fmt, self.buf, self.pos)
        self.pos += s
        return v

    def u32(self) -> int:
        return self.scalar("I")

    def u64(self) -> int:
        return self.scalar("Q")

    def string(self, keep: bool = True) -> str | None:
        n = self.u64()
        self.need(n)
        start = self.pos
        self.pos += n
        if not keep or n > _MAX_KEPT_STRING:
            return None
        return bytes(self.buf[start:self.pos]).decode("utf-8", errors="replace")

    def skip_strings(self, count: int) -> None:
        # Hot loop: a 262k-entry vocabulary is walked here.
        unpack = struct.Struct(self.order + "Q").unpack_from
        buf, pos, end = self.buf, self.pos, self.end
        for _ in range(count):
            if pos + 8 > end:
                raise _Truncated("string array runs past the end of the file")
            pos += 8 + unpack(buf, pos)[0]
        if pos > end:
            raise _Truncated("string array runs past the end of the file")
        self.pos = pos

    def value(self, vtype: int, depth: int = 0) -> Any:
        fmt = _SCALARS.get(vtype)
        if fmt is not None:
            return self.scalar(fmt)
        if vtype == _VT.STRING:
            return self.string()
        if vtype == _VT.ARRAY:
            if depth >= _MAX_NESTING:
                raise _Corrupt("arrays nested too deeply")
            itype = self.u32()
            count = self.u64()
            if count > self.end:  # every element takes at least one byte
                raise _Corrupt(f"array length {count} larger than the file")
            ifmt = _SCALARS.get(itype)
            if ifmt is not None:
                size = struct.calcsize(ifmt) * count
                self.need(size)
                if count <= _MAX_KEPT_ARRAY:
                    vals = list(struct.unpack_from(f"{self.order}{count}{ifmt}", self.buf, self.pos))
                else:
                    vals = None
                self.pos += size
                return vals
            if itype == _VT.STRING:
                self.skip_strings(count)
                return None
            if itype == _VT.ARRAY:
                for _ in range(count):
                    self.value(itype, depth + 1)
                return None
            raise _Corrupt(f"unknown array element type {itype}")
        raise _Corrupt(f"unknown value type {vtype}")


def _type_name(t: int) -> str:
    try:
        return gguf.GGMLQuantizationType(t).name
    except ValueError:
        return f"TYPE{t}"


def _file_type_name(ft: Any) -> str | None:
    if not isinstance(ft, int) or isinstance(ft, bool):
        return None
    try:
        name = gguf.LlamaFileType(ft).name
    except ValueError:
        return None
    if name == "GUESSED":
        return None
    return name.removeprefix("MOSTLY_").removeprefix("ALL_")


def _int_or_none(v: Any) -> int | None:
    """Per-layer arrays (e.g. head_count_kv on OpenELM) collapse to their maximum."""
    if isinstance(v, list):
        v = max((x for x in v if isinstance(x, (int, float))), default=None)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return int(v)


def _header(buf: Any, size: int) -> tuple[_Cursor, int, int, int]:
    """The cursor past the fixed header, the tensor and key counts, and the version."""
    if size < 4 or bytes(buf[:4]) != _MAGIC:
        head = bytes(buf[: min(size, 4)])
        raise _Corrupt(f"not a GGUF file (magic {head!r}, expected {_MAGIC!r})")
    if size < 24:
        raise _Truncated(f"file is {size} bytes, too short for a GGUF header")
    order = "<"
    (version,) = struct.unpack_from("<I", buf, 4)
    if version & 0xFFFF == 0:  # written on a big-endian host
        order = ">"
        (version,) = struct.unpack_from(">I", buf, 4)
    if version not in _SUPPORTED_VERSIONS:
        raise _Corrupt(f"unsupported GGUF version {version} (supported: {', '.join(map(str, _SUPPORTED_VERSIONS))})")
    cur = _Cursor(buf, size, order)
    cur.pos = 8
    n_tensors, n_kv = cur.u64(), cur.u64()
    if n_kv > size or n_tensors > size:
        raise _Corrupt(f"implausible counts ({n_kv} keys, {n_tensors} tensors) for a {size}-byte file")
    return cur, n_tensors, n_kv, version


def _key_values(cur: _Cursor, n_kv: int) -> tuple[dict[str, Any], bool]:
    """Every key and its value (None for arrays of strings and over-long ones; the
    vocabulary's size for its tokens), and whether any key is a `clip.` one."""
    buf = cur.buf
    kv: dict[str, Any] = {}
    any_clip_key = False
    for _ in range(n_kv):
        klen = cur.u64()
        if klen > _MAX_KEY_LEN:
            raise _Corrupt(f"key length {klen} at byte {cur.pos - 8} is implausible")
        cur.need(klen)
        key = bytes(buf[cur.pos:cur.pos + klen]).decode("utf-8", errors="replace")
        cur.pos += klen
        vtype = cur.u32()
        if key == _TOKENS and vtype == _VT.ARRAY:
            cur.need(12)
            kv[key] = struct.unpack_from(cur.order + "Q", buf, cur.pos + 4)[0]  # the vocabulary's size
            cur.value(vtype)
            continue
        kv[key] = cur.value(vtype)
        if key.startswith("clip."):
            any_clip_key = True
    return kv, any_clip_key


def _parse(path: Path, buf: Any, size: int) -> GGUFMeta:
    cur, n_tensors, n_kv, version = _header(buf, size)
    kv, any_clip_key = _key_values(cur, n_kv)
    type_elems: Counter[str] = Counter()
    n_params = 0
    data_end = 0
    for _ in range(n_tensors):
        cur.string(keep=False)
        n_dims = cur.u32()
        if n_dims > _MAX_DIMS:
            raise _Corrupt(f"tensor with {n_dims} dimensions at byte {cur.pos - 4}")
        n_el = 1
        for _ in range(n_dims):
            n_el *= cur.u64()
        ttype = cur.u32()
        offset = cur.u64()
        n_params += n_el
        tname = _type_name(ttype)
        type_elems[tname] += n_el
        try:
            block, type_size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(ttype)]
            data_end = max(data_end, offset + n_el * type_size // block)
        except (ValueError, KeyError):
            pass  # unknown type: cannot size it, skip the truncation check for it

    alignment = kv.get("general.alignment", gguf.GGUF_DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
        raise _Corrupt(f"invalid general.alignment {alignment!r}")
    data_start = -(-cur.pos // alignment) * alignment
    if n_tensors and data_start + data_end > size:
        raise _Truncated(f"tensor data ends at byte {data_start + data_end} but the file has {size} bytes")

    arch = kv.get("general.architecture")
    arch = arch if isinstance(arch, str) else None
    gtype = kv.get("general.type")
    gtype = gtype if isinstance(gtype, str) else None

    def arch_key(suffix: str) -> Any:
        return kv.get(f"{arch}.{suffix}") if arch else None

    quant = _file_type_name(kv.get("general.file_type"))
    if quant is None and type_elems:
        quant = type_elems.most_common(1)[0][0]
    is_projector = gtype == "mmproj" or any_clip_key or arch == "clip"
    projector_ftype = None
    if is_projector:
        projector_ftype = quant
        if projector_ftype not in _PROJECTOR_FTYPES:
            # clip files often carry no file type; their big matrices decide.
            float_elems = {t: n for t, n in type_elems.items() if t in _PROJECTOR_FTYPES}
            if float_elems and projector_ftype is None:
                projector_ftype = max(float_elems, key=lambda t: float_elems[t])
    projection_dim = None
    for k in ("clip.vision.projection_dim", "clip.audio.projection_dim"):
        projection_dim = projection_dim or _int_or_none(kv.get(k))
    name = kv.get("general.name")
    kv_heads = arch_key("attention.head_count_kv")
    kv_layers = tuple(int(x) for x in kv_heads) if isinstance(kv_heads, list) and kv_heads else None
    pattern = arch_key("attention.sliding_window_pattern")
    vocab = kv.get(_TOKENS)

    return GGUFMeta(
        path=path,
        architecture=arch,
        name=name if isinstance(name, str) else None,
        context_length=_int_or_none(arch_key("context_length")),
        block_count=_int_or_none(arch_key("block_count")),
        head_count_kv=_int_or_none(arch_key("attention.head_count_kv")),
        sliding_window=_int_or_none(arch_key("attention.sliding_window")),
        file_size=size,
        n_params=n_params if n_tensors else None,
        quantization=quant,
        is_projector=is_projector,
        split_count=_int_or_none(kv.get("split.count")),
        split_no=_int_or_none(kv.get("split.no")),
        projector_ftype=projector_ftype,
        general_type=gtype,
        embedding_length=_int_or_none(arch_key("embedding_length")),
        projection_dim=projection_dim,
        tensor_count=n_tensors,
        version=version,
        tensor_bytes=data_end,
        head_count=_int_or_none(arch_key("attention.head_count")),
        key_length=_int_or_none(arch_key("attention.key_length")),
        value_length=_int_or_none(arch_key("attention.value_length")),
        head_count_kv_layers=kv_layers if kv_layers and len(set(kv_layers)) > 1 else None,
        sliding_window_pattern=pattern if isinstance(pattern, int) and not isinstance(pattern, bool) else None,
        vocab_size=vocab if isinstance(vocab, int) and not isinstance(vocab, bool) else None,
        expert_count=_int_or_none(arch_key("expert_count")),
        expert_used_count=_int_or_none(arch_key("expert_used_count")),
        feed_forward_length=_int_or_none(arch_key("feed_forward_length")),
    )


def read_gguf_meta(path: str | os.PathLike[str]) -> GGUFMeta:
    """Read `path`'s GGUF header; raise `GGUFError` for anything unreadable.

    The file is memory-mapped read-only, so only the header pages are paged
    in; tensor data is never read.
    """
    return _mapped(Path(path), _parse)


def read_gguf_kv(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Every key/value pair of `path`'s header, as Ollama's /api/show lists them: numbers,
    strings (up to 64 KiB: the chat template), numeric arrays up to 4096 long; None for
    the arrays of strings and longer ones (the vocabulary, its merges), which are skipped
    by their lengths, never decoded. `GGUFError` for anything unreadable."""
    def key_values(p: Path, buf: Any, size: int) -> dict[str, Any]:
        cur, _, n_kv, _ = _header(buf, size)
        kv = _key_values(cur, n_kv)[0]
        if _TOKENS in kv:
            kv[_TOKENS] = None  # _key_values keeps the vocabulary's size there
        return kv
    return _mapped(Path(path), key_values)


T = TypeVar("T")


def _mapped(p: Path, parse: Callable[[Path, Any, int], T]) -> T:
    try:
        st = os.stat(p)
    except OSError as e:
        raise GGUFError(p, f"cannot stat: {e.strerror or e}") from None
    if not stat.S_ISREG(st.st_mode):
        raise GGUFError(p, "not a regular file")  # never open FIFOs/devices: they can block
    if st.st_size == 0:
        raise GGUFError(p, "empty file")
    try:
        with open(p, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            size = len(buf)
            return parse(p, buf, size)
    except _Truncated as e:
        raise GGUFError(p, f"truncated: {e}") from None
    except _Corrupt as e:
        raise GGUFError(p, str(e)) from None
    except GGUFError:
        raise
    except OSError as e:
        raise GGUFError(p, f"cannot read: {e.strerror or e}") from None
    except (ValueError, OverflowError, struct.error, MemoryError) as e:
        raise GGUFError(p, f"corrupt header: {e}") from None
