"""The one YAML dialect of the catalogue: YAML 1.2, read and written with ruamel.yaml.

Reading with a YAML 1.1 library what a 1.2 library wrote turns a model
named `no`, `on` or `off` into a boolean key; one library for both keeps a
name a name. And since people read the catalogue with other libraries too
(PyYAML, Ansible, Go's yaml.v2 follow YAML 1.1), every writer quotes each
string that either version would take for something else: `'no'`, `'1:20'`,
`'1e3'`, `'2024-01-01'`, `'~'`. ruamel's own resolvers for both versions
decide, so the rule is YAML's, not a list kept here.
"""

from __future__ import annotations

from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.nodes import ScalarNode
from ruamel.yaml.representer import RoundTripRepresenter
from ruamel.yaml.resolver import VersionedResolver

_STR = "tag:yaml.org,2002:str"
_RESOLVERS = (VersionedResolver(version=(1, 1)), VersionedResolver(version=(1, 2)))


class YAMLReadError(ValueError):
    def __init__(self, where: str, problem: str):
        self.where, self.problem = where, problem
        super().__init__(f"{where}: {problem}")


def read_yaml(text: str) -> Any:
    """Plain data (dicts, lists, scalars) from YAML 1.2 text; YAMLReadError names the place."""
    try:
        return YAML(typ="safe", pure=True).load(text)
    except MarkedYAMLError as e:
        mark = e.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "<yaml>"
        raise YAMLReadError(where, str(e.problem or e)) from None
    except YAMLError as e:
        raise YAMLReadError("<yaml>", str(e)) from None


def plain_is_not_a_string(text: str) -> bool:
    """Would some YAML reader take `text`, written without quotes, for a boolean, null,
    number, date or merge key? Either version's rules, in the case given or in lower
    case (`nO`, `NuLl`: no reader's, but a reader is not a spec)."""
    return any(r.resolve(ScalarNode, t, (True, False)) != _STR
               for r in _RESOLVERS for t in dict.fromkeys((text, text.lower())))


class _Representer(RoundTripRepresenter):
    """Round-trip writing (comments, order, the quotes a file had) that quotes a string
    only a YAML 1.2 reader would read as a string."""

    def represent_str(self, data: str) -> Any:
        if plain_is_not_a_string(data):
            return self.represent_scalar(_STR, data, style="'")
        return super().represent_str(data)


_Representer.add_representer(str, _Representer.represent_str)


def writer_yaml() -> YAML:
    """The round-trip YAML every catalogue writer uses: quotes as a file had them, long
    paths never folded, and every ambiguous string quoted (plain_is_not_a_string)."""
    y = YAML(typ="rt")
    y.Representer = _Representer
    y.preserve_quotes = True
    y.width = 4096
    return y
