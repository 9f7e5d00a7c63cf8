"""A headless Chromium driven over the DevTools protocol, for the browser tests.

The protocol runs over a pipe (``--remote-debugging-pipe``: Chromium reads commands
on file descriptor 3 and writes replies and events on 4, each a JSON message ended by
a NUL byte), so no port, websocket library or network is involved. Console errors
are read from the protocol's events, not from log text: uncaught exceptions
(``Runtime.exceptionThrown``), ``console.error`` / ``console.assert``
(``Runtime.consoleAPICalled``) and browser-side errors such as a failed script load
(``Log.entryAdded`` at level ``error``).
"""

from __future__ import annotations

import base64
import fcntl
import io
import json
import os
import queue
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

# The browser the tests drive, and the mark that skips them where there is none.
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
NEEDS_CHROMIUM = pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (apt-get install chromium)")

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # Software WebGL for the 3-D views, asked for explicitly: Chromium deprecates the silent fallback.
    "--enable-unsafe-swiftshader",
]
TIMEOUT = 60.0
_FIRST_FREE = 10
# The plot area: a 2-D subplot's drag rectangle, or a 3-D scene.
PLOT_AREA = """(() => {
  const area = document.querySelector('.nsewdrag') || document.querySelector('.gl-container div[id^="scene"]');
  if (!area) return null;
  const box = area.getBoundingClientRect();
  return [box.x, box.y, box.width, box.height];
})()"""


# The explorer's figure: its traces as plain lists (typed-array rows included).
EXPLORER_FIGURE = """(() => {
  const plot = document.getElementById('plot');
  const row = (v) => (v.length === undefined ? v : Array.from(v));
  const list = (values) => (values === undefined ? null : Array.from(values, row));
  return plot.data.map((t) => ({type: t.type, name: t.name, x: list(t.x), y: list(t.y), z: list(t.z)}));
})()"""


