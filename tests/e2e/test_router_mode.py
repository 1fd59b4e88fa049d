"""llama.cpp's router-mode command line, given to llama-router: the same flags,
the same model ids, the same answers. Each test starts llama-router the way a
llama.cpp user starts `llama-server` in router mode, against a real
llama-server, and where it is cheap runs llama.cpp's own router side by side
on the same files and compares the replies."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from tests.support.fakehub import FakeHub
from tests.support.hfcache import cache_file
from tests.support.http import call, wait_until
from tests.support.opskit import SSEReader
from tests.support.routerproc import ROOT, RouterProcess, child_command, free_port, write_config
from tests.support.tinygguf import write_tiny_model

pytestmark = pytest.mark.real

KEY = "sk-router-mode-key"
CHAT = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


def bare_config(path: Path) -> Path:
    """Only what the test harness needs (port, children's ports, KV folder): the
    models and their arguments come from the llama.cpp-style command line."""
    path.write_text(yaml.safe_dump({"router": {"port": free_port(), "port_range": [54000, 54999],
                                               "slot_save_path": str(path.parent / "slots")},
                                    "sources": {"hf_cache": False}}))
    return path


def child_argv(router: RouterProcess, model: str) -> list[str]:
    """The real command line of the llama-server child serving `model`."""
    for p in router.children():
        try:
            argv = p.cmdline()
        except psutil.NoSuchProcess:
            continue
        if "--alias" in argv and argv[argv.index("--alias") + 1] == model:
            return argv
    raise AssertionError(f"no child serves {model}: {[p.cmdline() for p in router.children()]}")


def opt(argv: list[str], *names: str) -> str | None:
    """The value llama-server takes for an option given under any of `names` (the last one)."""
    value = None
    for i, a in enumerate(argv[:-1]):
        if a in names:
            value = argv[i + 1]
    return value


class LlamaCppRouter:
    """llama.cpp's own router mode: `llama-server` with no model, on the same files."""

    def __init__(self, binary: Path, log: Path, *args: str, env: dict[str, str] | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        with open(log, "wb") as out:  # the process writes to its own copy of the descriptor
            self.proc = subprocess.Popen([str(binary), "--host", "127.0.0.1", "--port", str(self.port), *args],
                                         stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env={**os.environ, **(env or {})}, start_new_session=True)
        self.ps = psutil.Process(self.proc.pid)

    def __enter__(self) -> LlamaCppRouter:
        def healthy() -> bool:
            assert self.proc.poll() is None, "llama.cpp's router exited"
            try:
                return call(self.url + "/health", timeout=2)[0] == 200
            except OSError:
                return False

        try:
            wait_until(healthy, 60, "llama.cpp's router")
        except BaseException:
            self.__exit__()  # a router that never came up is still stopped, by pid
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        kids = self.ps.children(recursive=True)
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        _, alive = psutil.wait_procs(kids, timeout=15)
        for p in alive:
            p.kill()


def test_command_line_of_llamacpp_router_mode(tmp_path, tiny_dir, llama_server):
    """`llama-router --models-dir D -c 1024 -np 2 --no-models-autoload --api-key K`: the
    child gets -c/-np, the key is required, a model that is not running answers 400
    like llama.cpp's router until ?autoload=true loads it; /props says so."""
    cfg = bare_config(tmp_path / "c.yaml")
    auth = {"Authorization": f"Bearer {KEY}"}
    with RouterProcess(cfg, tmp_path / "router.log", "--models-dir", str(tiny_dir), "-c", "1024", "-np", "2",
                       "--no-models-autoload", "--api-key", KEY) as router:
        assert call(router.url + "/v1/chat/completions", {"model": "tiny-a", **CHAT})[0] == 401
        status, body = call(router.url + "/v1/chat/completions", {"model": "tiny-a", **CHAT}, headers=auth)
        assert status == 400 and body["error"]["type"] == "invalid_request_error", body
        assert "not loaded" in body["error"]["message"]
        assert not router.children()  # refused without loading anything
        status, _ = call(router.url + "/v1/chat/completions?autoload=true", {"model": "tiny-a", **CHAT},
                         headers=auth, timeout=60)
        assert status == 200
        assert call(router.url + "/v1/chat/completions", {"model": "tiny-a", **CHAT}, headers=auth)[0] == 200
        argv = child_argv(router, "tiny-a")
        assert opt(argv, "-c", "--ctx-size") == "1024" and opt(argv, "-np", "--parallel") == "2", argv
        status, props = call(router.url + "/props", headers=auth)
        assert status == 200 and props["role"] == "router" and props["models_autoload"] is False
        assert re.fullmatch(r"b\d+-\w+", props["build_info"]), props["build_info"]
        version = subprocess.run([str(llama_server), "--version"], capture_output=True, text=True, timeout=30)
        build = re.search(r"build (\d+), commit (\w+)|version: (\d+) \((\w+)\)", version.stdout + version.stderr)
        assert build is not None
        assert props["build_info"] == "b{}-{}".format(*[g for g in build.groups() if g is not None])


def test_preset_ini_defaults_sections_and_command_line_precedence(tmp_path, tiny_dir, llama_server):
    """A --models-preset file: [*] for every model, a section per model over it, the
    command line over both (llama.cpp's precedence); a section with `model =` adds a
    model; `load-on-startup` loads it without a request."""
    extra = write_tiny_model(tmp_path / "elsewhere" / "extra.gguf", name="extra", seed=9)
    preset = tmp_path / "models.ini"
    preset.write_text(f"""version = 1
; defaults for every model
[*]
c = 768
temp = 0.3
n-predict = 7

[tiny-a]
ctx-size = 640
LLAMA_ARG_N_PREDICT = 5

[my-extra]
model = {extra}
load-on-startup = true
""")
    cfg = bare_config(tmp_path / "c.yaml")
    with RouterProcess(cfg, tmp_path / "router.log", "--models-dir", str(tiny_dir), "--models-preset", str(preset),
                       "--models-max", "3", "--temp", "0.9") as router:
        wait_until(lambda: any(m["id"] == "my-extra" and m["status"]["value"] == "loaded"
                               for m in call(router.url + "/models")[1]["data"]), 60, "load-on-startup")
        for model in ("tiny-a", "tiny-b"):
            assert call(router.url + "/v1/chat/completions", {"model": model, **CHAT}, timeout=60)[0] == 200
        a, b, extra_argv = (child_argv(router, m) for m in ("tiny-a", "tiny-b", "my-extra"))
        assert opt(a, "-c", "--ctx-size") == "640" and opt(a, "-n", "--n-predict", "--predict") == "5"  # section
        assert opt(b, "-c", "--ctx-size") == "768" and opt(b, "-n", "--n-predict", "--predict") == "7"  # [*]
        assert opt(extra_argv, "-m", "--model") == str(extra)
        for argv in (a, b, extra_argv):
            assert opt(argv, "--temp", "--temperature") == "0.9"  # the command line wins over the preset


def test_same_ids_statuses_and_errors_as_llamacpp_router(tmp_path, tiny_dir, llama_server):
    """The same command line to llama.cpp's router and to llama-router, on the same
    models folder and Hugging Face cache: the same model ids (`user/repo:QUANT` for
    the cache), the same statuses, the same refusal without autoload."""
    cache = tmp_path / "hub"
    cache_file(cache, "acme/Tiny-GGUF", "c" * 40, "Tiny-Q8_0.gguf", tiny_dir / "tiny-c.gguf")
    env = {"HF_HUB_CACHE": str(cache), "LLAMA_CACHE": str(cache)}
    models = tmp_path / "models"
    models.mkdir()
    for name in ("tiny-a", "tiny-b"):
        (models / f"{name}.gguf").symlink_to(tiny_dir / f"{name}.gguf")
    args = ("--models-dir", str(models), "--models-max", "2", "--no-models-autoload", "-c", "512", "-np", "1")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"router": {"port": free_port(), "port_range": [54000, 54999],
                                              "slot_save_path": str(tmp_path / "slots")}}))
    with LlamaCppRouter(llama_server, tmp_path / "llamacpp.log", *args, env=env) as cpp, \
            RouterProcess(cfg, tmp_path / "router.log", *args, env=env) as ours:
        replies = {}
        for name, url in (("llama.cpp", cpp.url), ("llama-router", ours.url)):
            listed = {m["id"]: m["status"]["value"] for m in call(url + "/models")[1]["data"]}
            refused = call(url + "/v1/chat/completions", {"model": "acme/Tiny-GGUF:Q8_0", **CHAT})
            loaded = call(url + "/models/load", {"model": "acme/Tiny-GGUF:Q8_0"})
            wait_until(lambda u=url: {m["id"]: m["status"]["value"] for m in call(u + "/models")[1]["data"]}
                       .get("acme/Tiny-GGUF:Q8_0") == "loaded", 60, f"{name} loads the cache model")
            chat = call(url + "/v1/chat/completions", {"model": "acme/Tiny-GGUF:Q8_0", **CHAT}, timeout=60)
            quoted = urllib.parse.quote("acme/Tiny-GGUF:Q8_0", safe="")
            props = call(url + f"/props?model={quoted}", timeout=30)
            replies[name] = (listed, refused[0], refused[1]["error"]["type"], loaded, chat[0], props[0])
        assert replies["llama-router"] == replies["llama.cpp"], replies
        listed = replies["llama-router"][0]
        assert listed == {"tiny-a": "unloaded", "tiny-b": "unloaded", "acme/Tiny-GGUF:Q8_0": "unloaded"}
        # The name llama-router gave cache models before still reaches the same model.
        assert call(ours.url + "/v1/chat/completions", {"model": "acme-tiny-q8_0", **CHAT}, timeout=60)[0] == 200


