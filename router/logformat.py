"""`--log-format json`: one JSON object a line, for log shippers.

Fields: time (ISO 8601, UTC), level, logger, message, and, when known, the
model (a child's line or a "[name] ..." message) and the request id of the
request being served.
"""

from __future__ import annotations

import json
import logging
import re
import time

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
