"""Cluster tests: Ray's simulated cluster (ray.cluster_utils) with real llama-server children.

The Ray tests carry the `cluster` mark and run under `make test` and `make test-cluster`
(LLAMA_ROUTER_TEST_CLUSTER=1); without Ray they are skipped, loudly: the
terminal summary says so in red. On CI a missing Ray fails them instead.
The pure placement tests (test_placement_unit.py) need no Ray and always run."""

from __future__ import annotations

import importlib.util
import os

import pytest

RUN = os.environ.get("LLAMA_ROUTER_TEST_CLUSTER") == "1"


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
