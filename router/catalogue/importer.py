"""Put discovered models into the YAML catalogue, and plan rescans.

Longer than 300 lines because round-trip YAML writing (indent guessing,
atomic replace) and the two operations built on it, import and rescan,
share one document handling.

The catalogue is a file people edit by hand, so every write goes through
ruamel.yaml's round-trip mode (comments, key order, quoting and - as far as
it can be guessed - indentation survive; catalogue/yamlio.py quotes what a
YAML 1.1 reader would not read as a string) and lands atomically (temp file +
rename), because the router hot-reloads the file and must never read half
of it.

Paths are written absolute but with symlinks kept as found (not resolved):
split models and the HF cache both depend on file *names* next to each
other, and a user's `~/models/current -> ...` link is intentional. Duplicate
detection therefore compares resolved paths as well.
"""

from __future__ import annotations

import io
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError

from router.catalogue.yamlio import writer_yaml
from router.discovery.naming import unique_name
from router.discovery.scan import DiscoveredModel

__all__ = [
    "CatalogueWriteError",
    "ImportReport",
    "RescanPlan",
    "apply_rescan",
    "atomic_write",
    "import_models",
    "model_entry",
    "remove_model_entry",
    "rescan",
    "set_router_key",
    "write_catalogue",
]

HEADER = (
    "# llama-router model catalogue.\n"
    "# Entries with `state: auto` are managed by rescans; `manual` ones are never touched.\n"
)


class CatalogueWriteError(ValueError):
    """The catalogue file cannot be updated safely; names the file and why."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


@dataclass
class ImportReport:
    added: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)  # discovered names already catalogued (same file)
    renamed: dict[str, str] = field(default_factory=dict)  # discovered name -> name written, on a clash


@dataclass
class RescanPlan:
    added: dict[str, dict[str, Any]] = field(default_factory=dict)
    removed: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.added or self.removed)


def _abs(p: str | os.PathLike[str]) -> str:
    return os.path.normpath(os.path.abspath(os.path.expanduser(os.path.expandvars(str(p)))))


def model_entry(model: DiscoveredModel, state: str, taken: set[str] | None = None) -> dict[str, Any]:
    """`taken`: names and aliases in use; an alias among them is left out."""
    entry: dict[str, Any] = {"path": _abs(model.path)}
    aliases = [a for a in model.aliases if taken is None or a not in taken]
    if aliases:
        entry["aliases"] = aliases
    if model.mmproj is not None:
        entry["mmproj"] = _abs(model.mmproj)
    entry["state"] = state
    return entry


def _names_in_use(models: Mapping[str, Any], exclude: Iterable[str] = ()) -> set[str]:
    """Names and aliases: the catalogue rejects a name that is another's alias."""
    skip = set(exclude)
    taken: set[str] = set()
    for name, entry in models.items():
        if name in skip:
            continue
        taken.add(str(name))
        aliases = entry.get("aliases") if isinstance(entry, Mapping) else None
        if isinstance(aliases, str):
            taken.add(aliases)
        elif isinstance(aliases, list):
            taken.update(str(a) for a in aliases)
    return taken


def _entry_path(entry: Any) -> str | None:
    if isinstance(entry, Mapping) and isinstance(entry.get("path"), str) and entry["path"]:
        return _abs(entry["path"])
    return None


# ------------------------------------------------------------- YAML I/O


def _guess_indent(text: str) -> tuple[int, int, int]:
    """(mapping, sequence, offset) as used in `text`, so a rewrite keeps its look."""
    mapping, offset = None, None
    stack: list[int] = []  # indents of open "key:" lines
    for line in text.splitlines():
        stripped = line.lstrip(" ")
        if not stripped or stripped.startswith("#"):
            continue
        ind = len(line) - len(stripped)
        while stack and stack[-1] >= ind and not (stripped.startswith("- ") and stack[-1] == ind):
            stack.pop()
        if stripped.startswith("- ") and stack and offset is None:
            offset = ind - stack[-1]
        elif re.match(r"[^\s#-][^:]*:(\s|$)", stripped):
            if stack and mapping is None and ind > stack[-1]:
                mapping = ind - stack[-1]
            if stripped.rstrip().endswith(":"):
                stack.append(ind)
    mapping = mapping or 2
    offset = 2 if offset is None else offset
    return mapping, offset + 2, offset


def _yaml_for(text: str) -> YAML:
    y = writer_yaml()
    mapping, sequence, offset = _guess_indent(text)
    y.indent(mapping=mapping, sequence=max(sequence, offset + 2), offset=offset)
    return y


