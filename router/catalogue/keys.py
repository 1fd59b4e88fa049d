"""How one key of the catalogue is described: `key()` on a dataclass field.

Each key of config.yaml is a field of a dataclass in catalogue/config.py, and
that field says everything about it once: its type (the annotation), its
default, and through `key()` a line for users, its unit, allowed values and
bounds. The parser's checks (catalogue/parse.py), the JSON Schema editors use
and the key tables of docs/configuration.md (catalogue/schema.py) are all
read from there, so a new key is one line in config.py.
"""

from __future__ import annotations

import functools
import operator
import types
from dataclasses import MISSING, Field, dataclass, field, fields, is_dataclass
from typing import Any, Union, get_args, get_origin, get_type_hints

METADATA = "catalogue"  # where a field's metadata holds its Key


@dataclass(frozen=True)
class Key:
    """What a user may write for one key, beyond its Python type and default."""

    doc: str  # for users, one paragraph; `code` and [links](memory.md) as in docs/*.md
    name: str | None = None  # the file's key, when it is not the field's name
    unit: str | None = None  # of a number: s, bytes, tokens...
    choices: tuple[Any, ...] = ()  # the values allowed, when only a few are
    minimum: float | None = None  # of a number (None: 0), or of each number of a range
    maximum: float | None = None
    min_length: int | None = None  # of a string
    min_items: int | None = None  # of a list, or entries of a mapping
    pattern: str | None = None  # a regular expression a string value matches (re.search)
    # A value the Python type alone does not say, checked and drawn the same way wherever it is used:
    # "name" (a model name), "flag" (a llama-server flag a request may add), "size" (16GiB or bytes),
    # "budget" (a size, auto or off), "budgets" (one budget or one per GPU).
    kind: str | None = None
    expect: str | None = None  # what an error says was expected, where the usual wording would not say it
    secret: bool = False  # never in repr() nor in an error message
    items: str | None = None  # of a list or mapping of sections: what one entry is


def key(default: Any = MISSING, doc: str = "", *, factory: Any = MISSING, **description: Any) -> Any:
    """A field of the catalogue: `port: int = key(8082, "the port clients use.")`."""
    described = Key(doc=doc, **description)
    metadata = {METADATA: described}
    if factory is not MISSING:
        return field(default_factory=factory, repr=not described.secret, metadata=metadata)
    return field(default=default, repr=not described.secret, metadata=metadata)


@dataclass(frozen=True)
class Described:
    """One key of a section as the parser and the schema see it."""

    field: str  # the dataclass field
    name: str  # the key in the file
    type: Any  # the annotation without None
    optional: bool  # None is a value (`ttl: null`: none)
    default: Any
    key: Key

    @property
    def bounds(self) -> tuple[float, float | None]:
        """A number's range: no number of the catalogue is negative unless its key says so."""
        return (0 if self.key.minimum is None else self.key.minimum), self.key.maximum


@functools.cache
def keys_of(cls: type) -> tuple[Described, ...]:
    """The keys of one section of the file, in the order of its dataclass's fields.
    Fields without a Key (a model's own name, what the router fills in) are none."""
    hints = get_type_hints(cls)
    out = []
    for f in fields(cls):
        if METADATA not in f.metadata:
            continue
        base, optional = split_optional(hints[f.name])
        out.append(Described(f.name, f.metadata[METADATA].name or f.name, base, optional, default_of(f),
                             f.metadata[METADATA]))
    return tuple(out)


def file_keys(cls: type) -> set[str]:
    return {k.name for k in keys_of(cls)}


def default_of(f: Field[Any]) -> Any:
    return f.default_factory() if f.default_factory is not MISSING else f.default


def split_optional(annotation: Any) -> tuple[Any, bool]:
    """`float | None` -> (float, True); `int | str` stays a union."""
    if get_origin(annotation) not in (Union, types.UnionType):
        return annotation, False
    rest = [a for a in get_args(annotation) if a is not type(None)]
    return functools.reduce(operator.or_, rest), len(rest) < len(get_args(annotation))


def is_section(annotation: Any) -> bool:
    """A dataclass of keys (router, a model...), not a value such as a Rate."""
    return (isinstance(annotation, type) and is_dataclass(annotation)
            and any(METADATA in f.metadata for f in fields(annotation)))


def list_items(annotation: Any) -> Any | None:
    """The item type of `tuple[X, ...]` (a list in the file), else None."""
    args = get_args(annotation)
    if get_origin(annotation) is tuple and len(args) == 2 and args[1] is Ellipsis:
        return args[0]
    return None
