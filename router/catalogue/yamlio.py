"""The one YAML dialect of the catalogue: YAML 1.2, read and written with ruamel.yaml.

Reading with a YAML 1.1 library what a 1.2 library wrote turns a model
named `no`, `on` or `off` into a boolean key; one library for both keeps a
name a name.
"""

from __future__ import annotations

from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError


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