def _load(path: Path) -> tuple[str, YAML, Any]:
    try:
        text = path.read_text(encoding="utf-8") if path.exists() else ""
    except OSError as e:
        raise CatalogueWriteError(path, f"cannot read: {e.strerror or e}") from None
    y = _yaml_for(text)
    try:
        data = y.load(text) if text.strip() else None
    except YAMLError as e:
        raise CatalogueWriteError(path, f"invalid YAML, not touching it: {e}") from None
    if data is not None and not isinstance(data, CommentedMap):
        raise CatalogueWriteError(path, "top level must be a mapping (with a `models:` key)")
    return text, y, data


def _models_map(path: Path, data: CommentedMap) -> CommentedMap:
    models = data.get("models")
    if models is None:
        models = CommentedMap()
        data["models"] = models
    if not isinstance(models, CommentedMap):
        raise CatalogueWriteError(path, "`models:` must be a mapping of name: settings")
    if not models:
        models.fa.set_block_style()  # `models: {}` would otherwise stay inline
    return models


def _dump(path: Path, text: str, y: YAML, data: CommentedMap, fresh: bool) -> None:
    """`fresh`: the file had no YAML data; keep its comments (or add the header) on top."""
    buf = io.StringIO()
    y.dump(data, buf)
    out = buf.getvalue()
    if fresh:
        out = (text.rstrip() + "\n" if text.strip() else HEADER) + out
    atomic_write(path, out)


