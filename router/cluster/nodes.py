"""Each Ray node's settings, read from its labels (`ray start --labels`).

Pure: `node_settings` turns one entry of `ray.nodes()` into `NodeSettings`;
`node_config` lays them over the shared catalogue for that node's agent, and
`rebind` points its children's `--host` at the node's address. A
node without labels gets the catalogue's own `router.port_range` and
`router.memory` (`ram: auto` is then that node's RAM less the reserve,
read on the node itself).

| label | meaning | default |
| --- | --- | --- |
| `llama-router/ram` | RAM budget of that node (`12GiB`, `512MiB`, `auto`, `off`) | `router.memory.ram` |
| `llama-router/ports` | the ports its children take (`9100-9199`) | `router.port_range` |
| `llama-router/address` | the address children bind to and the front connects to | the node's Ray address |
| `llama-router/name` | the host name in `/v1/models`, logs and metrics | `<address>-<node id prefix>` |
| `llama-router/serve` | `false`: run no models there (a front-only head node) | `true` |
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from router.catalogue.config import Config, default_slot_save_path
from router.catalogue.values import parse_size

PREFIX = "llama-router/"


class NodeLabelError(ValueError):
    """A node's `llama-router/...` label cannot be read; the message names node, label and expectation."""


@dataclass(frozen=True)
class NodeSettings:
    node_id: str
    name: str
    address: str
    ram: int | str | None = "auto"  # None: no RAM budget on that node
    port_range: tuple[int, int] | None = None  # None: the catalogue's router.port_range
    serve: bool = True
    ram_given: bool = False  # the label set `ram` (else the catalogue's router.memory.ram applies)


def node_settings(node: dict[str, Any]) -> NodeSettings:
    """One `ray.nodes()` entry as the settings of the agent that runs there."""
    node_id = str(node["NodeID"])
    labels = {k.removeprefix(PREFIX): str(v) for k, v in (node.get("Labels") or {}).items()
              if k.startswith(PREFIX)}
    address = labels.get("address") or str(node.get("NodeManagerAddress") or "127.0.0.1")
    name = labels.get("name") or f"{address}-{node_id[:6]}"

    def fail(label: str, expected: str) -> NodeLabelError:
        return NodeLabelError(f"node {name}: label {PREFIX}{label}={labels[label]!r}: expected {expected}")

    ram: int | str | None = "auto"
    if "ram" in labels:
        value = labels["ram"].strip().lower()
        if value in ("auto", "off"):
            ram = None if value == "off" else "auto"
        else:
            ram = parse_size(value)
            if ram is None:
                raise fail("ram", "a size (12GiB, 512MiB), auto or off")
    ports = None
    if "ports" in labels:
        low, _, high = labels["ports"].partition("-")
        if not (low.strip().isdigit() and high.strip().isdigit() and 1024 <= int(low) <= int(high) <= 65535):
            raise fail("ports", "a range of ports LOW-HIGH within 1024-65535")
        ports = (int(low), int(high))
    serve = labels.get("serve", "true").strip().lower()
    if serve not in ("true", "false"):
        raise fail("serve", "true or false")
    return NodeSettings(node_id, name, address, ram, ports, serve == "true", "ram" in labels)


def node_config(config: Config, node: NodeSettings) -> Config:
    """The catalogue as this node's agent runs it: its port range, its RAM budget, and
    its own folder for KV cache files and memory figures (two agents on one machine,
    or on one shared home folder, never write each other's files)."""
    r = config.router
    memory = replace(r.memory, ram=node.ram) if node.ram_given else r.memory
    base = Path(r.slot_save_path).expanduser() if r.slot_save_path else default_slot_save_path()
    return config.with_router(port_range=node.port_range or r.port_range, memory=memory,
                              slot_save_path=str(base.parent / "nodes" / node.node_id[:12] / base.name))


def rebind(argv: tuple[str, ...], address: str) -> tuple[str, ...]:
    """`--host 127.0.0.1` (the default command's `$host`) becomes `--host ADDRESS`;
    a host the catalogue chose itself (0.0.0.0...) is kept."""
    out = list(argv)
    for i, arg in enumerate(out[:-1]):
        if arg == "--host" and out[i + 1] == "127.0.0.1":
            out[i + 1] = address
    return tuple(out)
