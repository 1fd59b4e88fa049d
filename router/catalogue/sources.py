"""The catalogue as served: the YAML entries plus the models that the
configured sources (folders, the Hugging Face cache) hold right now."""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from router.catalogue.config import Config, ModelSpec
from router.catalogue.importer import RescanPlan, rescan
from router.discovery.gguf_meta import GGUFError, GGUFMeta, read_gguf_meta
from router.discovery.scan import DiscoveredModel, scan_hf_cache, scan_models_dir

log = logging.getLogger("router.sources")


def scan_sources(config: Config) -> list[DiscoveredModel]:
    found: list[DiscoveredModel] = []
    for d in config.sources.dirs:
        result = scan_models_dir(d)
        found += result.models
        for path, reason in result.skipped:
            log.warning("skipped %s: %s", path, reason)
    if config.sources.hf_cache:
        result = scan_hf_cache()
        found += result.models
        for path, reason in result.skipped:
            log.debug("HF cache: skipped %s: %s", path, reason)
    return found


def discover(config: Config, found: list[DiscoveredModel] | None = None) -> tuple[Config, RescanPlan]:
    """Merge what the sources hold into the catalogue.

    New files become `auto` entries; `auto` entries whose files are gone are
    dropped; `manual` entries and the settings of entries that stay are kept.
    """
    if found is None:
        found = scan_sources(config)
    catalogue = {name: {"path": spec.path, "state": spec.state} for name, spec in config.models.items()}
    plan = rescan(catalogue, found)
    models = {n: s for n, s in config.models.items() if n not in plan.removed}
    taken = {a for s in models.values() for a in s.aliases}
    for name, entry in plan.added.items():
        if name in taken:
            continue
        models[name] = ModelSpec(name=name, path=entry["path"], mmproj=entry.get("mmproj"), state="auto")
    return replace(config, models=models), plan


@lru_cache(maxsize=1024)
def _meta(path: str, size: int, mtime_ns: int) -> GGUFMeta | None:
    try:
        return read_gguf_meta(path)
    except GGUFError as e:
        log.debug("no metadata for %s: %s", path, e)
        return None


def gguf_meta(path: str | None) -> GGUFMeta | None:
    """Metadata of a model file, read once per version of the file."""
    if not path:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return _meta(path, st.st_size, st.st_mtime_ns)


def model_card(spec: ModelSpec) -> dict[str, Any]:
    """What /v1/models tells about a model that may not be running."""
    meta = gguf_meta(spec.path)
    modalities = ["text", "image"] if spec.mmproj else ["text"]
    card: dict[str, Any] = {"architecture": {"input_modalities": modalities, "output_modalities": ["text"]}}
    if meta is not None:
        card["meta"] = {
            "architecture": meta.architecture,
            "n_ctx_train": meta.context_length,
            "n_params": meta.n_params,
            "size": meta.file_size,
            "quantization": meta.quantization,
            "n_layer": meta.block_count,
            "sliding_window": meta.sliding_window,
        }
        card["name"] = meta.name
    card["state"] = spec.state
    card["mmproj"] = Path(spec.mmproj).name if spec.mmproj else None
    return card
