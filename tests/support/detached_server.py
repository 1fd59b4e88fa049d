"""A STAND-IN for a container runtime (`docker run` / `docker stop`), to test
models with a fixed `port` and a `stop_command` without Docker: `start` runs
a real server (llama-server) detached from itself, in its own session, as a
container outlives the `docker` command that started it; `stop` stops it by
name, as `docker stop NAME` does.

    python -m tests.support.detached_server start --name N --dir D [--attached] -- SERVER ARGV...
    python -m tests.support.detached_server stop --name N --dir D

`start` writes D/N.pid (the server's pid) and D/N.log (its output). Without
`--attached` it returns at once, exit code 0 (`docker run -d`); with it, it
waits for the server and exits with its code (`docker run` in the
foreground). `stop` sends SIGTERM, waits up to 10 s, then SIGKILL, and
removes the pid file.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

STOP_WAIT_S = 10.0


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited
    except OSError:
        return False


def start(name: str, directory: Path, attached: bool, argv: list[str]) -> int:
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / f"{name}.log", "ab") as out:
        server = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    (directory / f"{name}.pid").write_text(str(server.pid))
    print(f"started {name}: pid {server.pid}", flush=True)
    if not attached:
        return 0
    signal.signal(signal.SIGTERM, lambda *_: None)  # `docker run` waits for its container, stopped by `docker stop`
    return server.wait()


def stop(name: str, directory: Path) -> int:
    pid_file = directory / f"{name}.pid"
    try:
        pid = int(pid_file.read_text())
    except (OSError, ValueError):
        print(f"no such container: {name}", file=sys.stderr)
        return 1
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + STOP_WAIT_S
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if alive(pid):
        os.kill(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)
    print(f"stopped {name} (pid {pid})", flush=True)
    return 0


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("action", choices=("start", "stop"))
    p.add_argument("--name", required=True)
    p.add_argument("--dir", required=True, type=Path)
    p.add_argument("--attached", action="store_true")
    own, server = sys.argv[1:], []
    if "--" in own:  # the server's command line, after --
        own, server = own[:own.index("--")], own[own.index("--") + 1:]
    args = p.parse_args(own)
    if args.action == "start":
        return start(args.name, args.dir, args.attached, server)
    return stop(args.name, args.dir)


if __name__ == "__main__":
    sys.exit(main())
