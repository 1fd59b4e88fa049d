"""The router's log: where it goes, how verbose, and `--log-format json`, one
JSON object a line, for log shippers (router.log_file, log_level, log_format).

JSON fields: time (ISO 8601, UTC), level, logger, message, and, when known, the
model (a child's line or a "[name] ..." message) and the request id of the
request being served.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time

from router.catalogue.config import RouterSettings
from router.http.request_id import current as current_request_id

_MODEL_PREFIX = re.compile(r"^\[([^\]\s]{1,128})\] ")


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        out: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        m = _MODEL_PREFIX.match(message)
        if m:
            out["model"] = m.group(1)
            message = message[m.end():]
        rid = current_request_id.get()
        if rid:
            out["request_id"] = rid
        out["message"] = message
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def setup_logging(level: str, fmt: str = "text", file: str | None = None) -> None:
    """The root logger's level, format and destination (stderr, or `file` appended); called
    again once the catalogue is read, whose router.log_* apply where the command line is silent.
    As logging.basicConfig, it leaves alone a program that set up logging itself (a test run)."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _OURS, False)]:
        root.removeHandler(old)
        old.close()
    if file or not root.handlers:
        handler = logging.FileHandler(file, encoding="utf-8") if file else logging.StreamHandler()
        if fmt == "json":
            handler.setFormatter(JSONFormatter())
        else:
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S"))
        setattr(handler, _OURS, True)
        root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper()))
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("watchfiles").setLevel(logging.WARNING)  # it logs every filtered-out change
    logging.getLogger("httpx2").setLevel(logging.WARNING)  # huggingface_hub's client logs every Hub request


_OURS = "_llama_router"  # marks the handler setup_logging added


def log_as(level: str | None, fmt: str | None, file: str | None, settings: RouterSettings) -> bool:
    """Logging as the command line says (None where it is silent), else as router.log_* say;
    False, said on stderr, when the log file cannot be opened."""
    try:
        setup_logging(level or settings.log_level, fmt or settings.log_format, file or settings.log_file)
    except OSError as e:
        print(f"llama-router: configuration error: {'--log-file' if file else 'router.log_file'}: cannot open it: "
              f"{e.strerror or e}", file=sys.stderr)
        return False
    return True
