"""Values as people write them in the catalogue: ${ENV} references, sizes
(16GiB, 512MiB, 1.5GB) and memory budgets (a size, auto, or off)."""

from __future__ import annotations

import os
import re
from typing import Any

from router.catalogue.config import ConfigError

_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def expand_env(value: str, source: str, key: str) -> str:
    def sub(m: re.Match[str]) -> str:
        var = m.group(1)
        if var not in os.environ:
            raise ConfigError(source, key, f"environment variable ${{{var}}} is not set")
        return os.environ[var]

    return _ENV_RE.sub(sub, value)


_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 1000 ** 2, "mb": 1000 ** 2, "mib": 1024 ** 2,
          "g": 1000 ** 3, "gb": 1000 ** 3, "gib": 1024 ** 3, "t": 1000 ** 4, "tb": 1000 ** 4, "tib": 1024 ** 4}


def parse_size(value: Any) -> int | None:
    """`16GiB`, `512MiB`, `1.5GB`, a plain number of bytes; None when it is none of those."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    m = _SIZE_RE.match(str(value))
    if not m:
        return None
    return int(float(m.group(1)) * _UNITS[(m.group(2) or "").lower()])


def budget_value(value: Any, source: str, key: str) -> int | str | None:
    if value is None or value is False or value == "off":
        return None
    if value == "auto":
        return "auto"
    size = parse_size(expand_env(value, source, key) if isinstance(value, str) else value)
    if size is None or size <= 0:
        raise ConfigError(source, key, f"expected a size such as 16GiB or 512MiB, auto, or off; got {value!r}")
    return size
