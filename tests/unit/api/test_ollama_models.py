"""The catalogue's models as Ollama describes them (router/api/ollama_models.py),
read from real GGUF files written by tests/support/tinygguf.py."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

import pytest

from router.api.ollama_models import (
    capabilities,
    expires_at,
    facts,
    human_number,
    model_info,
    name_candidates,
    ollama_name,
    parameters,
    ps_entry,
    show,
)
from router.catalogue.config import ModelSpec
from router.discovery.gguf_meta import read_gguf_kv
from tests.support.tinygguf import write_split_model, write_tiny_model, write_tiny_projector


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("ollama") / "tiny.gguf", name="tiny", seed=3)


def test_names_carry_a_tag():
    assert ollama_name("gemma") == "gemma:latest"
    assert ollama_name("ggml-org/gemma-3-270m-GGUF:Q8_0") == "ggml-org/gemma-3-270m-GGUF:Q8_0"
    assert ollama_name("a:b/c") == "a:b/c:latest"  # the tag is in the last part of the name


def test_the_names_a_client_may_mean():
    assert name_candidates("gemma:latest") == ["gemma:latest", "gemma"]
    assert name_candidates("hf.co/acme/x:Q4_K_M") == ["hf.co/acme/x:Q4_K_M", "acme/x:Q4_K_M"]
    assert name_candidates("HF.co/acme/x:latest") == ["HF.co/acme/x:latest", "acme/x:latest", "HF.co/acme/x",
                                                      "acme/x"]


@pytest.mark.parametrize(("n", "text"), [(268_098_176, "268.10M"), (7_000_000_000, "7B"), (8_030_261_248, "8.0B"),
                                         (139_584, "140K"), (3_000_000, "3M"), (999, "999")])
def test_parameter_size_is_ollamas_human_number(n, text):
    assert human_number(n) == text


def test_a_tags_entry_from_the_gguf_header(tiny):
    entry = facts(ModelSpec(name="tiny", path=str(tiny)))
    assert entry["name"] == entry["model"] == "tiny:latest"
    assert entry["size"] == tiny.stat().st_size
    assert len(entry["digest"]) == 64
    assert datetime.fromisoformat(entry["modified_at"]).timestamp() == pytest.approx(tiny.stat().st_mtime, abs=1e-3)
    assert entry["details"] == {"parent_model": "", "format": "gguf", "family": "llama", "families": ["llama"],
                                "parameter_size": "140K", "quantization_level": "F32"}


def test_the_digest_changes_with_the_file(tmp_path):
    path = write_tiny_model(tmp_path / "m.gguf", seed=1)
    before = facts(ModelSpec(name="m", path=str(path)))["digest"]
    os.utime(path, ns=(1, 1))
    assert facts(ModelSpec(name="m", path=str(path)))["digest"] != before


def test_a_split_model_counts_every_shard(tmp_path):
    shards = write_split_model(tmp_path, "split", n_shards=2)
    whole = facts(ModelSpec(name="split", path=str(shards[0])))
    assert len(shards) == 2 and whole["size"] == sum(p.stat().st_size for p in shards)
    assert whole["details"]["parameter_size"] == "140K"  # every shard's tensors, not the first's


def test_show_describes_the_model_and_its_projector(tiny, tmp_path):
    projector = write_tiny_projector(tmp_path / "mmproj.gguf")
    spec = ModelSpec(name="tiny", path=str(tiny), mmproj=str(projector))
    out = show(spec, ["llama-server", "--ctx-size", "512", "--temp", "0.7"])
    assert out["template"].startswith("{%- for message in messages")
    assert out["model_info"]["general.architecture"] == "llama"
    assert out["model_info"]["llama.context_length"] == 2048
    assert out["model_info"]["general.parameter_count"] == 139_584
    assert out["model_info"]["tokenizer.ggml.tokens"] == [] and out["model_info"]["tokenizer.ggml.scores"] == []
    assert "tokenizer.chat_template" not in out["model_info"]
    assert out["capabilities"] == ["completion", "vision"]
    assert out["details"]["families"] == ["llama", "clip"]
    assert out["parameters"].splitlines() == [f"{'num_ctx':<30} 512", f"{'temperature':<30} 0.7"]
    assert "PARAMETER num_ctx" in out["modelfile"] and f"FROM {tiny}" in out["modelfile"]
    assert any(k.startswith("clip.") for k in out["projector_info"])
    assert len(show(spec, [], verbose=True)["model_info"]["tokenizer.ggml.scores"]) == 512


def test_capabilities_from_the_template_and_the_header():
    spec = ModelSpec(name="m")
    qwen = "{% if tools %}...{% endif %}<think>\n"
    assert capabilities(spec, {"tokenizer.chat_template": qwen}, []) == ["completion", "tools", "thinking"]
    embedder = {"general.architecture": "bert", "bert.pooling_type": 1}
    assert capabilities(spec, embedder, []) == ["embedding"]
    assert capabilities(spec, {"tokenizer.ggml.fim_pre_token_id": 5}, ["--embeddings"]) == [
        "completion", "embedding", "insert"]


def test_model_info_rounds_float32_values(tiny):
    info = model_info(read_gguf_kv(tiny), None)
    assert info["llama.attention.layer_norm_rms_epsilon"] == 1e-05
    assert parameters(["-c", "2048", "--seed=4"]) == f"{'num_ctx':<30} 2048\n{'seed':<30} 4"


def test_a_ps_entry_and_when_it_expires(tiny):
    spec = ModelSpec(name="tiny", path=str(tiny))
    entry = ps_entry(spec, {"ram": 100, "gpu0": 300}, 50, expires_at(1_000_000.0, 10.0, 300.0), 512)
    assert entry["size"] == 400 and entry["size_vram"] == 300 and entry["context_length"] == 512
    assert datetime.fromisoformat(entry["expires_at"]).timestamp() == 1_000_290.0  # idle 10 s of 300
    assert ps_entry(spec, {}, 50, "", None)["size"] == 50  # no figure: the child's resident memory
    assert datetime.fromisoformat(expires_at(0.0, None, 0.0)).year == 2262  # never: Go's longest duration
