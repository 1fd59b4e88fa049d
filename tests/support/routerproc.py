"""Run a real llama-router process for tests, and prove it cleaned up."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil
import yaml

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_command(binary: str | os.PathLike[str], *extra: str, ctx: int = 512) -> list[str]:
    """A spawn command for tests: small context, one slot, so children start fast."""
    return [str(binary), "--model", "$path", "--alias", "$name", "--host", "$host", "--port", "$port",
            "--ctx-size", str(ctx), "-np", "1", *extra]


def write_config(path: Path, models: dict[str, Any], *, router: dict[str, Any] | None = None,
                 spawn: dict[str, Any] | None = None, **top: Any) -> Path:
    # Saved KV caches go next to the config, never into the user's cache folder.
    data: dict[str, Any] = {"router": {"port": free_port(), "port_range": [51000, 51999],
                                       "slot_save_path": str(path.parent / "slots"), **(router or {})},
                            "models": models, **top}
    if spawn:
        data["spawn"] = spawn
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


class RouterProcess:
    """`python -m router -c CONFIG` in its own process, on the config's port."""

    def __init__(self, config: Path, log_path: Path, *args: str, env: dict[str, str] | None = None):
        self.config = config
        data = yaml.safe_load(config.read_text())
        self.port = data["router"]["port"]
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        with open(log_path, "wb") as log:  # the router writes to its own copy of the descriptor
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "router", "--config", str(config), "--log-level", "debug", *args],
                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            )
        self.ps = psutil.Process(self.proc.pid)

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> RouterProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"router exited with {self.proc.returncode}:\n{self.log(8000)}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.05)
        raise TimeoutError(f"router not ready in {timeout} s:\n{self.log(8000)}")

    def log(self, tail: int | None = None) -> str:
        text = self.log_path.read_text(errors="replace")
        return text[-tail:] if tail else text

    def children(self) -> list[psutil.Process]:
        try:
            return self.ps.children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Stop the router and make sure no child it started survives."""
        kids = self.children()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        _, alive = psutil.wait_procs(kids, timeout=15)
        for p in alive:  # never leave a process behind, even when a test fails
            p.kill()
        assert not alive, f"children outlived the router: {[p.pid for p in alive]}"
        return self.proc.returncode

    def __enter__(self) -> RouterProcess:
        return self.wait_ready()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