class Browser:
    """One headless Chromium; ``open`` loads a page in a new tab and returns its session."""

    def __init__(self, executable: str, profile: Path) -> None:
        to_browser, self._commands = os.pipe()
        self._replies, from_browser = os.pipe()
        # Moved above 4 first, so that placing one end on 3 cannot overwrite the other.
        to_browser, from_browser = (_above(fd, _FIRST_FREE) for fd in (to_browser, from_browser))

        def place_pipe_ends() -> None:  # runs in the child, before Chromium starts
            os.dup2(to_browser, 3)
            os.dup2(from_browser, 4)

        self.process = subprocess.Popen(
            [executable, *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-pipe"],
            pass_fds=(3, 4),
            preexec_fn=place_pipe_ends,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_browser)
        os.close(from_browser)
        self._inbox: queue.Queue[dict[str, Any]] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._last_id = 0
        self.events: list[dict[str, Any]] = []

    def _read(self) -> None:
        pending = b""
        with os.fdopen(self._replies, "rb", buffering=0) as pipe:
            while chunk := pipe.read(1 << 16):
                *messages, pending = (pending + chunk).split(b"\0")
                for message in messages:
                    self._inbox.put(json.loads(message))

    def _next_message(self, deadline: float) -> dict[str, Any]:
        try:
            return self._inbox.get(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            raise TimeoutError("Chromium did not answer in time") from None

    def send(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> dict[str, Any]:
        """Run one protocol command and return its result; events seen meanwhile are kept."""
        self._last_id += 1
        message = {"id": self._last_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + TIMEOUT
        while True:
            reply = self._next_message(deadline)
            if reply.get("id") != self._last_id:
                self.events.append(reply)
            elif "error" in reply:
                raise RuntimeError(f"{method}: {reply['error']}")
            else:
                return reply["result"]

    def wait_for(self, method: str, session: str) -> None:
        deadline = time.monotonic() + TIMEOUT
        seen = [e for e in self.events if e.get("method") == method and e.get("sessionId") == session]
        while not seen:
            event = self._next_message(deadline)
            self.events.append(event)
            seen = [event] if event.get("method") == method and event.get("sessionId") == session else []

    def open(self, page: Path | str, width: int = 1000, height: int = 900) -> str:
        """Load ``page`` (a file, or a URL) in a new tab of ``width`` x ``height`` pixels;
        return its session id."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Runtime", "Log", "Page"):
            self.send(f"{domain}.enable", session=session)
        metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}
        self.send("Emulation.setDeviceMetricsOverride", metrics, session=session)
        url = page if isinstance(page, str) else page.resolve().as_uri()
        self.send("Page.navigate", {"url": url}, session=session)
        self.wait_for("Page.loadEventFired", session)
        return session

    def evaluate(self, expression: str, session: str) -> Any:
        """The value of a JavaScript expression (a promise is awaited)."""
        params = {"expression": expression, "returnByValue": True, "awaitPromise": True}
        result = self.send("Runtime.evaluate", params, session=session)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression!r} threw: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self, session: str, clip: list[float]) -> Image.Image:
        x, y, width, height = clip
        region = {"x": x, "y": y, "width": width, "height": height, "scale": 1}
        shot = self.send("Page.captureScreenshot", {"format": "png", "clip": region}, session=session)
        return Image.open(io.BytesIO(base64.b64decode(shot["data"]))).convert("RGB")

    def console_errors(self, session: str) -> list[str]:
        """Every JavaScript error the page reported so far."""
        self.evaluate("0", session)  # a round trip, so events sent before it have arrived
        errors = []
        for event in self.events:
            if event.get("sessionId") != session:
                continue
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.exceptionThrown":
                details = params["exceptionDetails"]
                errors.append(details.get("exception", {}).get("description") or details["text"])
            elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
                errors.append(" ".join(str(a.get("value", a.get("description"))) for a in params["args"]))
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                errors.append(params["entry"]["text"])
        return errors

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except (OSError, RuntimeError, TimeoutError):
            self.process.kill()
        self.process.wait(timeout=TIMEOUT)
        os.close(self._commands)


class ExplorerPage:
    """One tab on the explorer (``fastsurface explore``), with a person's actions and the figure's data."""

    def __init__(self, browser: Browser, url: str) -> None:
        self.browser = browser
        self.session = browser.open(url, width=1300, height=900)
        self.evaluate("explorer.ready")
        self.idle()

    def evaluate(self, expression: str):
        return self.browser.evaluate(expression, self.session)

    def idle(self) -> None:
        self.evaluate("explorer.idle()")

    def type(self, values: dict[str, object], event: str | None = "change") -> None:
        """Enter ``values`` into the named inputs, then fire ``event`` (if any) on the last one."""
        fire = f"form.elements[names.at(-1)].dispatchEvent(new Event('{event}', {{bubbles: true}}));" if event else ""
        self.evaluate(
            f"""(() => {{
              const form = document.getElementById('settings');
              const values = {json.dumps({k: str(v) for k, v in values.items()})};
              const names = Object.keys(values);
              for (const name of names) form.elements[name].value = values[name];
              {fire}
            }})()"""
        )

    def click(self, selector: str) -> None:
        self.evaluate(f"document.querySelector({json.dumps(selector)}).click()")

    def figure(self) -> list[dict]:
        return self.evaluate(EXPLORER_FIGURE)

    def state(self, expression: str):
        return self.evaluate(f"(() => {{ const state = explorer.state; return {expression}; }})()")

    def mouse(self, kind: str, x: float, y: float, pressed: bool = False) -> None:
        button = "left" if kind != "mouseMoved" or pressed else "none"
        event = {"type": kind, "x": x, "y": y, "button": button, "buttons": int(pressed), "clickCount": 1}
        self.browser.send("Input.dispatchMouseEvent", event, session=self.session)

    def plot_point(self, fraction_x: float, fraction_y: float) -> tuple[float, float]:
        """Page pixels at a fraction of the plot area (from its top left)."""
        left, top, width, height = self.evaluate(PLOT_AREA)
        return left + fraction_x * width, top + fraction_y * height

    def errors(self) -> list[str]:
        return self.browser.console_errors(self.session)


def _above(fd: int, lowest: int) -> int:
    """``fd`` moved to a number >= ``lowest``; the old number is closed."""
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, lowest)
    os.close(fd)
    return moved


def drawn_share(image: Image.Image) -> float:
    """Share of pixels that differ from the most common colour (the background)."""
    counts = image.getcolors(maxcolors=image.width * image.height)
    return 1 - max(counts)[0] / (image.width * image.height)


def plot_area_picture(browser: Browser, session: str, min_share: float, wait: float = 20.0) -> Image.Image:
    """A screenshot of the plot area, taken again until ``min_share`` of it is drawn or
    ``wait`` seconds pass (WebGL draws a few frames after the page has loaded)."""
    deadline = time.monotonic() + wait
    while True:
        area = browser.evaluate(PLOT_AREA, session)
        if area is not None:
            picture = browser.screenshot(session, area)
            if drawn_share(picture) >= min_share or time.monotonic() > deadline:
                return picture
        elif time.monotonic() > deadline:
            raise AssertionError("the page has no plot area")
        time.sleep(0.25)
