"""The soak's catalogue: three tiny models, one at a time (`models_max: 1`) under
a RAM budget, KV persistence in a small slot folder, short timeouts; and the
versions of it the chaos writes before a SIGHUP.

Valid versions change what a reload may change while serving (an alias, a
TTL, a model's arguments, a model removed) but never what a slot file's
fingerprint covers: `--temp` is one of the arguments the fingerprint leaves
out, so every saved file stays restorable and the soak can check each
restore against the last save. Invalid versions must be refused, and the
running catalogue kept.
"""

from __future__ import annotations

import copy
import os
import random
from pathlib import Path
from typing import Any

import yaml

from tests.support.routerproc import child_command, free_port

MODELS = ("tiny-a", "tiny-b", "tiny-c")
ALIAS = "alpha"  # tiny-a's alias in one valid version: clients ask for it, and get 404 otherwise


def soak_catalogue(models_dir: Path, slots: Path, llama_server: Path, *, read_timeout: float,
                   max_body_bytes: int, slot_save_max_bytes: int, ram: str) -> dict[str, Any]:
    return {
        "router": {
            "port": free_port(),
            "port_range": [52000, 52999],
            "models_max": 1,
            "memory": {"ram": ram, "gpu": "off"},
            "read_timeout": read_timeout,
            "connect_timeout": 5,
            "stop_timeout": 3,
            "slot_save_timeout": 4,
            "slot_save_path": str(slots),
            "slot_save_max_bytes": slot_save_max_bytes,
            "max_body_bytes": max_body_bytes,
            "watch_config": False,  # SIGHUP alone triggers a reload: one per catalogue the chaos writes
            "swap_patience": 1.0,
            "activity_size": 200,
        },
        "spawn": {"command": child_command(llama_server)},
        "models": {name: {"path": str(models_dir / f"{name}.gguf")} for name in MODELS},
    }


class Catalogue:
    def __init__(self, path: Path, base: dict[str, Any]):
        self.path = path
        self.base = base

    @property
    def port(self) -> int:
        return int(self.base["router"]["port"])

    def original(self) -> str:
        return yaml.safe_dump(self.base, sort_keys=False)

    def write(self, text: str) -> None:
        """Atomically, as an editor that saves by renaming does."""
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, self.path)

    def valid_variant(self, rng: random.Random) -> tuple[str, str]:
        data = copy.deepcopy(self.base)
        models = data["models"]
        name = rng.choice(("alias", "ttl", "restart", "remove"))
        if name == "alias":
            models["tiny-a"]["aliases"] = [ALIAS]
        elif name == "ttl":
            models["tiny-b"]["ttl"] = 2
        elif name == "restart":
            models["tiny-b"]["args"] = ["--temp", rng.choice(["0.5", "0.6", "0.7"])]
        else:
            del models["tiny-c"]
        return name, yaml.safe_dump(data, sort_keys=False)

    def invalid_variant(self, rng: random.Random) -> tuple[str, str]:
        name = rng.choice(("yaml", "unknown_key", "wrong_type", "bad_path"))
        data = copy.deepcopy(self.base)
        if name == "yaml":
            return name, self.original() + "models: [unclosed\n  - {\n"
        if name == "unknown_key":
            data["router"]["no_such_setting"] = 1
        elif name == "wrong_type":
            data["router"]["models_max"] = "two"
        else:
            data["models"]["tiny-a"]["path"] = ["not", "a", "path"]  # (a number would do: it reads as a string)
        return name, yaml.safe_dump(data, sort_keys=False)