def test_import_preset_writes_a_catalogue_that_serves_it(tmp_path, tiny_dir, llama_server):
    """`--import-preset models.ini` writes the preset as a catalogue (its [*] as
    spawn.args, its sections as models); the router then serves it as llama.cpp would."""
    preset = tmp_path / "models.ini"
    preset.write_text(f"""[*]
c = 768

[first]
model = {tiny_dir / "tiny-a.gguf"}
c = 640
alias = one,uno

[second]
model = {tiny_dir / "tiny-b.gguf"}
""")
    dest = bare_config(tmp_path / "c.yaml")
    done = subprocess.run([sys.executable, "-m", "router", "--import-preset", str(preset), "--config", str(dest)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    catalogue = yaml.safe_load(dest.read_text())
    assert set(catalogue["models"]) == {"first", "second"}
    with RouterProcess(dest, tmp_path / "router.log", "--models-max", "2") as router:
        for model in ("uno", "second"):
            assert call(router.url + "/v1/chat/completions", {"model": model, **CHAT}, timeout=60)[0] == 200
        assert opt(child_argv(router, "first"), "-c", "--ctx-size") == "640"
        assert opt(child_argv(router, "second"), "-c", "--ctx-size") == "768"


def listed(url: str, path: str = "/models") -> dict[str, str]:
    """Each model's status as a list of the llama.cpp router API gives it."""
    return {m["id"]: m["status"]["value"] for m in call(url + path)[1]["data"]}


def load_and_wait(url: str, model: str) -> None:
    status, body = call(url + "/models/load", {"model": model})
    assert status == 200 and body == {"success": True}, body
    wait_until(lambda: listed(url).get(model) == "loaded", 60, f"{model} loaded")


def test_a_model_reads_loaded_only_once_the_model_it_evicted_reads_unloaded(tmp_path, tiny_dir, llama_server):
    """llama.cpp's test_router_models_max_evicts_lru: with --models-max 2, loading a third
    model evicts the least recently used one. As in llama.cpp's router, `unloaded` means the
    process is gone, and the third model reads `loaded` only once the first reads `unloaded`
    (it may start while the first exits, but serves once it is gone): GET /models, /v1/models
    and the dashboard never show it loaded next to the model it evicted, and on /models/sse
    the first's `unloaded` (with its exit code) comes before the third's `loaded`."""
    # tiny-a's process takes 1.5 s more to exit after llama-server's own exit: it is still exiting
    # when tiny-c is up. Named llama-server*, it speaks llama-server's child protocol.
    slow_exit = tmp_path / "llama-server-slow-exit"
    slow_exit.write_text(f'#!/bin/sh\ntrap "" TERM\n"{llama_server}" "$@"\nsleep 1.5\n')
    slow_exit.chmod(0o755)
    models = {n: {"path": str(tiny_dir / f"{n}.gguf")} for n in ("tiny-a", "tiny-b", "tiny-c")}
    models["tiny-a"]["spawn"] = {"command": child_command(slow_exit)}
    cfg = write_config(tmp_path / "c.yaml", models, spawn={"command": child_command(llama_server)})
    with RouterProcess(cfg, tmp_path / "router.log", "--models-max", "2") as router:
        load_and_wait(router.url, "tiny-a")
        load_and_wait(router.url, "tiny-b")
        with SSEReader(router.url + "/models/sse") as sse:
            assert call(router.url + "/models/load", {"model": "tiny-c"})[0] == 200
            seen: list[tuple[str, str]] = []  # (tiny-a, tiny-c) in each view, each time they were read

            def read_views() -> bool:
                dash = {r["name"]: r["state"] for r in call(router.url + "/dashboard/api/models")[1]["models"]}
                for view in (listed(router.url), listed(router.url, "/v1/models"), dash):
                    seen.append((view["tiny-a"], view["tiny-c"]))
                return seen[-1][1] == "loaded"

            wait_until(read_views, 60, "tiny-c loaded")
            assert all(a == "unloaded" for a, c in seen if c == "loaded"), seen
            assert listed(router.url) == {"tiny-a": "unloaded", "tiny-b": "loaded", "tiny-c": "loaded"}
            assert not [p for p in router.children() if opt(p.cmdline(), "--alias") == "tiny-a"]
            order: list[dict] = []
            sse.wait_for(lambda e: order.append(e) or (e["model"] == "tiny-c"
                                                       and e["data"].get("status") == "loaded"), 30)
            changes = [(e["model"], e["data"]["status"]) for e in order if e["event"] == "status_change"]
            assert changes.index(("tiny-a", "unloaded")) < changes.index(("tiny-c", "loaded")), changes
            assert ("tiny-a", "loaded") not in changes and ("tiny-b", "unloaded") not in changes
            assert next(e for e in order if e["model"] == "tiny-a" and e["event"] == "status_change")[
                "data"]["exit_code"] == 0


def test_a_request_in_flight_keeps_its_model_and_a_client_that_leaves_causes_no_swap(tmp_path, tiny_dir,
                                                                                     llama_server):
    """llama.cpp's test_router_queue_client_disconnect_keeps_model, with the
    LLAMA_SERVER_DEBUG_FAKE_TIMING its suite sets (each relayed request holds its model for
    2 s first): a /tokenize in flight (a request that takes no slot) keeps tiny-a loaded
    while a request for tiny-b waits; tiny-b's client gives up; once the tokenize ends,
    tiny-a stays loaded and tiny-b is never started."""
    cfg = bare_config(tmp_path / "c.yaml")
    with RouterProcess(cfg, tmp_path / "router.log", "--models-dir", str(tiny_dir), "--models-max", "1",
                       "-c", "512", "-np", "1", env={"LLAMA_SERVER_DEBUG_FAKE_TIMING": "1"}) as router, \
            ThreadPoolExecutor(2) as pool:
        load_and_wait(router.url, "tiny-a")

        def tokenize(model: str, timeout: float) -> tuple[int, Any]:
            return call(router.url + "/tokenize", {"model": model, "content": "hello world"}, timeout=timeout)

        def rows() -> dict[str, dict]:
            return {r["name"]: r for r in call(router.url + "/dashboard/api/models")[1]["models"]}

        busy = pool.submit(tokenize, "tiny-a", 30)
        wait_until(lambda: rows()["tiny-a"]["inflight"] == 1, 10, "the tokenize in flight")
        gave_up = pool.submit(tokenize, "tiny-b", 1)
        wait_until(lambda: rows()["tiny-b"]["waiting"] == 1, 10, "the request for tiny-b waiting")
        while not busy.done():  # tiny-a is never stopped under its request
            assert listed(router.url) == {"tiny-a": "loaded", "tiny-b": "unloaded", "tiny-c": "unloaded"}
            time.sleep(0.05)
        status, body = busy.result()
        assert status == 200 and body["tokens"], body
        with pytest.raises(OSError):  # the client left after 1 s, while it waited
            gave_up.result()
        held_until = time.monotonic() + 2.0  # nobody waits any more: nothing may move
        while time.monotonic() < held_until:
            assert listed(router.url) == {"tiny-a": "loaded", "tiny-b": "unloaded", "tiny-c": "unloaded"}
            assert rows()["tiny-b"]["waiting"] == 0
            time.sleep(0.1)
        assert [child_argv(router, "tiny-a")] == [p.cmdline() for p in router.children()]


def test_dedup_cache_models_hides_what_a_preset_serves_as_llamacpp_does(tmp_path, tiny_dir, llama_server):
    """llama.cpp's test_router_dedup_cache_models, side by side with llama.cpp's router on
    the same preset and cache: `dedup-cache-models` in a section hides the cache models its
    `hf-repo` and `spec-draft-hf` resolve to, others stay listed, a hidden one still answers
    by id; without the flag they come back on `?reload=1`; in `[*]` it hides them again."""
    cache = tmp_path / "hub"
    cache_file(cache, "ggml-org/test-model-stories260K", "a" * 40, "stories260K-F32.gguf", tiny_dir / "tiny-a.gguf")
    cache_file(cache, "ggml-org/test-model-stories260K-infill", "b" * 40, "stories260K-infill-F32.gguf",
               tiny_dir / "tiny-b.gguf")
    cache_file(cache, "ggml-org/tinygemma3-GGUF", "c" * 40, "tinygemma3-Q8_0.gguf", tiny_dir / "tiny-c.gguf")
    env = {"HF_HUB_CACHE": str(cache), "LLAMA_CACHE": str(cache)}
    main, draft, other = ("ggml-org/test-model-stories260K:F32", "ggml-org/test-model-stories260K-infill:F32",
                          "ggml-org/tinygemma3-GGUF:Q8_0")
    section = ("[model-dedup]\nhf-repo = ggml-org/test-model-stories260K\n"
               "spec-draft-hf = ggml-org/test-model-stories260K-infill\n")
    preset = tmp_path / "dedup.ini"
    preset.write_text(section + "dedup-cache-models = 1\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"router": {"port": free_port(), "port_range": [54000, 54999],
                                              "slot_save_path": str(tmp_path / "slots")}}))
    args = ("--models-preset", str(preset), "-c", "512", "-np", "1")
    with LlamaCppRouter(llama_server, tmp_path / "llamacpp.log", *args, env=env) as cpp, \
            RouterProcess(cfg, tmp_path / "router.log", *args, env=env) as ours:
        for reload, text, expected in (("", None, {"model-dedup", other}),
                                       ("?reload=1", section, {"model-dedup", main, draft, other}),
                                       ("?reload=1", "[*]\ndedup-cache-models = 1\n\n" + section,
                                        {"model-dedup", other})):
            if text is not None:
                preset.write_text(text)
            ids = {url: set(listed(url, "/models" + reload)) for url in (cpp.url, ours.url)}
            assert ids[ours.url] == ids[cpp.url] == expected, (text, ids)
            status, body = call(ours.url + "/tokenize", {"model": main, "content": "hello"}, timeout=60)
            assert status == 200 and body["tokens"], body  # hidden from the list, still usable by id


