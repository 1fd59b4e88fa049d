"""The benchmark is not run by `make test` (it takes minutes), but it must
keep importing as the package moves: every module loads."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import bench


@pytest.mark.parametrize("name", sorted(m.name for m in pkgutil.iter_modules(bench.__path__)))
def test_every_bench_module_imports(name):
    importlib.import_module(f"bench.{name}")
