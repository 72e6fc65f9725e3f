"""A tiny Chrome DevTools Protocol client: enough to drive one page of headless Chromium
(navigate, type, click, screenshot) and collect what its console reports.

Chromium is started with ``--remote-debugging-port``; the page's websocket (from
``/json/list``) takes commands ``{id, method, params}`` and answers them by id, with
events (no id) in between, which ``Page`` keeps in ``events``. ``websockets`` is
already installed (uvicorn's websocket support), so no browser driver is needed.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect

from paycore.tools.browser import Chromium

_START_SECONDS = 30


class Page:
    """One browser tab, driven over its DevTools websocket."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.events: list[dict[str, Any]] = []
        self._ids = itertools.count(1)

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send a command; its result (an error raises)."""
        ident = next(self._ids)
        await self.ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            message = json.loads(await asyncio.wait_for(self.ws.recv(), 30))
            if message.get("id") == ident:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result
            self.events.append(message)

    async def _wait_for(self, method: str, seen: int) -> None:
        while not any(e.get("method") == method for e in self.events[seen:]):
            self.events.append(json.loads(await asyncio.wait_for(self.ws.recv(), 30)))

    async def goto(self, url: str) -> None:
        """Open ``url`` and wait for its load event."""
        seen = len(self.events)
        await self.call("Page.navigate", url=url)
        await self._wait_for("Page.loadEventFired", seen)

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (DevTools, not the page's
        own scripts: the page's CSP forbids those)."""
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def type_into(self, selector: str, text: str) -> None:
        """Focus the field and type ``text`` as a keyboard would."""
        await self.evaluate(f"document.querySelector({json.dumps(selector)}).focus()")
        await self.call("Input.insertText", text=text)

    async def click(self, selector: str) -> None:
        """Click an element that loads another page, and wait for that page to load."""
        seen = len(self.events)
        box = await self.evaluate(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)}); "
            "e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect(); "
            "return [r.x + r.width / 2, r.y + r.height / 2]; })()"
        )
        x, y = box
        for kind in ("mousePressed", "mouseReleased"):
            await self.call(
                "Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1
            )
        await self._wait_for("Page.loadEventFired", seen)

    async def text(self) -> str:
        value: str = await self.evaluate("document.body.innerText")
        return value

    async def screenshot(self, path: Path) -> None:
        shot = await self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        await asyncio.to_thread(path.write_bytes, base64.b64decode(shot["data"]))

    def errors(self) -> list[str]:
        """What the page's console reported as errors or warnings (a CSP violation is
        one), and uncaught exceptions."""
        found = []
        for e in self.events:
            params = e.get("params", {})
            if e.get("method") == "Log.entryAdded" and params["entry"]["level"] in (
                "error",
                "warning",
            ):
                found.append(f"{params['entry'].get('source')}: {params['entry']['text']}")
            elif e.get("method") == "Runtime.consoleAPICalled" and params["type"] in (
                "error",
                "warning",
                "assert",
            ):
                found.append(f"console.{params['type']}: {params.get('args')}")
            elif e.get("method") == "Runtime.exceptionThrown":
                found.append(f"exception: {params['exceptionDetails']}")
        return found


@asynccontextmanager
async def browser_page(
    chromium: Chromium, profile: Path, port: int, *flags: str
) -> AsyncIterator[Page]:
    """Headless Chromium with its DevTools on ``port``; its first tab, ready."""
    process = await asyncio.create_subprocess_exec(
        str(chromium.path), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-background-networking", f"--user-data-dir={profile}",
        f"--remote-debugging-port={port}", "--window-size=1280,900", *flags, "about:blank",
        env={**os.environ, **chromium.env},
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        target = await _first_page(port, process)
        async with connect(target, max_size=None) as ws:
            page = Page(ws)
            for domain in ("Page", "Runtime", "Log"):
                await page.call(f"{domain}.enable")
            yield page
    finally:
        if process.returncode is None:
            process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 15)
        except TimeoutError:
            process.kill()
            await process.wait()


async def _first_page(port: int, process: asyncio.subprocess.Process) -> str:
    """The websocket URL of the browser's first tab, once its DevTools answer."""
    deadline = time.monotonic() + _START_SECONDS
    async with httpx.AsyncClient(timeout=2) as client:
        while True:
            if process.returncode is not None:
                raise RuntimeError(f"chromium exited with {process.returncode}")
            try:
                targets = (await client.get(f"http://127.0.0.1:{port}/json/list")).json()
                pages = [t for t in targets if t.get("type") == "page"]
                if pages:
                    url: str = pages[0]["webSocketDebuggerUrl"]
                    return url
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("chromium's DevTools did not answer")
            await asyncio.sleep(0.2)
