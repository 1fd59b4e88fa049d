"""The catalogue as served: the YAML entries plus the models that the
configured sources (folders, the Hugging Face cache) hold right now."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from router.catalogue.config import UNSETTLED, Capabilities, Config, DiscoveryReport, ModelSpec
from router.catalogue.importer import CatalogueWriteError, RescanPlan, import_models, rescan
from router.discovery.gguf_meta import GGUFError, GGUFMeta, read_gguf_meta
from router.discovery.scan import DiscoveredModel, scan_hf_cache, scan_import_dir, scan_models_dir

log = logging.getLogger("router.sources")


# A file changed more recently than this is still being copied or downloaded.
SETTLE_S = 1.0


def scan_sources(config: Config, skipped: list[tuple[str, str]] | None = None) -> list[DiscoveredModel]:
    found: list[DiscoveredModel] = []
    for d in config.sources.dirs:
        result = scan_models_dir(d)
        found += result.models
        for path, reason in result.skipped:
            log.warning("skipped %s: %s", path, reason)
            if skipped is not None:
                skipped.append((str(path), reason))
    if config.sources.hf_cache:
        result = scan_hf_cache()
        found += result.models
        for path, reason in result.skipped:
            log.debug("HF cache: skipped %s: %s", path, reason)
    return found


def load_served(load: Callable[[], Config], settle_s: float = SETTLE_S) -> Config:
    """The catalogue as served, read afresh (start-up, reload, rescan, folder watch).

    1. New models in `sources.import_dirs` are written into the file as
       manual entries (with the import's rules); nothing a user wrote changes.
    2. The file is read, and what the other sources hold is merged in (`discover`).
    3. Models whose file is gone are marked missing; the report says what was
       imported, skipped and why, and what is missing.
    """
    config = load()
    skipped: list[tuple[str, str]] = []
    imported = _import_new_files(config, settle_s, skipped)
    if imported:
        config = load()
    config, _ = discover(config, skipped=skipped)
    for name in imported:
        log.info("[%s] imported from a watched folder: %s", name, config.models[name].path if name in config.models
                 else "?")
    for name in sorted(config.missing):
        log.warning("[%s] missing: its file %s is gone; hidden until it comes back", name, config.models[name].path)
    report = DiscoveryReport(imported=tuple(imported), skipped=tuple(skipped), missing=tuple(sorted(config.missing)))
    return replace(config, report=report)


def _import_new_files(config: Config, settle_s: float, skipped: list[tuple[str, str]]) -> list[str]:
    """Write the models new in the import folders into the catalogue file; their names."""
    if not config.sources.import_dirs or config.source.startswith("<"):
        return []
    known = {os.path.realpath(s.path) for s in config.models.values() if s.path}
    found: list[DiscoveredModel] = []
    now = time.time()
    for d in config.sources.import_dirs:
        result = scan_import_dir(d)
        for m in result.models:
            if os.path.realpath(m.path) in known:
                continue
            age = now - max(_mtime(p) for p in (*m.shards, m.path, *([m.mmproj] if m.mmproj else [])))
            if age < settle_s:  # still being copied or downloaded: taken at the next look
                result.skipped.append((m.path, f"{UNSETTLED} (changed {max(age, 0):.1f} s ago); "
                                               "taken once it settles"))
            else:
                found.append(m)
        for path, reason in result.skipped:
            log.info("import folder: skipped %s: %s", path, reason)
            skipped.append((str(path), reason))
    try:
        report = import_models(config.source, found)
    except CatalogueWriteError as e:
        log.error("cannot add new models of the import folders: %s", e)
        skipped.extend((str(m.path), f"not written: {e.reason}") for m in found)
        return []
    return report.added


def _mtime(path: Any) -> float:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return time.time()  # vanished meanwhile: treat as unsettled


def discover(config: Config, found: list[DiscoveredModel] | None = None,
             skipped: list[tuple[str, str]] | None = None) -> tuple[Config, RescanPlan]:
    """Merge what the sources hold into the catalogue.

    New files become `auto` entries; `auto` entries whose files are gone are
    dropped; `manual` entries and the settings of entries that stay are kept;
    a model whose file is gone is marked missing.
    """
    if found is None:
        found = scan_sources(config, skipped)
    catalogue = {name: {"path": spec.path, "state": spec.state} for name, spec in config.models.items()}
    plan = rescan(catalogue, found)
    models = {n: s for n, s in config.models.items() if n not in plan.removed}
    taken = {a for s in models.values() for a in s.aliases}
    for name, entry in plan.added.items():
        if name in taken:
            continue
        aliases = tuple(a for a in entry.get("aliases", ()) if a not in taken and a not in models)
        models[name] = ModelSpec(name=name, path=entry["path"], mmproj=entry.get("mmproj"), state="auto",
                                 aliases=aliases)
        taken.update(aliases)
    missing = frozenset(n for n, s in models.items() if s.model_file and not os.path.exists(s.model_file))
    return replace(config, models=models, missing=missing), plan


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
    """What /v1/models tells about a model that may not be running. `name`, which
    clients such as Open WebUI list, is the catalogue's display name or the model's own:
    the GGUF's general.name (in `meta`) is the same for every entry on one file."""
    meta = gguf_meta(spec.path)
    modalities = ["text", "image"] if spec.mmproj else ["text"]
    card: dict[str, Any] = {"name": spec.display_name or spec.name,
                            "architecture": {"input_modalities": modalities, "output_modalities": ["text"]}}
    if meta is not None:
        card["meta"] = {
            "name": meta.name,
            "architecture": meta.architecture,
            "n_ctx_train": meta.context_length,
            "n_params": meta.n_params,
            "size": meta.file_size,
            "quantization": meta.quantization,
            "n_layer": meta.block_count,
            "sliding_window": meta.sliding_window,
        }
    card["state"] = spec.state
    card["mmproj"] = Path(spec.mmproj).name if spec.mmproj else None
    if spec.description:
        card["description"] = spec.description
    if spec.metadata:
        card["metadata"] = spec.metadata
    if spec.capabilities is not None:
        card.update(_capabilities(spec.capabilities, card["architecture"]))
    return card


def _capabilities(caps: Capabilities, architecture: dict[str, Any]) -> dict[str, Any]:
    """A model's own `capabilities` over what its GGUF says, in the fields llama-swap's
    /v1/models gives them (OpenRouter's names: architecture, supported_parameters...)."""
    arch: dict[str, Any] = {"input_modalities": list(caps.inputs or architecture["input_modalities"]),
                            "output_modalities": list(caps.outputs or architecture["output_modalities"])}
    arch["modality"] = "+".join(arch["input_modalities"]) + "->" + "+".join(arch["output_modalities"])
    ins, outs = arch["input_modalities"], arch["output_modalities"]
    flags = {"vision": "image" in ins, "audio_transcriptions": "audio" in ins and "text" in outs,
             "audio_speech": "text" in ins and "audio" in outs, "image_generation": "text" in ins and "image" in outs,
             "image_to_image": "image" in ins and "image" in outs, "function_calling": caps.tools,
             "reranker": caps.reranker}
    out: dict[str, Any] = {"architecture": arch, "capabilities": {k: True for k, v in flags.items() if v}}
    if caps.tools:
        out["supported_parameters"] = ["tools", "tool_choice"]
    if caps.context:
        out["context_length"] = caps.context
    return out
