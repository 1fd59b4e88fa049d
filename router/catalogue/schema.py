"""The catalogue's JSON Schema and the key tables of docs/configuration.md,
drawn from the keys of catalogue/config.py (each described by `key()`,
catalogue/keys.py).

Longer than 300 lines because the schema and the tables are two renderings
of one walk over the same keys, and each kind of value (a size, a budget, a
model name, a flag...) is drawn here once for both.

`make schema` (`python -m router.catalogue.schema --write`) writes
catalogue.schema.json and the tables between the `<!-- keys:start SECTION -->`
and `<!-- keys:end -->` markers of docs/configuration.md; without `--write`
it prints the schema. Unit tests fail while either file is stale.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any, get_args, get_origin

from router.catalogue.config import (
    FLAG_RE,
    NAME_RE,
    RATE_UNITS,
    RESERVED_FLAGS,
    ApiKey,
    Config,
    ModelSpec,
    PeerSpec,
    Rate,
)
from router.catalogue.keys import Described, is_section, keys_of, list_items

SCHEMA_FILE = Path(__file__).with_name("catalogue.schema.json")
DOCS_FILE = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
MAKE_TARGET = "make schema"

TITLE = "llama-router catalogue"
DESCRIPTION = "The llama-router catalogue (config.yaml). ${ENV_VAR} in a value is read from the environment."

ENV = r"\$\{[A-Za-z_][A-Za-z0-9_]*\}"  # what catalogue/values.py's expand_env replaces
# catalogue/values.py's parse_size: 16GiB, 512MiB, 1.5GB, 1024.
SIZE = r"^\s*\d+(\.\d+)?\s*([KMGTkmgt][iI]?[bB]?|[bB])?\s*$"
# Rate.parse: N/unit, N >= 1, any case of RATE_UNITS' names.
RATE = (r"^\s*0*[1-9][0-9]*\s*/\s*("
        + "|".join("".join(f"[{c.lower()}{c.upper()}]" for c in unit) for unit in RATE_UNITS) + r")\s*$")

# Values that several keys share, named once in $defs.
HELPERS: dict[str, Any] = {
    "envString": {"description": "A value read from the environment: ${VAR}.", "type": "string", "pattern": ENV},
    # What int() and float() read, as the parser reads numbers written as strings.
    "integerString": {"description": "An integer written as a string, or ${VAR}.", "type": "string",
                      "pattern": r"^\s*[+-]?\d(_?\d)*\s*$|" + ENV},
    "numberString": {"description": "A number written as a string, or ${VAR}.", "type": "string",
                     "pattern": r"^\s*[+-]?(\d(_?\d)*(\.(\d(_?\d)*)?)?|\.\d(_?\d)*)([eE][+-]?\d(_?\d)*)?\s*$"
                     r"|^\s*[+-]?([iI][nN][fF]([iI][nN][iI][tT][yY])?|[nN][aA][nN])\s*$|" + ENV},
    "text": {"type": ["string", "number"]},
    "optionalText": {"type": ["string", "number", "null"]},
    # A mapping read with `or {}`: every empty YAML value is none.
    "empty": {"description": "An empty value: none.", "enum": [None, False, 0, "", []]},
}
ENV_REF = {"$ref": "#/$defs/envString"}
NULL = {"type": "null"}
BUDGET = {"anyOf": [{"const": "auto"}, {"const": "off"}, NULL, {"const": False}, {"type": "integer", "minimum": 1},
                    {"type": "string", "pattern": SIZE}, ENV_REF]}

# Rules between keys, which the parser checks in code (parse.py): a model needs a path or its
# own spawn; an API key has exactly one of key and key_file, and an admin key sees every model.
BETWEEN_KEYS: dict[type, dict[str, Any]] = {
    # A model served at its `url` (a server already running) has neither path nor spawn.
    ModelSpec: {"anyOf": [{"required": ["path"], "properties": {"path": {"not": NULL}}}, {"required": ["spawn"]},
                          {"required": ["url"], "properties": {"url": {"not": NULL}}}],
                "if": {"required": ["url"], "properties": {"url": {"not": NULL}}},
                "then": {"properties": {"path": NULL, "spawn": False}}},
    PeerSpec: {"required": ["url"]},
    ApiKey: {"oneOf": [{"required": ["key"]}, {"required": ["key_file"]}],
             "if": {"required": ["role"], "properties": {"role": {"const": "admin"}}},
             "then": {"properties": {"models": {"anyOf": [NULL, {"type": "array", "maxItems": 0}]}}}},
}


# ----- the JSON Schema ---------------------------------------------------------

class _Drawer:
    """One walk over the keys; sections named at the top of the file and entries of
    lists and mappings go to $defs, other sections (router.memory) are drawn in place."""

    def __init__(self) -> None:
        self.defs: dict[str, Any] = {}
        self.top = {k.type: k.name for k in keys_of(Config) if is_section(k.type)}

    def schema(self) -> dict[str, Any]:
        properties = {}
        for k in keys_of(Config):
            if is_section(k.type):
                self.defs[k.name] = self.section(k.type, k.key.doc, nullable=True)
                properties[k.name] = {"$ref": f"#/$defs/{k.name}"}
            else:
                properties[k.name] = self.prop(k)
        return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": TITLE,
                "description": DESCRIPTION, "type": ["object", "null"], "additionalProperties": False,
                "properties": properties, "$defs": {**self.defs, **HELPERS}}

    def section(self, cls: type, doc: str | None, *, nullable: bool) -> dict[str, Any]:
        """A mapping of cls's keys; doc is None where the key holding it says it (router.memory)."""
        out: dict[str, Any] = {"type": ["object", "null"] if nullable else "object"}
        if doc is not None:
            out["description"] = plain(doc)
        out.update({"additionalProperties": False, **BETWEEN_KEYS.get(cls, {})})
        out["properties"] = {k.name: self.prop(k) for k in keys_of(cls)}
        return out

    def entry(self, cls: type, doc: str | None) -> dict[str, str]:
        """A $ref to the $def of one entry of a list or mapping (a model, an API key)."""
        name = entry_name(cls)
        if name not in self.defs:
            self.defs[name] = self.section(cls, doc or "", nullable=False)
        return {"$ref": f"#/$defs/{name}"}

    def prop(self, k: Described) -> dict[str, Any]:
        out: dict[str, Any] = {"description": plain(k.key.doc)}
        if k.default != "":  # "" is no default: the key is needed (an API key's secret, or its key_file)
            out["default"] = json_value(k)
        out.update(self.value(k))
        return out

    def value(self, k: Described) -> dict[str, Any]:
        tp, key = k.type, k.key
        if key.kind in ("budget", "budgets"):  # off is their none
            return BUDGET if key.kind == "budget" else {"anyOf": [BUDGET, {"type": "array", "items": BUDGET}]}
        if is_section(tp):
            if tp in self.top:  # a model's own spawn: the top-level section's shape, none = the top-level one
                return {"$ref": f"#/$defs/{self.top[tp]}"}
            return self.section(tp, None, nullable=True)
        out = self.shape(k)
        return with_null(out) if k.optional else out

    def shape(self, k: Described) -> dict[str, Any]:
        tp, key = k.type, k.key
        if key.kind == "json":  # any JSON values; set_params_by_id: model names to such mappings
            each: dict[str, Any] = {"type": "object"}
            if get_args(tp)[1] is not Any:
                each = {"type": "object", "propertyNames": {"type": "string", "pattern": NAME_RE.pattern},
                        "additionalProperties": {"description": plain(key.items or ""), "type": "object"}}
            return {"anyOf": [each, {"$ref": "#/$defs/empty"}]}
        if get_origin(tp) is dict:
            names = {"type": "string", "pattern": NAME_RE.pattern}
            value = get_args(tp)[1]
            # A mapping of sections (models:), or of names to a name or none (a profile's pins).
            entries = self.entry(value, key.items) if is_section(value) else {
                "description": plain(key.items or ""), "type": ["string", "null"]}
            mapping = {"type": "object", "propertyNames": names, "additionalProperties": entries}
            if key.min_items:  # at least so many entries: never empty (a profile's pins)
                return {**mapping, "minProperties": key.min_items}
            return {"anyOf": [mapping, {"$ref": "#/$defs/empty"}]}
        if list_items(tp) == tuple[str, str]:  # NAME: value
            return {"anyOf": [{"type": "object", "additionalProperties": {"type": ["string", "number", "boolean"]}},
                              {"$ref": "#/$defs/empty"}]}
        if (item := list_items(tp)) is not None:
            return self.list_of(k, item)
        if tp == tuple[int, int]:  # a range [first, last]
            lo, hi = k.bounds
            return {"type": "array", "minItems": 2, "maxItems": 2, "items": _number("integer", lo, hi)}
        if key.choices and tp is not str:
            return {"enum": list(key.choices)}
        if key.kind == "size":
            return {"anyOf": [_number("integer", k.bounds[0], None), {"type": "string", "pattern": SIZE}, ENV_REF]}
        if tp is str:
            return string(k)
        if tp in (int, float):
            kind = "integer" if tp is int else "number"
            return {"anyOf": [_number(kind, *k.bounds), {"$ref": f"#/$defs/{kind}String"}]}
        if tp is bool:
            return {"type": "boolean"}
        if tp is Rate:
            return {"anyOf": [{"type": "string", "pattern": RATE}, ENV_REF]}
        raise TypeError(f"{k.field}: no schema for {tp}; describe it in catalogue/schema.py")

    def list_of(self, k: Described, item: Any) -> dict[str, Any]:
        """A list, or one entry alone: the parser reads a lone string as a list of one (a lone
        entry of router.api_keys may also be a number)."""
        if item is str:
            one, each = string(k, numbers=False), string(k)
        else:  # strings or sections
            one = string(k)
            each = {"anyOf": [*alternatives(one), *(self.entry(t, k.key.items) for t in get_args(item)
                                                    if is_section(t))]}
        array: dict[str, Any] = {"type": "array", "items": each}
        if k.key.min_items:
            return {"anyOf": [one, {**array, "minItems": k.key.min_items}]}
        return {"anyOf": [NULL, one, array]}


