"""Request captures for debugging (router.capture_bytes, llama-swap's captureBuffer),
against a real router and llama-server: off by default, admin only, bounded,
keys redacted, bodies cut."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests

from tests.support.opskit import TIMEOUT, chat, tiny_catalogue, tiny_router, wait_until

pytestmark = pytest.mark.real

KEY = "inference-key-4c2a9e"
ADMIN = "admin-token-7f3b1d5e"
BUDGET = 64 * 1024


def admin(r, path: str) -> requests.Response:
    return requests.get(r.url + "/admin" + path, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=TIMEOUT)


def test_captures_are_off_by_default(tmp_path: Path, llama_server, tiny_dir):
    with tiny_router(tmp_path, llama_server, tiny_catalogue(tiny_dir, "tiny-a"), admin_token=ADMIN) as r:
        assert chat(r.url, "tiny-a").status_code == 200
        listed = admin(r, "/captures").json()
        assert listed["capture_bytes"] == 0 and listed["data"] == []


def test_a_capture_holds_the_request_and_reply_with_every_key_redacted(tmp_path: Path, llama_server, tiny_dir):
    with tiny_router(tmp_path, llama_server, tiny_catalogue(tiny_dir, "tiny-a"), admin_token=ADMIN,
                     api_keys=[KEY], capture_bytes=BUDGET) as r:
        # The prompt quotes both secrets; the key also goes as x-api-key and in the query.
        prompt = f"my key is {KEY} and the admin's {ADMIN}"
        resp = requests.post(r.url + f"/v1/chat/completions?api_key={KEY}", timeout=TIMEOUT, headers={
            "Authorization": f"Bearer {KEY}", "x-api-key": KEY, "Cookie": "session=abc"},
            json={"model": "tiny-a", "messages": [{"role": "user", "content": prompt}], "max_tokens": 4})
        assert resp.status_code == 200, resp.text

        # Admin only: an inference key is refused.
        refused = requests.get(r.url + "/admin/captures", headers={"Authorization": f"Bearer {KEY}"}, timeout=TIMEOUT)
        assert refused.status_code == 401
        listed = wait_until(lambda: admin(r, "/captures").json()["data"], 10, "a capture")
        summary = listed[0]
        assert summary["model"] == "tiny-a" and summary["path"].startswith("/v1/chat/completions")
        assert summary["status"] == 200 and summary["request_id"] == resp.headers["X-Request-Id"]
        one = admin(r, f"/captures/{summary['id']}")
        assert one.status_code == 200
        capture = one.json()
        text = json.dumps(capture)
        assert KEY not in text and ADMIN not in text
        assert capture["req_headers"]["Authorization"] == "[REDACTED]"
        assert capture["req_headers"]["x-api-key"] == "[REDACTED]" and capture["req_headers"]["Cookie"] == "[REDACTED]"
        assert "my key is [REDACTED] and the admin's [REDACTED]" in capture["req_body"]
        assert capture["req_path"] == "/v1/chat/completions?api_key=[REDACTED]"
        reply = resp.json()
        assert json.loads(capture["resp_body"])["choices"] == reply["choices"]
        assert capture["resp_headers"]["Content-Type"].startswith("application/json")
        assert capture["relayed"] is True

        assert admin(r, "/captures/999999").status_code == 404
        assert admin(r, "/captures/abc").status_code == 400


def test_captures_stay_within_their_budget_and_cut_long_bodies(tmp_path: Path, llama_server, tiny_dir):
    with tiny_router(tmp_path, llama_server, tiny_catalogue(tiny_dir, "tiny-a"), admin_token=ADMIN,
                     capture_bytes=BUDGET) as r:
        long_text = "word " * 8000  # 40 000 bytes: more than a quarter of the budget, and so is its reply
        for _ in range(6):
            tokens = requests.post(r.url + "/tokenize", json={"model": "tiny-a", "content": long_text},
                                   timeout=TIMEOUT)
            assert tokens.status_code == 200, tokens.text
        streamed = requests.post(r.url + "/v1/chat/completions", timeout=TIMEOUT, json={
            "model": "tiny-a", "stream": True, "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]})
        assert streamed.status_code == 200
        listed = admin(r, "/captures").json()
        assert listed["used_bytes"] <= BUDGET
        assert 1 < len(listed["data"]) < 7  # the oldest were dropped
        ids = [c["id"] for c in listed["data"]]
        assert ids == sorted(ids, reverse=True) and ids[0] == 7  # newest first
        cut = admin(r, f"/captures/{ids[1]}").json()
        assert cut["req_body_truncated"] is True and cut["req_bytes"] > 40_000
        assert len(cut["req_body"]) == BUDGET // 4
        assert cut["resp_body_truncated"] is True and cut["resp_bytes"] == len(tokens.content)
        assert tokens.text.startswith(cut["resp_body"])
        stream = admin(r, f"/captures/{ids[0]}").json()
        assert stream["resp_body"].startswith("data: ") and stream["resp_body"].rstrip().endswith("data: [DONE]")
        assert stream["resp_body"] == streamed.text
