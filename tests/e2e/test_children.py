"""Child process machinery against a stand-in backend: faults a real
llama-server cannot be made to show on cue (lost port race, slow health,
crash while loading)."""

from __future__ import annotations

import sys
import time

import openai
import pytest

from tests.support.routerproc import RouterProcess, write_config


def fake_spawn(*extra: str) -> dict:
    return {"command": [sys.executable, "-m", "tests.support.fakebackend", "--port", "$port", *extra]}


def run(tmp_path, spawn, **router):
    cfg = write_config(tmp_path / "config.yaml", {"fake": {"spawn": spawn}},
                       router={"health_timeout": 20, **router})
    return RouterProcess(cfg, tmp_path / "router.log")


def chat(r, n=3):
    c = openai.OpenAI(base_url=r.url + "/v1", api_key="x", timeout=30, max_retries=0)
    return c.chat.completions.create(model="fake", messages=[{"role": "user", "content": "hi"}], max_tokens=n)


def test_a_child_that_loses_its_port_is_restarted_on_another(tmp_path):
    marker = tmp_path / "bind-failed"
    with run(tmp_path, fake_spawn("--fail-bind-once", str(marker))) as r:
        assert chat(r).choices[0].message.content == "xxx"
        assert marker.exists()
        assert "retrying on another" in r.log()


def test_a_backend_without_the_native_protocol_is_ready_when_its_health_answers(tmp_path):
    with run(tmp_path, fake_spawn("--slow-health", "1.0")) as r:
        t0 = time.monotonic()
        assert chat(r).choices
        assert time.monotonic() - t0 >= 0.9  # waited for health, not just for the port


def test_a_child_that_exits_while_loading_fails_the_request_at_once_with_its_log(tmp_path):
    with run(tmp_path, fake_spawn("--exit-after-start"), health_timeout=60) as r:
        t0 = time.monotonic()
        with pytest.raises(openai.APIStatusError) as e:
            chat(r)
        assert e.value.status_code == 503
        assert "loading failed on purpose" in e.value.message
        assert time.monotonic() - t0 < 30  # not the 60 s health timeout