def catalogue_schema() -> dict[str, Any]:
    return _Drawer().schema()


def schema_text() -> str:
    return json.dumps(catalogue_schema(), indent=2) + "\n"


def string(k: Described, *, numbers: bool = True) -> dict[str, Any]:
    """One string value of key k. The parser reads a number where a string goes as its text
    (`port: 8082` and `host: 0` alike), so a number is drawn in where its text would pass."""
    key = k.key
    alts: list[dict[str, Any]]
    if key.kind == "name":
        alts = [{"type": "string", "pattern": NAME_RE.pattern}, ENV_REF, {"type": "number", "minimum": 0}]
    elif key.kind == "flag":
        alts = [{"type": "string", "pattern": f"^{FLAG_RE.pattern}$", "not": {"enum": sorted(RESERVED_FLAGS)}},
                ENV_REF, {"type": "integer", "maximum": -1}]
    elif key.choices:
        alts = [{"enum": list(key.choices)}, ENV_REF]
    elif key.pattern or key.min_length:
        text = {"type": "string", "minLength": key.min_length, "pattern": key.pattern}
        alts = [{n: v for n, v in text.items() if v is not None}, ENV_REF]
        if key.secret or all(re.search(key.pattern or "", str(n)) for n in (0, -1, 1.5)):
            alts.append({"type": "number"})  # a secret of digits, or a pattern every number's text meets
        elif key.pattern and all(re.search(key.pattern, str(n)) for n in (0, -1, 10)):
            alts.append({"type": "integer"})  # a pattern every whole number's text meets (a priority)
    else:
        return {"$ref": "#/$defs/text"} if numbers else {"type": "string"}
    if not numbers:
        alts = [a for a in alts if a.get("type") not in ("number", "integer")]
    return {"anyOf": alts}


