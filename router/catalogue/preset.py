"""llama.cpp's model presets (`llama-server --models-preset FILE.ini`), read as llama.cpp
reads them, and written into a llama-router catalogue (`--import-preset`).

Longer than 300 lines because the INI grammar, the key rules and the
conversion to a catalogue each follow a different part of llama.cpp
(common/preset.cpp, common/arg.cpp, tools/server/server-models.cpp), and a
reader checks them against it side by side.

The file (common/preset.cpp, `parse_ini_from_file`): `[section]` headers,
`key = value` lines, `;`/`#` comments (also after a value: a value ends at
the first `;` or `#`), no quoting, no indentation. Keys before the first
section belong to a section named `default`, which becomes a model when it
holds keys. A section that appears again starts over; a key given twice keeps
its last value. `version` is skipped.

A key is a llama-server argument by its long or short name without dashes
(`ctx-size`, `c`), its env name (`LLAMA_ARG_CTX_SIZE`) or, for a flag, its
negation (`no-jinja`); or one of the three preset-only keys. Keys are applied
in sorted order (a std::map), so when two keys of one section name the same
option (`c` and `ctx-size`), the one that sorts last wins, as in llama.cpp. A
flag's value is a boolean (`true/false`, `on/off`, `enabled/disabled`,
`1/0`); llama.cpp reads anything else as "on", here it is an error.
`LLAMA_ARG_NO_X = true` turns the flag off (llama.cpp's preset reader turns
it on, against what that env name means everywhere else).

What the router sets (server-models.cpp, `unset_reserved_args` and
`update_args`) is dropped with a line in the report: host, port, API keys,
TLS files, the router's own settings, log colours. `model`, `hf-repo`,
`mmproj` and `alias` become the model's fields. Paths are made absolute from
the working directory, which is what llama.cpp's children resolve them from.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

from ruamel.yaml.comments import CommentedMap, CommentedSeq

from router.catalogue.config import NAME_RE, NAME_RULE, ConfigError
from router.catalogue.importer import CatalogueWriteError, _open_doc
from router.catalogue.parse import parse_config
from router.catalogue.server_args import ServerArgs, ServerOption
from router.discovery.huggingface import parse_hf_ref

__all__ = ["Preset", "PresetModel", "import_preset", "preset_catalogue", "read_preset"]

GLOBAL = "*"
DEFAULT_SECTION = "default"  # COMMON_PRESET_DEFAULT_NAME
# common_params_add_preset_options: not llama-server arguments, read by the router.
PRESET_KEYS = {
    "load-on-startup": "__PRESET_LOAD_ON_STARTUP",
    "stop-timeout": "__PRESET_STOP_TIMEOUT",
    "dedup-cache-models": "__PRESET_DEDUP_CACHE_MODELS",
}
_PRESET_BY_KEY = {**{k: k for k in PRESET_KEYS}, **{env: k for k, env in PRESET_KEYS.items()}}
TRUTHY = frozenset({"on", "enabled", "true", "1"})  # common_arg_utils::is_truthy
FALSEY = frozenset({"off", "disabled", "false", "0"})  # common_arg_utils::is_falsey

_SET_BY_ROUTER = "set by the router"
# Options the router sets or strips from every child (by any of their names).
_ROUTER_OWNED = {
    "--host": f"{_SET_BY_ROUTER} (children listen on 127.0.0.1)",
    "--port": f"{_SET_BY_ROUTER} (a free port for each child)",
    "--api-key": f"{_SET_BY_ROUTER} (llama-router's own --api-key, router.api_keys)",
    "--api-key-file": f"{_SET_BY_ROUTER} (llama-router's own --api-key-file, router.api_keys)",
    "--ssl-key-file": f"{_SET_BY_ROUTER} (children speak plain HTTP on loopback)",
    "--ssl-cert-file": f"{_SET_BY_ROUTER} (children speak plain HTTP on loopback)",
    "--models-dir": f"{_SET_BY_ROUTER}: a router setting, not a model's",
    "--models-max": f"{_SET_BY_ROUTER}: a router setting, not a model's",
    "--models-preset": f"{_SET_BY_ROUTER}: a router setting, not a model's",
    "--models-autoload": f"{_SET_BY_ROUTER}: a router setting, not a model's",
    "--log-colors": f"{_SET_BY_ROUTER} (child output goes to the router's log)",
}
# Options that name the model itself: fields of PresetModel, not arguments.
_MODEL_FIELDS = {"--model": "path", "--hf-repo": "hf_repo", "--mmproj": "mmproj", "--alias": "aliases"}
# Options that fetch the model from somewhere else: such a section needs no `model`.
_MODEL_SOURCES = frozenset({"-mu", "--model-url", "-dr", "--docker-repo"})

_HEADER_RE = re.compile(r"\[[ \t]*([^\]]+)\][ \t]*(?:[;#].*)?")
_KV_RE = re.compile(r"([A-Za-z_][A-Za-z0-9_.-]*)[ \t]*=[ \t]*(.*)")
_BLANK_RE = re.compile(r"[ \t]*(?:[;#].*)?")
_TAG_RE = re.compile(r"[-.]([A-Z0-9_]+)$", re.IGNORECASE)


@dataclass(frozen=True)
class PresetModel:
    name: str  # the section name (tag after ':' canonicalised as llama.cpp does: `:q8_0` -> `:Q8_0`)
    args: tuple[str, ...]  # llama-server arguments of this section as argv; router-set ones removed
    path: str | None  # `model` / `m` / LLAMA_ARG_MODEL, absolute
    hf_repo: str | None  # `hf-repo` / `hf` / `hfr` / LLAMA_ARG_HF_REPO (`hf-repo-draft` is the draft's)
    aliases: tuple[str, ...]  # `alias` / `a`, comma-separated
    mmproj: str | None  # `mmproj` / `mm`, absolute
    load_on_startup: bool
    stop_timeout: float | None
    dedup_cache_models: bool = False  # this section's value, else `[*]`'s


@dataclass(frozen=True)
class Preset:
    defaults: tuple[str, ...]  # the `[*]` section as argv
    models: tuple[PresetModel, ...]
    dedup_cache_models: bool  # `[*]` or any section asks for it (PresetModel has each one's)
    report: tuple[str, ...]  # keys dropped and why: "[name] host: set by the router ..."
    source: str = "<preset>"


# ----------------------------------------------------------------- the file


def _canonical_name(name: str) -> str:
    """`repo:q4_k_m` -> `repo:Q4_K_M`, `repo:UD-Q4_K_XL` -> `repo:Q4_K_XL` (preset.cpp, canonical_tag)."""
    if name in (GLOBAL, DEFAULT_SECTION) or ":" not in name:
        return name
    head, _, tag = name.rpartition(":")
    m = _TAG_RE.search(tag)
    return f"{head}:{(m.group(1) if m else tag).upper()}"


def _read_ini(text: str, source: str, report: list[str]) -> dict[str, dict[str, str]]:
    """Sections (in file order) of key -> value, with llama.cpp's grammar."""
    sections: dict[str, dict[str, str]] = {DEFAULT_SECTION: {}}
    current, orphans, headers = DEFAULT_SECTION, False, 0
    for n, line in enumerate(re.split(r"\r\n|\n|\r", text), start=1):
        if (m := _HEADER_RE.fullmatch(line)) is not None:
            current, headers = _canonical_name(m.group(1)), headers + 1
            if set(sections.get(current, ())) - {"version"}:
                report.append(f"[{current}]: the section appears again; its earlier keys are dropped "
                              "(as llama.cpp reads it)")
            sections[current] = {}
        elif (m := _KV_RE.fullmatch(line)) is not None:
            value = re.split(r"[;#]", m.group(2), maxsplit=1)[0].rstrip(" \t")
            sections[current][m.group(1)] = value
            orphans = orphans or (not headers and m.group(1) != "version")
        elif _BLANK_RE.fullmatch(line) is None:
            raise ConfigError(source, f"line {n}", "expected `[section]`, `key = value` or a `;`/`#` comment "
                              f"at the start of the line (llama.cpp reads nothing else), got {line.strip()!r}")
    if not set(sections[DEFAULT_SECTION]) - {"version"}:  # preset.cpp: an empty `default` is no model
        del sections[DEFAULT_SECTION]
    elif orphans:
        report.append(f"[{DEFAULT_SECTION}]: keys before the first section make a model named "
                      f"{DEFAULT_SECTION!r} (as in llama.cpp)")
    return sections


