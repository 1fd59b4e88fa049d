"""Open WebUI (PyPI `open-webui`) on llama-router's Ollama port, in a real browser.

Opt-in (`make test-open-webui`): Open WebUI is a large install of its own, so
this runs only with OPEN_WEBUI_BIN set to its `open-webui` executable. A
router serves the real Gemma model and a tiny one, with its second listener
(`--ollama-port`); Open WebUI starts offline against that port as its only
connection (no OpenAI connection, no sign-in, a throw-away data folder).
Open WebUI's own API must list the router's models (`/api/models`, its
`/ollama/api/tags` proxy); then in headless Chromium its model selector lists
them, a chat with Gemma gets a reply streamed onto the page from the router's
`/api/chat`, the selector shows Gemma loaded (`/api/ps`) and its Eject button
unloads it in the router. Screenshots go to test-artifacts/open-webui/.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support.browser import Chromium, Page, find_chromium
from tests.support.opskit import TIMEOUT
from tests.support.routerproc import ROOT, RouterProcess, child_command, free_port, write_config

pytestmark = [pytest.mark.real, pytest.mark.gemma, pytest.mark.timeout(900)]

ARTIFACTS = ROOT / "test-artifacts" / "open-webui"
START_TIMEOUT_S = 300  # Open WebUI imports a lot: about 50 s on a busy 2-core machine
N_PREDICT = 24  # bounds replies (Open WebUI sets no num_predict) so a busy machine stays quick
NAMES = {"gemma:latest", "tiny:latest"}


@pytest.fixture(scope="module")
def open_webui_bin() -> str:
    path = os.environ.get("OPEN_WEBUI_BIN")
    if not path:
        pytest.skip("opt-in: set OPEN_WEBUI_BIN to an `open-webui` executable (`make test-open-webui`)")
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.fail(f"OPEN_WEBUI_BIN={path} is not an executable file")
    return path


@pytest.fixture(scope="module")
def chromium() -> str:
    path = find_chromium()
    if path is None:
        pytest.skip("chromium not available (`make browser`)")
    return path


@pytest.fixture(scope="module")
def ollama_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def router(open_webui_bin: str, ollama_port: int, llama_server: Path, gemma: Path, tiny_dir: Path,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[RouterProcess]:
    d = tmp_path_factory.mktemp("open-webui-router")
    config = write_config(d / "config.yaml", {
        "gemma": {"path": str(gemma)},
        "tiny": {"path": str(tiny_dir / "tiny-a.gguf")},
    }, router={"watch_config": False},
        spawn={"command": child_command(llama_server, "--n-predict", str(N_PREDICT), ctx=1024)})
    with RouterProcess(config, d / "router.log", "--ollama-port", str(ollama_port)) as r:
        yield r
        log = r.log()
    assert "Traceback" not in log, log[log.index("Traceback") - 2000:][:6000]


class OpenWebUI:
    """`open-webui serve` in its own process group, offline, stopped by its pid."""

    def __init__(self, binary: str, ollama: str, data: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = data / "open-webui.log"
        env = {
            **os.environ,
            "DATA_DIR": str(data), "WEBUI_SECRET_KEY": "open-webui-test-secret-" + "0" * 16,
            "OLLAMA_BASE_URL": ollama, "ENABLE_OLLAMA_API": "true", "ENABLE_OPENAI_API": "false",
            "WEBUI_AUTH": "false",  # one admin user, signed in without a password
            "OFFLINE_MODE": "true", "HF_HUB_OFFLINE": "1", "ENABLE_VERSION_UPDATE_CHECK": "false",
            # No local embedding model (it would import torch and try to download one).
            "RAG_EMBEDDING_ENGINE": "ollama", "RAG_EMBEDDING_MODEL": "",
            # Only the chat itself reaches the router: no title, tag or follow-up generation.
            "ENABLE_TITLE_GENERATION": "false", "ENABLE_TAGS_GENERATION": "false",
            "ENABLE_FOLLOW_UP_GENERATION": "false", "ENABLE_AUTOCOMPLETE_GENERATION": "false",
            "SCARF_NO_ANALYTICS": "true", "DO_NOT_TRACK": "true", "ANONYMIZED_TELEMETRY": "false",
        }
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([binary, "serve", "--host", "127.0.0.1", "--port", str(self.port)],
                                         cwd=data, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)

    def log(self, tail: int = 6000) -> str:
        return self.log_path.read_text(errors="replace")[-tail:]

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"open-webui exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if requests.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"open-webui not ready in {START_TIMEOUT_S} s:\n{self.log()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
            except ProcessLookupError:
                pass


@pytest.fixture(scope="module")
def webui(open_webui_bin: str, router: RouterProcess, ollama_port: int,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenWebUI]:
    # Open WebUI's only connection: the router's second listener, where Ollama clients look.
    ui = OpenWebUI(open_webui_bin, f"http://127.0.0.1:{ollama_port}", tmp_path_factory.mktemp("open-webui"))
    try:
        ui.wait_ready()
        yield ui
    finally:
        ui.stop()


@pytest.fixture(scope="module")
def token(webui: OpenWebUI) -> str:
    """Without auth, Open WebUI signs its one user in with empty credentials, as its page does."""
    r = requests.post(webui.url + "/api/v1/auths/signin", json={"email": "", "password": ""}, timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    return r.json()["token"]


@pytest.fixture(scope="module")
def shots() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for old in ARTIFACTS.glob("*.png"):
        old.unlink()
    return ARTIFACTS


def owui(webui: OpenWebUI, token: str, path: str) -> Any:
    r = requests.get(webui.url + path, headers={"Authorization": f"Bearer {token}"}, timeout=60)
    assert r.status_code == 200, f"{path}: {r.status_code} {r.text[:500]}"
    return r.json()


def loaded(r: RouterProcess) -> list[str]:
    return [m["model"] for m in requests.get(r.url + "/api/ps", timeout=TIMEOUT).json()["models"]]


def activity(r: RouterProcess) -> list[dict[str, Any]]:
    return requests.get(r.url + "/api/activity", timeout=TIMEOUT).json()["data"]


def test_open_webui_api_sees_the_routers_models(router: RouterProcess, webui: OpenWebUI, token: str) -> None:
    ours = {m["name"]: m for m in requests.get(router.url + "/api/tags", timeout=TIMEOUT).json()["models"]}
    assert set(ours) == NAMES
    # Open WebUI's model list: the router's models, as Ollama models.
    models = {m["id"]: m for m in owui(webui, token, "/api/models")["data"]}
    assert set(models) == NAMES
    assert {m["owned_by"] for m in models.values()} == {"ollama"}
    # Its proxy of the connection returns what the router's Ollama port says, details included.
    tags = {m["name"]: m for m in owui(webui, token, "/ollama/api/tags")["models"]}
    assert set(tags) == NAMES
    for name in NAMES:
        assert tags[name]["digest"] == ours[name]["digest"] and tags[name]["size"] == ours[name]["size"]
        assert tags[name]["details"]["parameter_size"] == ours[name]["details"]["parameter_size"]
    version = requests.get(router.url + "/api/version", timeout=TIMEOUT).json()["version"]
    assert owui(webui, token, "/ollama/api/version")["version"] == version


ASSISTANT = "document.querySelectorAll('.chat-assistant')"
SELECTOR = ("Array.from(document.querySelectorAll('#model-selector-model-button'))"
            ".find(e => e.getBoundingClientRect().width > 0)")
CHANGELOG_OK = "Array.from(document.querySelectorAll('button')).find(b => b.innerText.trim() === \"Okay, Let's Go!\")"


def option(name: str) -> str:
    return f"document.querySelector('#model-selector-list [role=option][data-value={json.dumps(name)}]')"


async def close_release_notes(page: Page) -> None:
    """A fresh Open WebUI (a new data folder) greets its user with release notes once.
    A click while the dialog is still opening is lost: click again until it is gone."""
    deadline = time.monotonic() + 60
    while True:
        await page.click(CHANGELOG_OK, 60)
        try:
            await page.wait_for(f"!({CHANGELOG_OK})", 3, "the release notes closed")
            return
        except TimeoutError:
            if time.monotonic() > deadline:
                raise


async def open_selector(page: Page) -> None:
    await page.click(SELECTOR)
    for name in NAMES:
        await page.wait_for(f"!!({option(name)})", 15, f"{name} in the open selector")
    await page.eval("new Promise(r => setTimeout(r, 500))")  # let the menu finish opening


async def test_list_chat_and_unload_in_a_browser(router: RouterProcess, webui: OpenWebUI, token: str,
                                                 chromium: str, shots: Path) -> None:
    sizes = {m["name"]: m["details"]["parameter_size"]
             for m in requests.get(router.url + "/api/tags", timeout=TIMEOUT).json()["models"]}
    async with Chromium(chromium, failure_shots=shots) as browser:
        page = await browser.new_page()
        await page.goto(webui.url + "/")
        await close_release_notes(page)

        # The selector lists the router's models with their size from the GGUF header.
        await open_selector(page)
        listed = await page.eval("Array.from(document.querySelectorAll('#model-selector-list [role=option]'))"
                                 ".map(e => [e.dataset.value, e.innerText])")
        assert {v for v, _ in listed} == NAMES
        for value, text in listed:
            assert value in text and sizes[value] in text, listed
        await page.screenshot(shots / "01-selector-lists-the-routers-models.png")
        await page.click(option("gemma:latest"))
        await page.wait_for(f"({SELECTOR})?.innerText.trim() === 'gemma:latest'", 15, "gemma chosen")

        # Every length the reply passes through: a streamed reply grows in steps.
        await page.eval(f"""window.__lengths = new Set(); new MutationObserver(() => {{
            const m = {ASSISTANT}; if (m.length) window.__lengths.add(m[m.length - 1].innerText.trim().length);
            }}).observe(document.body, {{subtree: true, childList: true, characterData: true}}); true""")
        before = len([row for row in activity(router) if row["endpoint"] == "/api/chat"])
        await page.click("document.getElementById('chat-input')")
        await page.type("Say hello in one short sentence.")
        await page.press_enter()

        # The router served it on Ollama's /api/chat: the request ends once the reply is complete.
        def chat_done() -> dict[str, Any] | None:
            rows = [row for row in activity(router) if row["endpoint"] == "/api/chat"]
            return rows[before] if len(rows) > before else None

        row = await page.until(chat_done, 240, "Open WebUI's chat in the router's activity")
        assert row["model"] == "gemma" and row["status"] == 200, row
        assert row["completion_tokens"] == N_PREDICT, row
        reply = await page.wait_for(f"(() => {{ const m = {ASSISTANT}; const t = m.length && "
                                    f"m[m.length - 1].innerText.trim(); return t && t.length ? t : null }})()",
                                    30, "the reply on the page")
        lengths = await page.eval("Array.from(window.__lengths)")
        partial = [n for n in lengths if 0 < n < len(reply)]
        assert len(partial) >= 2, f"the reply did not arrive in steps ({lengths}): not streamed?"
        await page.screenshot(shots / "02-streamed-reply-from-gemma.png")

        # Open WebUI shows which models are loaded (/api/ps) and unloads one with Eject (keep_alive 0).
        assert loaded(router) == ["gemma:latest"]
        assert [m["name"] for m in owui(webui, token, "/ollama/api/ps")["models"]] == ["gemma:latest"]
        await page.goto(webui.url + "/")
        await open_selector(page)
        await page.wait_for(f"!!({option('gemma:latest')}).querySelector('.bg-green-500')", 30,
                            "gemma shown loaded")
        assert not await page.eval(f"!!({option('tiny:latest')}).querySelector('.bg-green-500')")
        await page.screenshot(shots / "03-gemma-shown-loaded.png")
        await page.click(f"({option('gemma:latest')}).querySelector('button[aria-label=\"Eject model\"]')")
        await page.until(lambda: loaded(router) == [], 60, "gemma unloaded by Open WebUI's Eject")
        assert all(p.poll() is None for p in (router.proc, webui.proc))
