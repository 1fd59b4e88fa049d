"""keep_alive in a request body, as Ollama clients send it."""

from __future__ import annotations

import pytest

from router.http.errors import HTTPError
from router.http.request import keep_alive_seconds, take_keep_alive


@pytest.mark.parametrize(("value", "seconds"), [
    (0, 0.0), (300, 300.0), (-1, -1.0), ("0", 0.0), ("-1", -1.0), ("10m", 600.0), ("1h30m", 5400.0),
    ("45s", 45.0), ("1.5h", 5400.0), ("-1m", -60.0), ("250ms", 0.25), (" 2m ", 120.0),
])
def test_durations_and_numbers(value, seconds):
    assert keep_alive_seconds(value) == seconds


@pytest.mark.parametrize("value", ["soon", "", "10 minutes", "m", True, None, [], {}])
def test_anything_else_is_a_clear_400(value):
    with pytest.raises(HTTPError) as e:
        take_keep_alive({"model": "m", "keep_alive": value})
    assert e.value.status == 400 and e.value.code == "invalid_keep_alive"


def test_it_is_taken_out_of_the_body_the_child_gets():
    data = {"model": "m", "keep_alive": "5m", "messages": []}
    assert take_keep_alive(data) == 300.0
    assert data == {"model": "m", "messages": []}
    assert take_keep_alive(data) is None
