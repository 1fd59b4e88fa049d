"""Managers over fake children (fakechild.py) for the core's tests: a catalogue whose model
files exist, and a fixture that makes managers and shuts them down after the test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from router.catalogue.config import Config
from router.catalogue.parse import parse_config
from router.core.manager import ModelManager
from router.upstream.client import ChildClient
from router.upstream.pool import UpstreamPool
from tests.unit.core.fakechild import Behaviour, FakeFactory


def fake_catalogue(tmp_path: Path, models: dict[str, dict[str, Any]], selectors: Any = None,
                   **router: Any) -> Config:
    """`models` ({name: keys}) with a file each, started by /bin/sh, one loaded at a time
    and no memory budget (unless `router` says otherwise); `selectors` when given."""
    for n in models:
        (tmp_path / f"{n}.gguf").write_bytes(b"GGUF")
    return parse_config({
        "router": {"models_max": 1, "kv_persistence": False, "swap_patience": 0,
                   "memory": {"ram": "off", "gpu": "off"}, **router},
        "spawn": {"command": ["/bin/sh", "$path", "$port"]},
        "models": {n: {"path": str(tmp_path / f"{n}.gguf"), **m} for n, m in models.items()},
        **({"selectors": selectors} if selectors is not None else {})})


MakeManager = Callable[..., tuple[ModelManager, FakeFactory]]


@pytest.fixture
async def fake_managers(tmp_path: Path) -> AsyncIterator[MakeManager]:
    """make(models, selectors=None, router=None, **{model: Behaviour}) -> (manager, factory)."""
    made: list[tuple[ModelManager, UpstreamPool]] = []

    def make(models: dict[str, dict[str, Any]], selectors: dict[str, Any] | None = None,
             router: dict[str, Any] | None = None, **behaviours: Behaviour) -> tuple[ModelManager, FakeFactory]:
        factory = FakeFactory()
        factory.behaviours.update(behaviours)
        pool = UpstreamPool()
        m = ModelManager(fake_catalogue(tmp_path, models, selectors, **(router or {})), ChildClient(pool), 8082,
                         child_factory=factory)
        made.append((m, pool))
        return m, factory

    yield make
    for m, pool in made:
        await m.shutdown()
        await pool.close()
