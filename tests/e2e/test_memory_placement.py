"""Memory-aware placement with real llama-server children on the real Gemma
3 270M at different context sizes: models fill a RAM budget, never more."""

from __future__ import annotations

import threading
import time

import psutil
import pytest
import requests

from router.backend.memory_estimate import estimate
from router.discovery.gguf_meta import read_gguf_meta
from tests.support.opskit import chat, model_state, wait_until
from tests.support.routerproc import RouterProcess, free_port, write_config

pytestmark = [pytest.mark.real, pytest.mark.gemma, pytest.mark.timeout(240)]
MiB = 1024 * 1024
BUDGET_MIB = 1350
ADMIN = "admin-token-for-tests"
# One file, three memory sizes: the context (and --swa-full for a full-size sliding-window cache) decides.
ARGS = {
    "small": ["-c", "4096", "-np", "1"],
    "mid": ["-c", "8192", "-np", "1", "--swa-full"],
    "big": ["-c", "32768", "-np", "1", "--swa-full"],
    "huge": ["-c", "32768", "-np", "1", "--swa-full", "-ctk", "f32", "-ctv", "f32"],
}


@pytest.fixture
def router(tmp_path, llama_server, gemma):
    models = {name: {"path": str(gemma), "args": args} for name, args in ARGS.items()}
    models["small"]["pinned"] = True
    cfg = write_config(tmp_path / "config.yaml", models, router={
        "port": free_port(), "models_max": 0, "kv_persistence": False, "watch_config": False,
        "admin_token": ADMIN, "memory": {"ram": f"{BUDGET_MIB}MiB", "gpu": "off", "probe": True}},
        spawn={"command": [str(llama_server), "--model", "$path", "--alias", "$name", "--host", "$host",
                           "--port", "$port"]})
    with RouterProcess(cfg, tmp_path / "router.log") as r:
        yield r


class Sampler:
    """The sum of the children's resident memory, sampled every 0.1 s while the test runs."""

    def __init__(self, r: RouterProcess):
        self.r, self.peak, self.samples = r, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            total = 0
            for child in self.r.children():
                try:
                    total += child.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            self.samples += 1
            time.sleep(0.1)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def loaded(url: str) -> set[str]:
    return {n for n in ARGS if model_state(url, n) == "loaded"}


def test_models_fill_the_budget_and_never_more(router, gemma):
    url = router.url
    with Sampler(router) as sampler:
        assert chat(url, "mid").status_code == 200
        assert chat(url, "small").status_code == 200
        assert loaded(url) == {"mid", "small"}  # both fit: they run together (models_max 0)

        # big does not fit next to both; stopping mid (the least recently used) is enough.
        assert chat(url, "big").status_code == 200
        assert loaded(url) == {"small", "big"}

        # mid again: small is now the least recently used, but pinned; big goes instead.
        assert chat(url, "mid").status_code == 200
        assert loaded(url) == {"small", "mid"}

        # A model bigger than the whole budget is refused at once, naming the figures; nothing stops.
        started = time.monotonic()
        r = chat(url, "huge")
        assert r.status_code == 503 and time.monotonic() - started < 2
        message = r.json()["error"]["message"]
        assert f"the ram budget is {BUDGET_MIB / 1024:.2f} GiB" in message and "needs 1.4" in message
        assert loaded(url) == {"small", "mid"}
    assert sampler.samples > 10
    assert sampler.peak <= BUDGET_MIB * MiB, f"children held {sampler.peak / MiB:.0f} MiB at once"

    status = requests.get(url + "/admin/status", headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30).json()
    assert status["memory"]["budget"] == {"ram": BUDGET_MIB * MiB}
    assert status["memory"]["used"]["ram"] <= BUDGET_MIB * MiB
    by_name = {m["model"]: m for m in status["models"]}
    meta = read_gguf_meta(gemma)
    for name in ("small", "mid", "big"):
        mem = by_name[name]["memory"]
        measured = mem["measured"]["devices"]["ram"]
        expected = estimate(meta, ARGS[name]).total
        assert mem["estimate"]["devices"]["ram"] == expected
        assert abs(expected - measured) / measured < 0.15, (name, expected / MiB, measured / MiB)
    listed = {m["id"]: m for m in requests.get(url + "/v1/models", timeout=30).json()["data"]}
    assert listed["huge"]["memory"]["estimate"]["kv"] == 1152 * MiB  # 18 layers x 32768 cells x f32 K+V


def admin_model(url: str, name: str) -> dict:
    status = requests.get(url + "/admin/status", headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30).json()
    return next(m for m in status["models"] if m["model"] == name)


def test_keep_alive_and_a_full_queue(tmp_path, llama_server, gemma):
    models = {"g": {"path": str(gemma), "args": ["-c", "2048", "-np", "1"], "concurrency_limit": 1,
                    "max_queue": 1},
              "k": {"path": str(gemma), "args": ["-c", "2048", "-np", "1"]},  # runs next to g
              "h": {"path": str(gemma), "args": ["-c", "2048", "-np", "1"], "group": "other"}}
    cfg = write_config(tmp_path / "config.yaml", models, router={
        "port": free_port(), "models_max": 0, "kv_persistence": False, "watch_config": False,
        "admin_token": ADMIN},
        spawn={"command": [str(llama_server), "--model", "$path", "--alias", "$name", "--host", "$host",
                           "--port", "$port"]})
    with RouterProcess(cfg, tmp_path / "router.log") as r:
        # keep_alive 0: unloaded once the reply is done; the child never sees the key.
        assert chat(r.url, "h", keep_alive=0).status_code == 200
        wait_until(lambda: model_state(r.url, "h") == "unloaded", 10, "h to unload after its reply")
        # keep_alive "1s": idle one second, then unloaded (no ttl in the catalogue).
        assert chat(r.url, "g", keep_alive="1s").status_code == 200
        assert model_state(r.url, "g") == "loaded"
        wait_until(lambda: model_state(r.url, "g") == "unloaded", 10, "g to unload once idle for 1 s")
        assert "[g] idle for 1 s: unloading (ttl)" in r.log()
        assert chat(r.url, "g", keep_alive="soon").status_code == 400
        # keep_alive -1: loaded for good (a load counts as waiting, so load it before the queue test).
        # k, told "1s" after g's last reply, goes idle later than g: once k is unloaded for it,
        # g would have been too, had -1 not replaced g's "1s".
        assert chat(r.url, "g", keep_alive=-1).status_code == 200
        assert chat(r.url, "k", keep_alive="1s").status_code == 200
        wait_until(lambda: model_state(r.url, "k") == "unloaded", 10, "k to unload once idle for 1 s")
        assert r.log().count("[g] idle for 1 s: unloading (ttl)") == 1  # the one before
        assert admin_model(r.url, "g")["state"] == "loaded"
        # concurrency_limit 1, max_queue 1: one in flight, one waiting, the third is told to come back.
        results: list[requests.Response] = []

        def slow() -> None:
            results.append(chat(r.url, "g", max_tokens=300, ignore_eos=True))

        threads = [threading.Thread(target=slow) for _ in range(2)]
        threads[0].start()
        wait_until(lambda: admin_model(r.url, "g")["in_flight"] == 1, 30, "the first request in flight")
        threads[1].start()
        wait_until(lambda: admin_model(r.url, "g")["waiting"] == 1, 30, "the second request queued")
        busy = chat(r.url, "g")
        for t in threads:
            t.join(60)
        assert busy.status_code == 429, busy.text
        assert busy.headers["Retry-After"] == "1" and busy.json()["error"]["code"] == "model_busy"
        assert [x.status_code for x in results] == [200, 200]
