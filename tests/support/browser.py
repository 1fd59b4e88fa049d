"""Headless Chromium driven over the DevTools protocol, for end-to-end UI tests.

No WebDriver and no extra Python package: Chromium is started with a fresh
profile and `--remote-debugging-port=0`, and one page is driven through its
DevTools websocket with aiohttp (already a dependency). Clicks and typing
are real input events, so the page sees what a user's mouse and keyboard do.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-extensions", "--mute-audio", "--hide-scrollbars",
    "--window-size=1366,900", "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
)


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


class Page:
    """One tab: navigate, evaluate, wait for a condition, click, type, screenshot."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse):
        self._ws = ws
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self.requests: dict[str, dict[str, Any]] = {}  # requestId -> method, url, body, status, mime, done
        self.console: list[str] = []
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for msg in self._ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(msg.data)
            if "id" in data:
                fut = self._pending.pop(data["id"], None)
                if fut is not None and not fut.done():
                    if "error" in data:
                        fut.set_exception(RuntimeError(f"DevTools: {data['error']}"))
                    else:
                        fut.set_result(data.get("result", {}))
                continue
            method, params = data.get("method"), data.get("params", {})
            if method == "Network.requestWillBeSent":
                r = params["request"]
                self.requests[params["requestId"]] = {"method": r["method"], "url": r["url"],
                                                      "headers": r.get("headers", {}),
                                                      "body": r.get("postData"), "status": None,
                                                      "mime": None, "done": False}
            elif method == "Network.responseReceived" and params["requestId"] in self.requests:
                r = params["response"]
                self.requests[params["requestId"]].update(status=r["status"], mime=r.get("mimeType"))
            elif method in ("Network.loadingFinished", "Network.loadingFailed"):
                if params["requestId"] in self.requests:
                    self.requests[params["requestId"]]["done"] = True
            elif method == "Runtime.consoleAPICalled":
                text = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
                self.console.append(f"{params.get('type')}: {text}")
            elif method == "Runtime.exceptionThrown":
                d = params.get("exceptionDetails", {})
                self.console.append(f"exception: {d.get('exception', {}).get('description') or d.get('text')}")

    def calls(self, path: str, method: str | None = None) -> list[dict[str, Any]]:
        """Requests to `path` on any host, in order."""
        return [r for r in self.requests.values()
                if r["url"].split("://", 1)[-1].split("/", 1)[-1].split("?")[0] == path.lstrip("/")
                and (method is None or r["method"] == method)]

    async def send(self, method: str, timeout: float = 30, **params: Any) -> dict[str, Any]:
        msg_id = next(self._ids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[msg_id] = fut
        await self._ws.send_str(json.dumps({"id": msg_id, "method": method, "params": params}))
        return await asyncio.wait_for(fut, timeout)

    async def goto(self, url: str) -> None:
        await self.send("Page.navigate", url=url)
        await self.wait_for("document.readyState === 'complete'", 30, "page load")

    async def eval(self, expression: str) -> Any:
        r = await self.send("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"page error in {expression!r}: {r['exceptionDetails']}")
        return r.get("result", {}).get("value")

    async def wait_for(self, expression: str, timeout: float, what: str) -> Any:
        """Poll a JS expression until it is truthy; the bound only guards against hangs."""
        deadline = time.monotonic() + timeout
        while True:
            value = await self.eval(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"waited {timeout} s for {what} ({expression})")
            await asyncio.sleep(0.2)

    async def until(self, check: Callable[[], Any], timeout: float, what: str) -> Any:
        """Like wait_for, for a condition on what the page has done (requests, console)."""
        deadline = time.monotonic() + timeout
        while not (value := check()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"waited {timeout} s for {what}")
            await asyncio.sleep(0.2)
        return value

    async def click(self, selector_js: str, timeout: float = 15) -> None:
        """Click the centre of the element `selector_js` (a JS expression) evaluates to,
        once nothing (a toast, a closing menu) covers it there, as a user would wait."""
        box = await self.wait_for(f"""(() => {{ const el = {selector_js};
            if (!el) return null; el.scrollIntoView({{block: 'center'}});
            const r = el.getBoundingClientRect(), x = r.x + r.width / 2, y = r.y + r.height / 2;
            const top = document.elementFromPoint(x, y);
            return top && (top === el || el.contains(top)) ? [x, y] : null; }})()""",
                                  timeout, f"{selector_js} to be clickable")
        x, y = box
        await self.send("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y)
        for kind in ("mousePressed", "mouseReleased"):
            await self.send("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)

    async def type(self, text: str) -> None:
        await self.send("Input.insertText", text=text)

    async def press_enter(self) -> None:
        key = {"key": "Enter", "code": "Enter", "windowsVirtualKeyCode": 13}
        await self.send("Input.dispatchKeyEvent", type="keyDown", text="\r", **key)
        await self.send("Input.dispatchKeyEvent", type="keyUp", **key)

    async def press_escape(self) -> None:
        key = {"key": "Escape", "code": "Escape", "windowsVirtualKeyCode": 27}
        await self.send("Input.dispatchKeyEvent", type="keyDown", **key)
        await self.send("Input.dispatchKeyEvent", type="keyUp", **key)

    async def screenshot(self, path: Path) -> Path:
        r = await self.send("Page.captureScreenshot", format="png")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(r["data"]))
        return path

    async def close(self) -> None:
        self._reader.cancel()
        await self._ws.close()


class Chromium:
    """A headless Chromium with a throw-away profile; stopped by pid on exit."""

    def __init__(self, binary: str, failure_shots: Path | None = None):
        self.binary = binary
        self.failure_shots = failure_shots
        self._profile = tempfile.TemporaryDirectory(prefix="llama-router-chromium-")
        self.proc: subprocess.Popen[bytes] | None = None
        self._session: aiohttp.ClientSession | None = None
        self.pages: list[Page] = []

    async def __aenter__(self) -> Chromium:
        profile = self._profile.name
        self.proc = subprocess.Popen(
            [self.binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        port_file = Path(profile) / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip()):
            if self.proc.poll() is not None:
                raise RuntimeError(f"chromium exited with {self.proc.returncode}")
            if time.monotonic() > deadline:
                raise TimeoutError("chromium did not open its DevTools port within 60 s")
            await asyncio.sleep(0.1)
        self.port = int(port_file.read_text().split()[0])
        self._session = aiohttp.ClientSession()
        return self

    async def new_page(self) -> Page:
        assert self._session
        async with self._session.put(f"http://127.0.0.1:{self.port}/json/new?about:blank") as r:
            target = await r.json()
        ws = await self._session.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=64 << 20)
        page = Page(ws)
        for domain in ("Page", "Runtime", "Network"):
            await page.send(f"{domain}.enable")
        self.pages.append(page)
        return page

    async def __aexit__(self, exc_type: Any, *exc: Any) -> None:
        if exc_type is not None and self.failure_shots is not None:
            for i, page in enumerate(self.pages):  # what each page showed when the test failed
                try:
                    await page.screenshot(self.failure_shots / f"failure-page{i + 1}.png")
                except Exception:
                    pass
        for page in self.pages:
            await page.close()
        if self._session:
            await self._session.close()
        if self.proc and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(10)
        self._profile.cleanup()