def alternatives(schema: dict[str, Any]) -> list[dict[str, Any]]:
    return schema["anyOf"] if list(schema) == ["anyOf"] else [schema]


def with_null(schema: dict[str, Any]) -> dict[str, Any]:
    if schema == {"$ref": "#/$defs/text"}:
        return {"$ref": "#/$defs/optionalText"}
    if list(schema) == ["type"]:
        return {"type": [schema["type"], "null"]}
    return {"anyOf": [NULL, *alternatives(schema)]}


def _number(kind: str, lo: float, hi: float | None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": kind, "minimum": lo}
    if hi is not None:
        out["maximum"] = hi
    return out


def entry_name(cls: type) -> str:
    """ModelSpec -> model, ApiKey -> apiKey."""
    name = cls.__name__.removesuffix("Spec")
    return name[0].lower() + name[1:]


def json_value(k: Described) -> Any:
    """A default as the file writes it: lists for tuples, a mapping for NAME: value pairs."""
    if list_items(k.type) == tuple[str, str] or get_origin(k.type) is dict:
        return dict(k.default)
    if is_dataclass(k.default) and not isinstance(k.default, type):
        return json.loads(json.dumps(asdict(k.default)))
    return list(k.default) if isinstance(k.default, tuple) else k.default


def plain(doc: str) -> str:
    """Markdown as plain text: `code` and *emphasis* lose their marks, [memory.md](memory.md#x)
    becomes docs/memory.md and another [link](x.md) its words."""
    parts = re.split(r"(`[^`]*`)", doc)
    for i, part in enumerate(parts):
        if part.startswith("`"):
            parts[i] = part[1:-1]
            continue
        part = re.sub(r"\[([^\]]+)\]\([^)]+\)", lambda m: f"docs/{m[1]}" if m[1].endswith(".md") else m[1], part)
        parts[i] = re.sub(r"\*(\w[^*]*)\*", r"\1", part)
    return "".join(parts)


# ----- the key tables of docs/configuration.md ---------------------------------

MARKERS = re.compile(r"(<!-- keys:start (\w+) [^>]*-->\n)(.*?)(<!-- keys:end -->)", re.S)


def key_table(section: str) -> str:
    """The table of one section's keys: `router`, `spawn`, `models` (a model's keys)..."""
    top = {k.name: k for k in keys_of(Config)}
    if section not in top:
        raise KeyError(f"no section {section!r} in the catalogue (one of: {', '.join(top)})")
    tp = top[section].type
    cls = get_args(tp)[1] if get_origin(tp) is dict else tp
    sections = {t.type for t in top.values()}
    rows = ["| key | default | meaning |", "| --- | --- | --- |"]
    for k in keys_of(cls):
        rows.append(_row(k, ""))
        # The keys of router.memory as memory.KEY, those of router.api_keys' mappings as api_keys[].KEY
        # (a model's own spawn has the keys of the top-level spawn, in its own table).
        if is_section(k.type) and k.type not in sections:
            rows.extend(_row(sub, f"{k.name}.") for sub in keys_of(k.type))
        for entry in get_args(list_items(k.type)):
            if is_section(entry):
                rows.extend(_row(sub, f"{k.name}[].") for sub in keys_of(entry))
    return "\n".join(rows) + "\n"


def _row(k: Described, prefix: str) -> str:
    cells = [f"`{prefix}{k.name}`", default_text(k), k.key.doc]
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def default_text(k: Described) -> str:
    v = k.default
    if is_dataclass(v):
        return ""
    if v == "":  # no default: needed unless another key stands in (an API key's key_file)
        return ""
    if v is None:
        return "none"
    if isinstance(v, bool):
        return f"`{str(v).lower()}`"
    if k.key.kind == "size":
        return f"`{size_text(v)}`"
    if isinstance(v, tuple):
        return "`{}`" if list_items(k.type) == tuple[str, str] else f"`[{', '.join(map(str, v))}]`"
    if isinstance(v, dict):
        return "`{}`"
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    return f"`{v}` {k.key.unit}" if k.key.unit and isinstance(v, int | float) else f"`{v}`"


def size_text(n: int) -> str:
    for unit, factor in (("TiB", 1024 ** 4), ("GiB", 1024 ** 3), ("MiB", 1024 ** 2), ("KiB", 1024)):
        if n and n % factor == 0:
            return f"{n // factor}{unit}"
    return str(n)


def with_key_tables(text: str) -> str:
    """docs/configuration.md with each table between its markers drawn again."""
    return MARKERS.sub(lambda m: m[1] + key_table(m[2]) + m[4], text)


# ----- the command ----------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m router.catalogue.schema",
        description="Print the catalogue's JSON Schema, drawn from the keys of router/catalogue/config.py.")
    parser.add_argument("--write", action="store_true",
                        help=f"write {SCHEMA_FILE.name} and the key tables of docs/configuration.md instead")
    args = parser.parse_args(argv)
    if not args.write:
        sys.stdout.write(schema_text())
        return 0
    SCHEMA_FILE.write_text(schema_text(), encoding="utf-8")
    if DOCS_FILE.is_file():  # a source checkout; an installed package has no docs/
        DOCS_FILE.write_text(with_key_tables(DOCS_FILE.read_text(encoding="utf-8")), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