def test_remote_preset_repo_is_listed_and_loaded_as_llamacpp_does(tmp_path, tiny_dir, llama_server):
    """llama.cpp's test_router_remote_preset: `-hf user/repo` naming a repo that holds a
    preset.ini serves that file as the models preset. Its sections are listed as llama.cpp's
    router lists them, one loads from the Hugging Face cache and answers; keys the router
    sets (host, port, api-key) never reach the child; offline, the cached copy serves again;
    a repo the Hub does not know, or one not cached when offline, stops the start with one
    line and exit code 2."""
    cache = tmp_path / "hub"
    cached = cache_file(cache, "acme/Tiny-GGUF", "c" * 40, "Tiny-Q8_0.gguf", tiny_dir / "tiny-c.gguf")
    ini = ("[*]\nc = 512\nnp = 1\n\n[tiny-preset]\nhf-repo = acme/Tiny-GGUF:Q8_0\nn-predict = 3\n"
           "host = 0.0.0.0\nport = 1\napi-key = from-the-preset\n\n"
           f"[local-preset]\nmodel = {tiny_dir / 'tiny-b.gguf'}\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"router": {"port": free_port(), "port_range": [54000, 54999],
                                              "slot_save_path": str(tmp_path / "slots")}}))
    with FakeHub() as hub:
        hub.add_file("acme/presets", "preset.ini", ini.encode())
        hub.add_file("acme/presets", "README.md", b"# presets\n")
        env = {"LLAMA_CACHE": str(cache), "HF_HUB_CACHE": str(cache), "HF_ENDPOINT": hub.endpoint,
               "HF_HUB_OFFLINE": "0", "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
        with LlamaCppRouter(llama_server, tmp_path / "llamacpp.log", "-hf", "acme/presets", env=env) as cpp, \
                RouterProcess(cfg, tmp_path / "router.log", "-hf", "acme/presets", env=env) as ours:
            ids = {url: listed(url) for url in (cpp.url, ours.url)}
            assert set(ids[ours.url]) == set(ids[cpp.url]) == {"tiny-preset", "local-preset",
                                                               "acme/Tiny-GGUF:Q8_0"}, ids
            load_and_wait(ours.url, "tiny-preset")
            assert call(ours.url + "/v1/chat/completions", {"model": "tiny-preset", **CHAT}, timeout=60)[0] == 200
            argv = child_argv(ours, "tiny-preset")
            assert opt(argv, "-m", "--model") == str(cached)
            assert opt(argv, "-c", "--ctx-size") == "512" and opt(argv, "-n", "--n-predict", "--predict") == "3"
            assert opt(argv, "--host") == "127.0.0.1" and opt(argv, "--port") != "1", argv
            assert "--api-key" not in argv and "from-the-preset" not in argv, argv
        missing = subprocess.run([sys.executable, "-m", "router", "--config", str(cfg), "-hf", "acme/missing"],
                                 cwd=ROOT, capture_output=True, text=True, timeout=60, env={**os.environ, **env})
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1, missing.stderr
    assert "acme/missing: repository not found" in missing.stderr
    offline = {**env, "HF_ENDPOINT": "http://127.0.0.1:9"}  # the Hub is gone: --offline never asks it
    with RouterProcess(cfg, tmp_path / "offline.log", "-hf", "acme/presets", "--offline", env=offline) as ours:
        assert {"tiny-preset", "local-preset"} <= set(listed(ours.url))
    not_cached = subprocess.run([sys.executable, "-m", "router", "--config", str(cfg), "-hf", "acme/other",
                                 "--offline"], cwd=ROOT, capture_output=True, text=True, timeout=60,
                                env={**os.environ, **offline})
    assert not_cached.returncode == 2 and not_cached.stderr.count("\n") == 1, not_cached.stderr
    assert "acme/other: offline" in not_cached.stderr and "not in the cache" in not_cached.stderr

