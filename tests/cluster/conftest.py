"""Cluster tests: Ray's simulated cluster (ray.cluster_utils) with real llama-server children.

The Ray tests carry the `cluster` mark and run under `make test` and `make test-cluster`
(LLAMA_ROUTER_TEST_CLUSTER=1); without Ray they are skipped, loudly: the
terminal summary says so in red. On CI a missing Ray fails them instead.
The pure placement tests (test_placement_unit.py) need no Ray and always run.

Everything the Ray tests start stays on loopback: every simulated node, the
drivers, the agents and their llama-server children bind to 127.0.0.1, and a
test whose processes listen anywhere else (this machine's own address, or
every address) fails (`listens_on_loopback_only`)."""

from __future__ import annotations

import importlib.util
import ipaddress
import os
import threading
from pathlib import Path

import psutil
import pytest

RUN = os.environ.get("LLAMA_ROUTER_TEST_CLUSTER") == "1"
LOOPBACK = "127.0.0.1"
# Read by Ray when it is imported: without it Ray takes "127.0.0.1" (in ray.init's address and
# `_node_ip_address`) to mean this machine's own network address. Set before the first import of
# Ray, here and in every front process the tests start (they inherit it).
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"


def _have_ray() -> bool:
    if not RUN:
        return importlib.util.find_spec("ray") is not None
    try:  # a broken install is the same as none
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


HAVE_RAY = _have_ray()
NO_RAY = "RAY IS NOT INSTALLED: the cluster tests were SKIPPED (pip install -e '.[cluster]')"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("cluster") is None:
            continue
        if not RUN:
            item.add_marker(pytest.mark.skip(reason="Ray cluster tests run with `make test-cluster`"))
        elif not HAVE_RAY and os.environ.get("CI") != "true":
            item.add_marker(pytest.mark.skip(reason=NO_RAY))


def pytest_terminal_summary(terminalreporter) -> None:  # type: ignore[no-untyped-def]
    if RUN and not HAVE_RAY:
        terminalreporter.write_sep("!", NO_RAY, red=True, bold=True)


def _on_loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip.split("%")[0])
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:127.0.0.1
    return (mapped or address).is_loopback


def _listening_sockets() -> dict[int, tuple[str, int]]:
    """inode -> (address, port) of every listening TCP socket of this network namespace,
    read once (psutil reads these tables again for each process: far too slow to sample)."""
    out = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if f[3] != "0A":  # TCP_LISTEN
                continue
            address, port = f[1].split(":")
            raw = bytes.fromhex(address)  # each 32-bit word in host order (little-endian)
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            out[int(f[9])] = (str(ipaddress.ip_address(raw)), int(port, 16))
    return out


def _socket_inodes(pid: int) -> set[int]:
    out = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return out
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            out.add(int(target[8:-1]))
    return out


class ListenWatch:
    """Every TCP socket that this process or any process under it (Ray's nodes and workers,
    the agents, their llama-server children, the fronts) listens on, sampled until stopped."""

    EVERY_S = 0.5

    def __init__(self) -> None:
        self.seen: dict[tuple[int, str, int], str] = {}  # (pid, address, port) -> process name
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="listen-watch")

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.EVERY_S)

    def sample(self) -> None:
        me = psutil.Process()
        listening = _listening_sockets()
        for p in [me, *me.children(recursive=True)]:
            for inode in _socket_inodes(p.pid) & listening.keys():
                ip, port = listening[inode]
                try:
                    self.seen[(p.pid, ip, port)] = p.name()
                except psutil.NoSuchProcess:
                    pass

    def listening(self, name: str) -> list[str]:
        """The addresses processes called `name` listened on."""
        return sorted({ip for (_, ip, _), n in self.seen.items() if n == name})

    def elsewhere(self) -> list[str]:
        return sorted(f"{n} (pid {pid}) on {ip}:{port}" for (pid, ip, port), n in self.seen.items()
                      if not _on_loopback(ip))

    def __enter__(self) -> ListenWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        self.sample()


@pytest.fixture(autouse=True)
def listens_on_loopback_only(request: pytest.FixtureRequest):
    """For each Ray test, from its first fixture to its last: nothing it started listens off loopback."""
    if not RUN or request.node.get_closest_marker("cluster") is None:
        yield None
        return
    with ListenWatch() as watch:
        yield watch
    assert not watch.elsewhere(), f"listening on a non-loopback address: {watch.elsewhere()}"