def atomic_write(path: Path, content: str, *, new_mode: int = 0o644,
                  check: Callable[[str], None] | None = None) -> None:
    """Temp file + fsync + rename; an existing file keeps its mode, a new one gets
    `new_mode`. `check(temp_path)` runs before the rename: raising keeps the old file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        mode = path.stat().st_mode & 0o7777 if path.exists() else new_mode
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(content)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, mode)
            if check is not None:
                check(tmp)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as e:
        raise CatalogueWriteError(path, f"cannot write: {e.strerror or e}") from None


@dataclass
class _Doc:
    path: Path
    text: str
    yaml: YAML
    data: CommentedMap
    fresh: bool
    models: CommentedMap

    def save(self) -> None:
        _dump(self.path, self.text, self.yaml, self.data, self.fresh)


def _open_doc(config_path: str | os.PathLike[str]) -> _Doc:
    path = Path(os.path.expanduser(config_path))
    text, y, data = _load(path)
    fresh = data is None
    if fresh:
        data = CommentedMap()
    return _Doc(path, text, y, data, fresh, _models_map(path, data))


# ---------------------------------------------------------------- import


def import_models(
    config_path: str | os.PathLike[str], models: Iterable[DiscoveredModel], *, state: str = "manual",
    import_dirs: Iterable[str | os.PathLike[str]] = (),
) -> ImportReport:
    """Add `models` to the catalogue's `models:` mapping; safe to run repeatedly.

    A model whose file is already catalogued (under any name, compared with
    symlinks resolved) is reported in `existing`. A new file whose name is
    taken by a *different* file is added under `name-2` (reported in
    `renamed`) rather than silently dropped. `import_dirs` are remembered in
    `sources.import_dirs`, so rescans and the folder watch walk them again.
    """
    doc = _open_doc(config_path)
    remembered = _remember_import_dirs(doc, import_dirs)
    catalogue = doc.models
    report = ImportReport()
    known: set[str] = set()
    for entry in catalogue.values():
        p = _entry_path(entry)
        if p:
            known.update({p, os.path.realpath(p)})
    taken = _names_in_use(catalogue)
    for m in models:
        p = _abs(m.path)
        if p in known or os.path.realpath(p) in known:
            report.existing.append(m.name)
            continue
        name = unique_name(m.name, taken)
        if name != m.name:
            report.renamed[m.name] = name
        entry = model_entry(m, state, taken)
        if "aliases" in entry:
            entry["aliases"] = CommentedSeq(entry["aliases"])
        catalogue[name] = CommentedMap(entry)
        taken.update((name, *entry.get("aliases", ())))
        known.update({p, os.path.realpath(p)})
        report.added.append(name)
    if report.added or remembered or not doc.path.exists():
        doc.save()
    return report


def _remember_import_dirs(doc: _Doc, dirs: Iterable[str | os.PathLike[str]]) -> bool:
    """Add `dirs` (absolute) to `sources.import_dirs`; True when the file changes."""
    new = [_abs(d) for d in dirs]
    if not new:
        return False
    sources = doc.data.get("sources")
    if sources is None:
        sources = doc.data["sources"] = CommentedMap()
    if not isinstance(sources, CommentedMap):
        raise CatalogueWriteError(doc.path, "`sources:` must be a mapping")
    listed = sources.get("import_dirs")
    if listed is None:
        listed = sources["import_dirs"] = CommentedSeq()
    if not isinstance(listed, list):
        raise CatalogueWriteError(doc.path, "`sources.import_dirs` must be a list of folders")
    known = {_abs(str(d)) for d in listed}
    added = [d for d in dict.fromkeys(new) if d not in known]
    listed.extend(added)
    return bool(added)


# ---------------------------------------------------------------- rescan


def rescan(catalogue_models: Mapping[str, Mapping[str, Any]], found: Iterable[DiscoveredModel]) -> RescanPlan:
    """What a rescan should change; touches neither the disk nor its inputs.

    `auto` entries whose file was not found again are removed; `manual` (or
    state-less) entries are always kept as they are; files not yet in the
    catalogue become `auto` entries. Kept entries are listed by name only, so
    their custom settings (aliases, args, group...) cannot be altered here.
    """
    found_list = list(found)
    found_paths = {_abs(m.path) for m in found_list}
    plan = RescanPlan()
    catalogued: set[str] = set()
    for name, entry in catalogue_models.items():
        p = _entry_path(entry)
        if p:
            catalogued.add(p)
        state = entry.get("state", "manual") if isinstance(entry, Mapping) else "manual"
        if state == "auto" and (p is None or p not in found_paths):
            plan.removed.append(name)
        else:
            plan.kept.append(name)
    taken = _names_in_use(catalogue_models, exclude=plan.removed)
    for m in found_list:
        p = _abs(m.path)
        if p in catalogued:
            continue
        name = unique_name(m.name, taken)
        taken.add(name)
        catalogued.add(p)
        plan.added[name] = model_entry(m, "auto", taken)
        taken.update(plan.added[name].get("aliases", ()))
    return plan


def apply_rescan(config_path: str | os.PathLike[str], plan: RescanPlan) -> None:
    """Write `plan` into the catalogue; a removal only happens if the entry is still `auto`."""
    if not plan.changed:
        return
    doc = _open_doc(config_path)
    catalogue = doc.models
    for name in plan.removed:
        entry = catalogue.get(name)
        if isinstance(entry, Mapping) and entry.get("state") == "auto":
            del catalogue[name]
    for name, entry in plan.added.items():
        if name not in catalogue:
            catalogue[name] = CommentedMap({k: CommentedSeq(v) if isinstance(v, list) else v for k, v in entry.items()})
    doc.save()


# ------------------------------------------------------ admin API edits


def set_router_key(config_path: str | os.PathLike[str], key: str, value: Any, *, replace: bool = True) -> bool:
    """Set `router.<key>` in the file (None: remove it), everything else kept; True when
    the file changed. With `replace=False` a value already there (not null) stays."""
    path = Path(os.path.expanduser(config_path))
    text, y, data = _load(path)
    fresh = data is None
    if data is None:
        data = CommentedMap()
    router = data.get("router")
    if router is None:
        if value is None:
            return False
        router = CommentedMap()
        data.insert(0, "router", router)
    if not isinstance(router, CommentedMap):
        raise CatalogueWriteError(path, "`router:` must be a mapping")
    if value is None:
        if key not in router:
            return False
        del router[key]
    elif router.get(key) is not None and (not replace or router[key] == value):
        return False
    else:
        router[key] = value
    _dump(path, text, y, data, fresh)
    return True


def remove_model_entry(config_path: str | os.PathLike[str], name: str) -> bool:
    """Delete `models.<name>` from the file, everything else kept; False when it has no such entry."""
    path = Path(os.path.expanduser(config_path))
    _, _, data = _load(path)
    models = data.get("models") if data is not None else None
    if not isinstance(models, CommentedMap) or name not in models:
        return False
    doc = _open_doc(path)
    del doc.models[name]
    doc.save()
    return True


def write_catalogue(config_path: str | os.PathLike[str], content: str | Mapping[str, Any]) -> None:
    """Replace the file atomically: YAML text exactly as given (its comments kept), or a
    mapping (a JSON body) written as block-style YAML."""
    path = Path(os.path.expanduser(config_path))
    if not isinstance(content, str):
        buf = io.StringIO()
        _yaml_for("").dump(dict(content), buf)
        content = buf.getvalue()
    atomic_write(path, content)