def _boolean(value: str, source: str, where: str) -> bool:
    if value in TRUTHY:
        return True
    if value in FALSEY:
        return False
    raise ConfigError(source, where, f"expected a boolean (true/false, on/off, enabled/disabled, 1/0), got {value!r}")


def _owned(opt: ServerOption) -> str | None:
    return next((_ROUTER_OWNED[n] for n in opt.names if n in _ROUTER_OWNED), None)


def _field(opt: ServerOption) -> str | None:
    return next((_MODEL_FIELDS[n] for n in opt.names if n in _MODEL_FIELDS), None)


@dataclass
class _Section:
    name: str
    args: list[tuple[ServerOption, list[str]]]
    fields: dict[str, str]
    preset: dict[str, str]  # preset-only key -> value


def _read_section(name: str, keys: dict[str, str], table: ServerArgs, source: str,
                  report: list[str]) -> _Section:
    """The section's keys, applied in sorted order as llama.cpp's std::map does."""
    chosen: dict[str, tuple[ServerOption, str, str]] = {}  # option key -> (option, key as written, value)
    preset: dict[str, str] = {}
    for key in sorted(keys):
        value = keys[key]
        where = f"[{name}] {key}"
        if key == "version":
            continue
        if key in _PRESET_BY_KEY:
            preset[_PRESET_BY_KEY[key]] = value
            continue
        opt = table.option(key)
        if opt is None:
            raise ConfigError(source, where, "unknown key: expected a llama-server argument without dashes "
                              "(ctx-size, c), its env name (LLAMA_ARG_CTX_SIZE), or one of "
                              f"{', '.join(PRESET_KEYS)} (see llama-server --help)")
        if opt.key in chosen:
            report.append(f"[{name}] {chosen[opt.key][1]}: overridden by {key}, the same option "
                          "(llama.cpp keeps the key that sorts last)")
        chosen[opt.key] = (opt, key, value)
    section = _Section(name, [], {}, preset)
    for opt, key, value in chosen.values():
        where = f"[{name}] {key}"
        owned, field = _owned(opt), _field(opt)
        if owned is not None:
            report.append(f"{where}: {owned}")
        elif field is not None and name == GLOBAL:
            report.append(f"{where}: names one model, not a default for every model; not used")
        elif field is not None:
            section.fields[field] = value
        elif not opt.takes_value:
            on = _boolean(value, source, where) != opt.negates(key)
            flag = opt.key if on else (opt.negations[-1] if opt.negations else None)
            if flag is not None:  # a flag without a negation, set false: left out (preset.cpp, to_args)
                section.args.append((opt, [flag]))
        elif opt.arity != 1:
            raise ConfigError(source, where, "takes two values, which llama.cpp's presets cannot hold; "
                              "give it on the command line")
        else:
            section.args.append((opt, [opt.key, value]))
    # llama.cpp writes a child's arguments in its std::map's order: by the first name.
    section.args.sort(key=lambda item: item[0].names[0])
    return section


