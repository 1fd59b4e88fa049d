"""GGUF metadata reading: real files written with gguf.GGUFWriter.

`write_gguf` / `write_projector` here are also used by the discovery,
importer and HF tests to build folder layouts.
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import gguf
import numpy as np
import pytest

from router.discovery.gguf_meta import GGUFError, GGUFMeta, read_gguf_meta
from tests.support.ggufwriter import write_gguf, write_projector


def test_reads_architecture_name_context_and_attention_shape(tmp_path):
    (p,) = write_gguf(tmp_path / "m.gguf", arch="qwen3", name="Qwen Tiny", context_length=32768,
                      block_count=28, head_count_kv=8, sliding_window=4096)
    m = read_gguf_meta(p)
    assert (m.architecture, m.name, m.context_length, m.block_count, m.head_count_kv, m.sliding_window) == (
        "qwen3", "Qwen Tiny", 32768, 28, 8, 4096)
    assert m.path == p and m.file_size == p.stat().st_size
    assert not m.is_projector and m.split_count is None and m.split_no is None


def test_missing_keys_read_as_none(tmp_path):
    (p,) = write_gguf(tmp_path / "m.gguf", name=None, context_length=None, block_count=None, head_count_kv=None)
    m = read_gguf_meta(p)
    assert (m.name, m.context_length, m.block_count, m.head_count_kv, m.sliding_window) == (None,) * 5


def test_quantization_is_named_from_general_file_type(tmp_path):
    (p,) = write_gguf(tmp_path / "m.gguf", file_type=gguf.LlamaFileType.MOSTLY_Q4_K_M)
    assert read_gguf_meta(p).quantization == "Q4_K_M"
    (p,) = write_gguf(tmp_path / "f.gguf", file_type=gguf.LlamaFileType.ALL_F32)
    assert read_gguf_meta(p).quantization == "F32"


def test_quantization_without_file_type_is_the_type_holding_most_weights(tmp_path):
    # three small F32 norms, one big Q4_K matrix: by element count Q4_K dominates
    (p,) = write_gguf(tmp_path / "m.gguf", tensors=(("F32", 1), ("F32", 1), ("F32", 1), ("Q4_K", 4)))
    assert read_gguf_meta(p).quantization == "Q4_K"


def test_n_params_is_the_sum_of_tensor_elements(tmp_path):
    (p,) = write_gguf(tmp_path / "m.gguf", tensors=(("F32", 1), ("Q4_K", 2), ("F16", 3)))
    m = read_gguf_meta(p)
    assert m.n_params == 32 + 2 * 256 + 3 * 32
    assert m.tensor_count == 3


@pytest.mark.parametrize("ftype", ["BF16", "F16", "F32"])
@pytest.mark.parametrize("style", ["type", "clip"])
def test_projector_is_recognised_and_its_precision_read_from_tensors(tmp_path, ftype, style):
    p = write_projector(tmp_path / "p.gguf", ftype, style=style, projection_dim=2048)
    m = read_gguf_meta(p)
    assert m.is_projector
    assert m.projector_ftype == ftype
    assert m.projection_dim == 2048


@pytest.mark.parametrize("ftype", ["BF16", "F16", "F32"])
def test_projector_precision_prefers_the_file_type_key(tmp_path, ftype):
    p = write_projector(tmp_path / "p.gguf", ftype, ftype_key=True)
    assert read_gguf_meta(p).projector_ftype == ftype


def test_split_shards_report_count_and_zero_based_number(tmp_path):
    paths = write_gguf(tmp_path / "big.gguf", shards=3)
    assert [p.name for p in paths] == [f"big-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    metas = [read_gguf_meta(p) for p in paths]
    assert [(m.split_no, m.split_count, m.is_split) for m in metas] == [(0, 3, True), (1, 3, True), (2, 3, True)]
    assert metas[0].architecture == "llama"


def test_big_endian_files_read_like_little_endian_ones(tmp_path):
    (p,) = write_gguf(tmp_path / "be.gguf", context_length=1234, endianess=gguf.GGUFEndian.BIG)
    m = read_gguf_meta(p)
    assert (m.architecture, m.context_length, m.n_params) == ("llama", 1234, 32)


def test_meta_is_frozen_and_hashable(tmp_path):
    (p,) = write_gguf(tmp_path / "m.gguf")
    m = read_gguf_meta(p)
    with pytest.raises(AttributeError):
        m.name = "x"  # type: ignore[misc]
    assert isinstance(hash(m), int) and isinstance(m, GGUFMeta)


# ------------------------------------------------------------- failures


def _assert_gguf_error(path: Path, *fragments: str) -> GGUFError:
    with pytest.raises(GGUFError) as ei:
        read_gguf_meta(path)
    err = ei.value
    assert isinstance(err, ValueError)
    assert err.path == Path(path) and str(path) in str(err)
    for f in fragments:
        assert f in err.reason
    return err


def test_text_file_named_gguf_is_reported_as_not_gguf(tmp_path):
    p = tmp_path / "notes.gguf"
    p.write_text("this is not a model\n")
    _assert_gguf_error(p, "not a GGUF file")


def test_empty_file_is_reported(tmp_path):
    p = tmp_path / "empty.gguf"
    p.touch()
    _assert_gguf_error(p, "empty")


def test_file_cut_inside_the_header_is_truncated(tmp_path):
    (p,) = write_gguf(tmp_path / "m.gguf", extra={"general.description": "x" * 200})
    data = p.read_bytes()
    p.write_bytes(data[:120])
    _assert_gguf_error(p, "truncated")


def test_file_cut_inside_tensor_data_is_truncated(tmp_path):
    (p,) = write_gguf(tmp_path / "m.gguf", tensors=(("F32", 64),))
    data = p.read_bytes()
    p.write_bytes(data[: len(data) - 100])
    _assert_gguf_error(p, "truncated", "tensor data")


def test_unsupported_version_is_reported(tmp_path):
    (p,) = write_gguf(tmp_path / "m.gguf")
    data = bytearray(p.read_bytes())
    data[4:8] = (99).to_bytes(4, "little")
    p.write_bytes(bytes(data))
    _assert_gguf_error(p, "version 99")


def test_missing_file_directory_and_fifo_raise_gguferror(tmp_path):
    _assert_gguf_error(tmp_path / "nope.gguf", "cannot stat")
    (tmp_path / "dir.gguf").mkdir()
    _assert_gguf_error(tmp_path / "dir.gguf", "not a regular file")
    fifo = tmp_path / "pipe.gguf"
    os.mkfifo(fifo)
    _assert_gguf_error(fifo, "not a regular file")  # and must not block opening it


def test_every_truncation_and_random_corruption_raises_only_gguferror(tmp_path):
    (src,) = write_gguf(tmp_path / "m.gguf", sliding_window=64, extra={"general.description": "d" * 40})
    good = src.read_bytes()
    # A new file per case: rewriting one file in place makes ext4 flush on every truncate.
    for n in range(1, len(good)):
        p = tmp_path / f"cut{n}.gguf"
        p.write_bytes(good[:n])
        with pytest.raises(GGUFError):
            read_gguf_meta(p)
    rng = random.Random(1234)
    for i in range(400):
        data = bytearray(good)
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(4, len(data))] = rng.randrange(256)
        p = tmp_path / f"flip{i}.gguf"
        p.write_bytes(bytes(data))
        try:
            read_gguf_meta(p)
        except GGUFError:
            pass


# ------------------------------------------------------------------ speed


def test_header_with_a_200k_token_vocabulary_reads_in_well_under_a_second(tmp_path):
    p = tmp_path / "vocab.gguf"
    w = gguf.GGUFWriter(p, "llama")
    w.add_context_length(8192)
    w.add_array("tokenizer.ggml.tokens", [f"tok{i}" for i in range(200_000)])
    w.add_array("tokenizer.ggml.scores", [0.0] * 200_000)
    w.add_tensor("t", np.ones(32, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    start = time.perf_counter()
    m = read_gguf_meta(p)
    elapsed = time.perf_counter() - start
    assert m.context_length == 8192
    assert elapsed < 0.25, f"took {elapsed:.3f}s"


@pytest.mark.gemma
def test_real_gemma_270m_metadata_reads_fast(gemma):
    start = time.perf_counter()
    m = read_gguf_meta(gemma)
    elapsed = time.perf_counter() - start
    assert m.file_size > 200_000_000
    assert (m.architecture, m.context_length, m.block_count, m.head_count_kv, m.sliding_window) == (
        "gemma3", 32768, 18, 1, 512)
    assert m.quantization == "Q4_K_M" and not m.is_projector
    assert 260_000_000 < (m.n_params or 0) < 280_000_000
    assert elapsed < 0.5, f"took {elapsed:.3f}s"
