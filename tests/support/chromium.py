"""Headless Chromium (Debian's package) over its DevTools protocol: a report seen as the Kubeflow UI shows it.

The UI's HTML viewer sets the report as the ``srcdoc`` of an ``<iframe sandbox="allow-scripts">``
from script (``HTMLViewer.tsx``); ``render_in_kfp_iframe`` does the same in a harness page, then
reports every request the page and the frame sent, every console error, exception and log error,
each image in the frame with its decoded size, the frame's text, and a screenshot.

The protocol is spoken over ``websocket-client`` (the CDP's JSON messages; child frames that
Chromium puts in their own process, as it does sandboxed frames, are attached with flattened
sessions and watched alike). Requests are seen with the browser-wide ``Fetch`` domain, which
pauses every request of every process: the harness page is let through, anything else is
recorded and refused, so nothing leaves the machine either.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import websocket

CHROMIUM = "chromium"
# What this machine's Chromium needs headless as root with no network (see the environment notes):
# the background services would otherwise try, and fail, to reach Google.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--hide-scrollbars",
    "--remote-debugging-port=0",
)
FRAME_STATE = """(() => ({
  ready: document.readyState,
  images: Array.from(document.images).map(i => ({
    src: i.currentSrc.slice(0, 40), complete: i.complete, width: i.naturalWidth, height: i.naturalHeight})),
  text: document.body ? document.body.innerText : '',
  height: document.documentElement.scrollHeight,
}))()"""


def as_script_literal(text: str) -> str:
    """``text`` as a JavaScript string literal that can sit inside a <script> element ("</script>" cannot)."""
    return json.dumps(text).replace("</", "<\\/")


def available() -> bool:
    return shutil.which(CHROMIUM) is not None


@dataclass
class Rendered:
    requests: list[str] = field(default_factory=list)  # every URL the page or its frames asked for, in order
    errors: list[str] = field(default_factory=list)  # console errors, exceptions, log entries at level error
    images: list[dict] = field(default_factory=list)  # in the report's frame: src (start), complete, width, height
    text: str = ""  # the frame's visible text
    screenshot: Path | None = None


class Chromium:
    """``with Chromium() as browser: browser.render_in_kfp_iframe(html, ...)``."""

    def __init__(self, timeout: float = 60.0):
        self.timeout = timeout
        self.profile = Path(tempfile.mkdtemp(prefix="chromium-profile-"))
        self.process: subprocess.Popen | None = None
        self.socket: websocket.WebSocket | None = None
        self.next_id = 0
        self.events: list[dict] = []
        self.watched: set[str] = set()
        self.requests: list[str] = []  # every URL any page or frame asked for (data: URIs are no requests)
        self.allowed = ""  # the one URL let through: the harness page

    def __enter__(self) -> Chromium:
        self.process = subprocess.Popen(
            [CHROMIUM, *FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        port_file = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + self.timeout
        while not port_file.is_file() or len(port_file.read_text().splitlines()) < 2:
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.__exit__(None, None, None)
                raise RuntimeError(
                    f"Chromium did not start its DevTools endpoint (exit code {self.process.returncode})"
                )
            time.sleep(0.05)
        port = int(port_file.read_text().splitlines()[0])
        browser = websocket.create_connection(
            f"ws://127.0.0.1:{port}{port_file.read_text().splitlines()[1]}", timeout=self.timeout, suppress_origin=True
        )
        self.socket = browser
        targets = self.call("Target.getTargets")["targetInfos"]
        page = next(t for t in targets if t["type"] == "page")
        self.page = self.call("Target.attachToTarget", {"targetId": page["targetId"], "flatten": True})["sessionId"]
        # Every request of every target, whatever process Chromium runs a frame in, pauses here first.
        self.call("Fetch.enable", {"patterns": [{"urlPattern": "*"}]})
        return self

    def __exit__(self, *exc) -> None:
        if self.socket is not None:
            self.socket.close()
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.profile, ignore_errors=True)

    # --- the protocol -------------------------------------------------------------------------------

    def call(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self.next_id += 1
        number = self.next_id
        message = {"id": number, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        self.socket.send(json.dumps(message))
        while True:
            reply = self._receive()
            if reply.get("id") == number:
                break
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        self._watch_new_frames()
        return reply.get("result", {})

    def _receive(self) -> dict:
        """The next message; a paused request is answered at once: the harness page may load, nothing else."""
        message = json.loads(self.socket.recv())
        if message.get("method") == "Fetch.requestPaused":
            url = message["params"]["request"]["url"]
            self.requests.append(url)
            answer = {"requestId": message["params"]["requestId"]}
            if url != self.allowed:
                answer["errorReason"] = "BlockedByClient"
            method = "Fetch.continueRequest" if url == self.allowed else "Fetch.failRequest"
            self.next_id += 1
            self.socket.send(json.dumps({"id": self.next_id, "method": method, "params": answer}))
        elif "id" not in message:
            self.events.append(message)
        return message

    def _watch_new_frames(self) -> None:
        """Frames Chromium put in their own process (attached as child sessions) are watched like the page."""
        for event in list(self.events):
            if event.get("method") == "Target.attachedToTarget":
                session = event["params"]["sessionId"]
                if session not in self.watched:
                    self._watch(session)

    def _watch(self, session: str) -> None:
        """Watch a session's requests, console and log; its child frames wait for us before they run, so
        nothing they send goes unseen."""
        self.watched.add(session)
        for domain in ("Runtime", "Log", "Page"):
            self.call(f"{domain}.enable", session=session)
        settings = {"autoAttach": True, "waitForDebuggerOnStart": True, "flatten": True}
        self.call("Target.setAutoAttach", settings, session)
        self.call("Runtime.runIfWaitingForDebugger", session=session)

    def drain(self, seconds: float) -> None:
        """Take in the events that arrive within ``seconds``."""
        end = time.monotonic() + seconds
        self.socket.settimeout(0.1)
        try:
            while time.monotonic() < end:
                try:
                    self._receive()
                except websocket.WebSocketTimeoutException:
                    continue
        finally:
            self.socket.settimeout(self.timeout)
        self._watch_new_frames()

    def frame_session(self, frame_id: str) -> str:
        """The session that runs ``frame_id``: the page's, or an attached child target's."""
        for event in self.events:
            if event.get("method") == "Target.attachedToTarget":
                info = event["params"]["targetInfo"]
                if info.get("targetId") == frame_id:
                    return event["params"]["sessionId"]
        return self.page

    def evaluate_in_frame(self, frame_id: str, expression: str):
        session = self.frame_session(frame_id)
        world = self.call("Page.createIsolatedWorld", {"frameId": frame_id, "worldName": "report-check"}, session)
        result = self.call(
            "Runtime.evaluate",
            {"expression": expression, "contextId": world["executionContextId"], "returnByValue": True},
            session,
        )
        return result["result"].get("value")

    # --- what the tests use -------------------------------------------------------------------------

    def render_in_kfp_iframe(self, html: str, workdir: Path, screenshot: Path | None = None) -> Rendered:
        """Show ``html`` as the Kubeflow UI's HTML viewer does, and report what happened."""
        self._watch(self.page)
        self.call("Emulation.setDeviceMetricsOverride", self._viewport(900), self.page)
        harness = workdir / "kfp-html-viewer.html"
        harness.write_text(
            "<!DOCTYPE html><html><head><meta charset='utf-8'></head><body style='margin:0'>"
            "<iframe id='viewer' src='javascript:void(0);' sandbox='allow-scripts' "
            "style='border:1px solid #ddd;box-sizing:border-box;width:100%;min-height:600px'></iframe>"
            f"<script>document.getElementById('viewer').srcdoc = {as_script_literal(html)};</script></body></html>"
        )
        self.allowed = harness.as_uri()
        self.requests.clear()
        self.call("Page.navigate", {"url": self.allowed}, self.page)
        frame = self._report_frame()
        state = None
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            state = self.evaluate_in_frame(frame, FRAME_STATE)
            if state and state["ready"] == "complete" and all(image["complete"] for image in state["images"]):
                break
            self.drain(0.2)
        self.drain(0.5)  # late console messages and requests
        rendered = Rendered(requests=list(self.requests), images=state["images"], text=state["text"])
        if screenshot is not None:
            # The whole report in the viewport: Chromium paints a frame of another process only where it is seen.
            height = min(int(state["height"]) + 20, 16_000)
            self.call("Emulation.setDeviceMetricsOverride", self._viewport(height), self.page)
            grow = f"document.getElementById('viewer').style.height = '{height}px'"
            self.call("Runtime.evaluate", {"expression": grow}, self.page)
            self.drain(0.5)
            shot = self.call("Page.captureScreenshot", {"format": "png"}, self.page)
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            screenshot.write_bytes(base64.b64decode(shot["data"]))
            rendered.screenshot = screenshot
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
                rendered.errors.append(" ".join(str(a.get("value", a.get("description", ""))) for a in params["args"]))
            elif method == "Runtime.exceptionThrown":
                rendered.errors.append(params["exceptionDetails"].get("text", "exception"))
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                rendered.errors.append(f"{params['entry'].get('text')} {params['entry'].get('url', '')}".strip())
        return rendered

    @staticmethod
    def _viewport(height: int) -> dict:
        return {"width": 1280, "height": height, "deviceScaleFactor": 1, "mobile": False}

    def _report_frame(self) -> str:
        """The iframe's frame id, once the harness has set its srcdoc: an attached child target when Chromium
        runs the sandboxed frame in its own process (it does by default), else a child in the page's tree."""
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            for event in self.events:
                info = event.get("params", {}).get("targetInfo", {})
                if event.get("method") == "Target.attachedToTarget" and info.get("type") == "iframe":
                    return info["targetId"]
            tree = self.call("Page.getFrameTree", session=self.page)["frameTree"]
            for child in tree.get("childFrames", []):
                if child["frame"].get("url") == "about:srcdoc":
                    return child["frame"]["id"]
            self.drain(0.1)
        raise RuntimeError("the harness page never showed the report's frame")