def _argv(section: _Section) -> tuple[str, ...]:
    return tuple(tok for _, tokens in section.args for tok in tokens)


def _path(value: str | None) -> str | None:
    """Absolute from the working directory, as llama.cpp's children read it (no `~`)."""
    return os.path.abspath(value) if value else None


def read_preset(path: str | PathLike[str], args: ServerArgs) -> Preset:
    """The preset file at `path`, its keys checked against llama-server's table `args`.

    A section that names no `model` or `hf-repo` is kept (path and hf_repo
    None): it may be a model the caller already knows under that name."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(source, "<file>", f"cannot read: {getattr(e, 'strerror', None) or e}") from None
    report: list[str] = []
    sections = {name: _read_section(name, keys, args, source, report)
                for name, keys in _read_ini(text, source, report).items()}
    glob = sections.pop(GLOBAL, _Section(GLOBAL, [], {}, {}))

    def preset_value(section: _Section, key: str) -> tuple[str, str] | None:
        """(where, value) of a preset-only key, the section's own over `[*]` (llama.cpp's cascade)."""
        for s in (section, glob):
            if key in s.preset:
                return f"[{s.name}] {key}", s.preset[key]
        return None

    def flag(section: _Section, key: str) -> bool:
        found = preset_value(section, key)
        return found is not None and _boolean(found[1], source, found[0])

    def seconds(section: _Section) -> float | None:
        found = preset_value(section, "stop-timeout")
        if found is None:
            return None
        try:
            value = float(found[1])
        except ValueError:
            value = -1.0
        if not value >= 0:
            raise ConfigError(source, found[0], f"expected a number of seconds >= 0, got {found[1]!r}")
        return value

    models = []
    for s in sections.values():
        aliases = [a.strip() for a in s.fields.get("aliases", "").split(",")]
        models.append(PresetModel(
            name=s.name, args=_argv(s), path=_path(s.fields.get("path")), hf_repo=s.fields.get("hf_repo") or None,
            aliases=tuple(dict.fromkeys(a for a in aliases if a)), mmproj=_path(s.fields.get("mmproj")),
            load_on_startup=flag(s, "load-on-startup"), stop_timeout=seconds(s),
            dedup_cache_models=flag(s, "dedup-cache-models"),
        ))
    dedup = flag(glob, "dedup-cache-models") or any(m.dedup_cache_models for m in models)
    return Preset(defaults=_argv(glob), models=tuple(models), dedup_cache_models=dedup,
                  report=tuple(report), source=source)


# ------------------------------------------------------------ the catalogue

_SERVE = ("--alias", "$name", "--host", "$host", "--port", "$port")


def _is_hf_ref(name: str) -> bool:
    try:
        parse_hf_ref(name)
    except ValueError:
        return False
    return True


def _model_entry(m: PresetModel, defaults: tuple[str, ...], notes: list[str]) -> dict[str, Any] | None:
    """One catalogue entry; None (with a note) for a section that names no model."""
    entry: dict[str, Any] = {}
    if m.path:
        entry["path"] = m.path
        if m.hf_repo:
            notes.append(f"[{m.name}] hf-repo: not used; the section names its model file")
    else:
        elsewhere = any(tok in _MODEL_SOURCES for tok in m.args)
        repo = m.hf_repo
        if repo is None and not elsewhere:
            if not _is_hf_ref(m.name):
                notes.append(f"[{m.name}]: not imported: no `model` or `hf-repo` (llama.cpp takes it for the "
                             "--models-dir or cache model of that name); add its arguments to that model's entry")
                return None
            repo = m.name
            notes.append(f"[{m.name}]: no `model` or `hf-repo`: served with `-hf {repo}`, the Hugging Face "
                         "model llama.cpp lists under that name")
        spawn: dict[str, Any] = {"command": ["llama-server", *(["-hf", repo] if repo else []), *_SERVE]}
        if defaults:
            spawn["args"] = list(defaults)  # a model's own spawn replaces the default one, `[*]` included
        entry["spawn"] = spawn
    aliases = [a for a in m.aliases if a != m.name]
    if aliases:
        entry["aliases"] = aliases
    if m.mmproj:
        entry["mmproj"] = m.mmproj
    if m.args:
        entry["args"] = list(m.args)
    return entry


def _catalogue(preset: Preset) -> tuple[dict[str, Any], list[str]]:
    notes: list[str] = []
    models: dict[str, Any] = {}
    owner: dict[str, str] = {}
    for m in preset.models:
        if not NAME_RE.match(m.name):
            raise ConfigError(preset.source, f"[{m.name}]", f"expected a model name of {NAME_RULE}")
        entry = _model_entry(m, preset.defaults, notes)
        if entry is None:
            continue
        for n in (m.name, *entry.get("aliases", ())):
            if not NAME_RE.match(n):
                raise ConfigError(preset.source, f"[{m.name}] alias", f"alias {n!r} is not a model name: {NAME_RULE}")
            if n in owner:  # llama.cpp refuses these too (server_models::add_model)
                raise ConfigError(preset.source, f"[{m.name}]", f"name or alias {n!r} is already used by [{owner[n]}]")
            owner[n] = m.name
        models[m.name] = entry
    kept = [m for m in preset.models if m.name in models]
    router: dict[str, Any] = {}
    timeouts = [m.stop_timeout for m in kept if m.stop_timeout is not None]
    if timeouts:
        router["stop_timeout"] = max(max(timeouts), 0.1)
        notes += [f"[{m.name}] stop-timeout: the catalogue has one stop timeout for every model; "
                  f"router.stop_timeout is the longest, {router['stop_timeout']:g}"
                  for m in kept if m.stop_timeout is not None and m.stop_timeout != router["stop_timeout"]]
    preload = [m.name for m in kept if m.load_on_startup]
    if preload:
        router["preload"] = preload
    if preset.dedup_cache_models:
        notes.append("dedup-cache-models: not carried over; the catalogue lists a Hugging Face cache file once "
                     "when an entry names it by path")
    catalogue: dict[str, Any] = {}
    if router:
        catalogue["router"] = router
    if preset.defaults:
        catalogue["spawn"] = {"args": list(preset.defaults)}
    catalogue["models"] = models
    return catalogue, notes


def preset_catalogue(preset: Preset) -> dict[str, Any]:
    """The preset as a llama-router catalogue (the shape of config.example.yaml): `[*]`
    becomes `spawn.args`, `load-on-startup` models `router.preload`, a model known only
    by its Hugging Face repo a `spawn.command` with `-hf`. Raises ConfigError for names
    the catalogue cannot hold, as llama.cpp refuses clashing names and aliases."""
    return _catalogue(preset)[0]


def _yaml(value: Any, flow: bool = False) -> Any:
    """Plain data as round-trip nodes: argument lists on one line, as people write them."""
    if isinstance(value, dict):
        node = CommentedMap()
        for k, v in value.items():
            node[k] = _yaml(v, flow=k in ("args", "aliases", "command", "preload"))
        return node
    if isinstance(value, list):
        seq = CommentedSeq(value)
        if flow:
            seq.fa.set_flow_style()
        return seq
    return value


def import_preset(src: str | PathLike[str], dest: str | PathLike[str],
                  args: ServerArgs) -> tuple[dict[str, Any], tuple[str, ...]]:
    """Write the preset at `src` as the catalogue `dest` (atomically, through the
    importer's round trip); a `dest` that already has models is left alone
    (CatalogueWriteError). Returns the catalogue and what was not carried over."""
    preset = read_preset(src, args)
    catalogue, notes = _catalogue(preset)
    parse_config(catalogue, str(dest))  # never write a catalogue the router would refuse
    doc = _open_doc(dest)
    if doc.models:
        raise CatalogueWriteError(doc.path, f"already has {len(doc.models)} model(s); import the preset into a "
                                  "new file, or remove them first")
    data = CommentedMap() if doc.fresh else doc.data
    for key, value in catalogue.items():
        section = data.get(key)
        if isinstance(section, CommentedMap) and key != "models":
            section.update(_yaml(value))
        else:
            data[key] = _yaml(value)
    became = "; [*] became spawn.args" if preset.defaults else ""
    data.yaml_set_start_comment(f"Imported from llama.cpp model presets: {os.path.abspath(src)}\n"
                                f"(llama-router --import-preset){became}")
    doc.data = data
    doc.save()
    return catalogue, preset.report + tuple(notes)
