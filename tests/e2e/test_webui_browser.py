"""End to end in a real browser: llama.cpp's WebUI and the dashboard, through the router.

Headless Chromium (`make browser`) opens the WebUI that `make webui` built,
sees both models in the selector, chats with one and then the other
(streamed replies), then opens the dashboard, watches the states change and
unloads a model with its button. Every request either page makes must be
answered by the router; screenshots of each step go to test-artifacts/ui/.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from router.catalogue.parse import parse_config
from router.ui.webui import find_ui_dir
from tests.support.binaries import missing
from tests.support.browser import Chromium, Page, find_chromium
from tests.support.http import call
from tests.support.routerproc import ROOT, RouterProcess, child_command, write_config

pytestmark = [pytest.mark.real, pytest.mark.gemma]

ARTIFACTS = ROOT / "test-artifacts" / "ui"
# What llama-server itself answers in router mode for features a router has no use for.
EXPECTED_REFUSALS = {"/tools": 403, "/cors-proxy": 403}


@pytest.fixture(scope="module")
def chromium() -> str:
    path = find_chromium()
    if path is None:
        missing("chromium (`make browser`)", "make test")
    return path


@pytest.fixture(scope="module")
def ui_dir() -> Path:
    path = find_ui_dir(parse_config({}, "<defaults>"))
    if path is None:
        missing("the WebUI build (`make webui`)", "make test")
    return path


@pytest.fixture(scope="module")
def router(llama_server: Path, gemma: Path, tiny_dir: Path, ui_dir: Path,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[RouterProcess]:
    d = tmp_path_factory.mktemp("browser")
    # models_max 1, no groups: choosing the other model in the UI swaps them.
    # --n-predict bounds replies (the UI sets no max_tokens) so a busy machine stays quick.
    config = write_config(d / "config.yaml", {
        "gemma": {"path": str(gemma)},
        "tiny": {"path": str(tiny_dir / "tiny-b.gguf")},
    }, router={"ui_path": str(ui_dir)}, spawn={"command": child_command(llama_server, "--n-predict", "40", ctx=1024)})
    with RouterProcess(config, d / "router.log") as r:
        yield r


@pytest.fixture(scope="module")
def shots() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for old in ARTIFACTS.glob("*.png"):
        old.unlink()
    return ARTIFACTS


FORM = "document.querySelector('textarea')?.closest('form')"


def selector_button(names: tuple[str, ...]) -> str:
    return (f"Array.from({FORM}?.querySelectorAll('button') ?? [])"
            f".find(b => {json.dumps(list(names))}.includes(b.innerText.trim()))")


def option(name: str) -> str:
    return (f"Array.from(document.querySelectorAll('[role=option]'))"
            f".find(e => e.innerText.trim() === {json.dumps(name)})")


async def choose_model(page: Page, name: str, names: tuple[str, ...]) -> None:
    await page.click(selector_button(names))
    await page.wait_for(f"!!({option(name)})", 15, f"{name} in the open selector")
    await page.eval("new Promise(r => setTimeout(r, 500))")  # let the menu finish opening
    await page.click(option(name))
    await page.wait_for(f"({selector_button(names)})?.innerText.trim() === {json.dumps(name)}", 15,
                        f"{name} chosen")
    # Choosing an unloaded model loads it, through the router's llama.cpp-style API.
    await page.until(lambda: any(json.loads(r["body"] or "{}").get("model") == name
                                 for r in page.calls("/models/load", "POST")), 15, f"{name} asked to load")


async def send_and_read_reply(page: Page, model: str, text: str, *, see_it_grow: bool) -> str:
    """Send `text`; return the reply once its streamed request has finished.

    `see_it_grow`: also require the reply to have appeared on screen in steps
    (only for a model slow enough that its tokens cannot all land in one frame).
    """
    before = len(page.calls("/v1/chat/completions", "POST"))
    count = await page.eval("document.querySelectorAll('.chat-message-assistant').length")
    # Record every length the newest reply passes through: a streamed reply grows in steps.
    await page.eval("""window.__lengths = new Set(); window.__observer?.disconnect();
        window.__observer = new MutationObserver(() => {
            const m = document.querySelectorAll('.chat-message-assistant');
            if (m.length) window.__lengths.add(m[m.length - 1].innerText.length); });
        window.__observer.observe(document.body, {subtree: true, childList: true, characterData: true}); true""")
    await page.click("document.querySelector('textarea')")
    await page.type(text)
    await page.press_enter()
    await page.wait_for(f"document.querySelectorAll('.chat-message-assistant').length > {count}", 60,
                        "an assistant message")

    def finished() -> dict | None:
        calls = page.calls("/v1/chat/completions", "POST")
        return calls[before] if len(calls) > before and calls[before]["done"] else None

    chat = await page.until(finished, 120, f"the streamed reply from {model} to finish")
    assert json.loads(chat["body"])["model"] == model
    assert json.loads(chat["body"])["stream"] is True
    assert chat["status"] == 200 and chat["mime"] == "text/event-stream"
    reply = await page.wait_for(
        "(() => { const m = document.querySelectorAll('.chat-message-assistant');"
        " return m[m.length - 1].innerText.trim(); })()", 30, "reply text")
    steps = await page.eval("window.__lengths.size")
    assert steps >= 3 or not see_it_grow, f"the reply did not arrive in steps ({steps}): not streamed?"
    return reply


def state_cell(model: str) -> str:
    return f"document.querySelector('tr[data-model={json.dumps(model)}] .state')?.textContent"


def button(model: str, cls: str) -> str:
    return f"document.querySelector('tr[data-model={json.dumps(model)}] button.{cls}')"


def assert_router_answered_everything(page: Page, where: str) -> None:
    for r in page.requests.values():
        path = "/" + r["url"].split("://", 1)[-1].split("/", 1)[-1].split("?")[0]
        if r["url"].startswith(("data:", "blob:")) or r["status"] is None:
            continue
        expected = EXPECTED_REFUSALS.get(path)
        assert r["status"] < 400 or r["status"] == expected, f"{where}: {r['method']} {r['url']} -> {r['status']}"


async def test_chat_in_the_webui_then_manage_models_on_the_dashboard(
        router: RouterProcess, chromium: str, shots: Path) -> None:
    names = ("gemma", "tiny")
    async with Chromium(chromium, failure_shots=shots) as browser:
        ui = await browser.new_page()
        await ui.goto(router.url + "/")
        await ui.wait_for(f"!!({selector_button(names)})", 30, "the model selector")
        assert await ui.eval("document.title") and await ui.eval("!!document.querySelector('textarea')")
        await ui.click(selector_button(names))
        for name in names:
            await ui.wait_for(f"!!({option(name)})", 15, f"{name} listed")
        await ui.screenshot(shots / "01-webui-selector-lists-both-models.png")
        await ui.press_escape()

        await choose_model(ui, "gemma", names)
        reply = await send_and_read_reply(ui, "gemma", "Say hello in one short sentence.", see_it_grow=True)
        assert reply
        await ui.screenshot(shots / "02-webui-streamed-reply-from-gemma.png")
        assert call(router.url + "/models")[1]["data"][0]["status"]["value"] == "loaded"

        await choose_model(ui, "tiny", names)
        reply = await send_and_read_reply(ui, "tiny", "And now you, tiny model?", see_it_grow=False)
        assert reply
        await ui.screenshot(shots / "03-webui-switched-to-tiny-and-got-a-reply.png")
        assert_router_answered_everything(ui, "WebUI")

        dash = await browser.new_page()
        await dash.goto(router.url + "/dashboard")
        # A key entered once is kept for this tab only and sent with every call the page makes.
        await dash.eval("sessionStorage.setItem('llama-router-key', 'dash-key'); true")
        await dash.goto(router.url + "/dashboard")
        await dash.wait_for(f"{state_cell('tiny')} === 'loaded'", 30, "tiny shown loaded")
        assert await dash.eval(f"{state_cell('gemma')}") == "unloaded"  # swapped out by the switch
        pid = await dash.eval("document.querySelector('tr[data-model=\"tiny\"] td:nth-child(5)').textContent")
        assert int(pid) in {p.pid for p in router.children()}
        # The chats made in the WebUI are in the activity table, with their speed in each model's sparkline.
        for name in names:
            await dash.wait_for(f"!!document.querySelector('#activity tr[data-model=\"{name}\"]')", 15,
                                f"{name}'s chat in the activity table")
            await dash.wait_for(f"document.querySelector('tr[data-model=\"{name}\"] .spark').dataset.points > 0",
                                15, f"{name}'s tokens/s sparkline")
        await dash.screenshot(shots / "04-dashboard-tiny-loaded.png")

        await dash.click(button("gemma", "load"))
        await dash.wait_for(f"{state_cell('gemma')} === 'loaded' && {state_cell('tiny')} === 'unloaded'", 60,
                            "gemma loaded in tiny's place")
        await dash.wait_for("document.querySelector('#events').innerText.includes('gemma: loaded')", 15,
                            "the state change in the live list")
        # The timeline strip shows the swap: tiny's span (loaded when the page opened) then gemma's.
        await dash.wait_for("!!document.querySelector('#timeline rect[data-model=\"gemma\"]') && "
                            "!!document.querySelector('#timeline rect[data-model=\"tiny\"]')", 15, "the timeline")
        # The RAM budget (auto: this machine's memory less the reserve) is drawn as a bar filled by gemma.
        await dash.wait_for("!!document.querySelector('#memory [data-device=\"ram\"] .bar span[data-model=\"gemma\"]')",
                            15, "gemma's share of the RAM budget")
        await dash.click(button("gemma", "logs"))
        await dash.wait_for("document.querySelector('#log').textContent.includes('listening')", 15, "gemma's log")
        await dash.screenshot(shots / "05-dashboard-gemma-loaded-with-log.png")

        await dash.click(button("gemma", "unload"))
        await dash.wait_for(f"{state_cell('gemma')} === 'unloaded'", 30, "gemma unloaded")
        await dash.screenshot(shots / "06-dashboard-gemma-unloaded.png")
        states = {m["id"]: m["status"]["value"] for m in call(router.url + "/models")[1]["data"]}
        assert states == {"gemma": "unloaded", "tiny": "unloaded"}
        assert router.children() == []
        assert_router_answered_everything(dash, "dashboard")
        for path, method in (("/dashboard/api/models", "GET"), ("/models/sse", "GET"), ("/models/load", "POST"),
                             ("/models/unload", "POST"), ("/logs/stream/gemma", "GET")):
            sent = [r["headers"].get("Authorization") for r in dash.calls(path, method)]
            assert sent and sent[-1] == "Bearer dash-key", (path, sent)
        # Never persisted beyond the tab (the WebUI's own settings share this origin's localStorage).
        assert not await dash.eval("Object.values(localStorage).some(v => v.includes('dash-key'))")
