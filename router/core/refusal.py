"""What a service under the routes (downloads, deleting a model's files)
raises when it will not do what it was asked: why, in its own terms, and a
stable code. It knows nothing of HTTP; the routes' error middleware
(router/http/errors.py) answers it with the status its `why` stands for.
"""

from __future__ import annotations

from typing import Literal

Why = Literal["invalid", "forbidden", "conflict", "failed"]


class Refused(Exception):
    """`why`: invalid (the request names something wrong), forbidden (not allowed
    where it points), conflict (the state does not allow it now), failed (it was
    tried and went wrong)."""

    def __init__(self, why: Why, message: str, code: str):
        super().__init__(message)
        self.why, self.message, self.code = why, message, code
