"""The real `llama-server --help`, read through server_args(): the options the
router relies on are found under every spelling llama.cpp accepts."""

from __future__ import annotations

from pathlib import Path

import pytest

from router.catalogue import server_args as sa
from router.catalogue.server_args import server_args

pytestmark = pytest.mark.real


@pytest.fixture()
def table(llama_server: Path) -> sa.ServerArgs:
    sa._read_table.cache_clear()
    return server_args(str(llama_server))


def test_the_real_binary_is_read_and_cached(llama_server, table):
    assert len(table) > 200
    assert server_args(str(llama_server)) is table


def test_ctx_size_under_its_short_long_and_env_names(table):
    ctx = table.option("--ctx-size")
    assert ctx is not None and ctx.takes_value and ctx.key == "--ctx-size"
    assert "-c" in ctx.names and ctx.env == "LLAMA_ARG_CTX_SIZE"
    assert table.option("-c") is ctx and table.option("c") is ctx and table.option("LLAMA_ARG_CTX_SIZE") is ctx


def test_gpu_layers(table):
    ngl = table.option("-ngl")
    assert ngl is not None and ngl.takes_value and ngl.key == "--n-gpu-layers"
    assert table.option("n-gpu-layers") is ngl and table.option("LLAMA_ARG_N_GPU_LAYERS") is ngl


def test_jinja_and_its_negation(table):
    jinja = table.option("--jinja")
    assert jinja is not None and not jinja.takes_value and jinja.negations == ("--no-jinja",)
    assert table.option("no-jinja") is jinja
    assert table.merge(["--jinja", "-c", "8192"], ["--no-jinja"]) == ["--no-jinja", "-c", "8192"]


def test_a_negation_with_short_names(table):
    kvo = table.option("--kv-offload")
    assert kvo is not None and kvo.negations[-1] == "--no-kv-offload"
    assert table.option("-nkvo") is kvo and kvo.negates("-nkvo")


def test_mmap_and_no_mmap_where_the_build_has_them(table):
    """llama.cpp replaced --mmap/--no-mmap with --load-mode; older builds still have the pair."""
    mmap = table.option("--mmap")
    if mmap is None:
        assert table.option("--load-mode") is not None and table.option("no-mmap") is None
    else:
        assert mmap.negations == ("--no-mmap",) and table.option("no-mmap") is mmap
