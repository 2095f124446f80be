"""Headless Chromium (Debian's ``chromium``) driven over the DevTools protocol, for the report pages.

``open_page(url, shots)`` loads a page with every host name unresolvable (a page that fetches
anything fails to load it, and that shows as an error), collects console messages, uncaught
exceptions and log entries of level error, and saves a screenshot in light and in dark mode and
the page printed to PDF.
"""
from __future__ import annotations

import base64
import json
import shutil
import subprocess
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.sync.client import connect

STARTUP_SECONDS = 30
CALL_SECONDS = 60


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        raise RuntimeError("no chromium on PATH: `.ci/run` installs Debian's chromium; "
                           "locally: apt-get install -y chromium")
    return path


@dataclass
class PageResult:
    errors: list[str] = field(default_factory=list)
    light_png: Path | None = None
    dark_png: Path | None = None
    pdf: Path | None = None


class _Session:
    def __init__(self, ws) -> None:
        self.ws = ws
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv(timeout=CALL_SECONDS))
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def wait_for(self, method: str) -> dict[str, Any]:
        for i, e in enumerate(self.events):
            if e.get("method") == method:
                return self.events.pop(i)
        while True:
            message = json.loads(self.ws.recv(timeout=CALL_SECONDS))
            if message.get("method") == method:
                return message
            self.events.append(message)


def _errors(events: list[dict[str, Any]]) -> list[str]:
    out = []
    for e in events:
        method, p = e.get("method"), e.get("params", {})
        if method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert", "warning"):
            out.append(f"console.{p['type']}: {p.get('args')}")
        elif method == "Runtime.exceptionThrown":
            out.append(f"exception: {p.get('exceptionDetails', {}).get('text')}")
        elif method == "Log.entryAdded" and p.get("entry", {}).get("level") in ("error", "warning"):
            out.append(f"log {p['entry']['level']}: {p['entry'].get('text')} {p['entry'].get('url', '')}")
    return out


def open_page(url: str, folder: Path, name: str) -> PageResult:
    folder.mkdir(parents=True, exist_ok=True)
    profile = folder / f"{name}-chromium-profile"
    process = subprocess.Popen(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
         "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0", f"--user-data-dir={profile}",
         "--host-resolver-rules=MAP * ~NOTFOUND", "--window-size=1280,1600", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        port = _devtools_port(process)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=STARTUP_SECONDS) as r:
            [target] = [t for t in json.load(r) if t.get("type") == "page"]
        with connect(target["webSocketDebuggerUrl"], max_size=None, open_timeout=STARTUP_SECONDS) as ws:
            s = _Session(ws)
            for domain in ("Page", "Runtime", "Log"):
                s.call(f"{domain}.enable")
            result = PageResult()
            s.call("Page.navigate", url=url)
            s.wait_for("Page.loadEventFired")
            result.light_png = folder / f"{name}-light.png"
            result.light_png.write_bytes(base64.b64decode(s.call("Page.captureScreenshot", format="png")["data"]))
            s.call("Emulation.setEmulatedMedia", features=[{"name": "prefers-color-scheme", "value": "dark"}])
            result.dark_png = folder / f"{name}-dark.png"
            result.dark_png.write_bytes(base64.b64decode(s.call("Page.captureScreenshot", format="png")["data"]))
            s.call("Emulation.setEmulatedMedia", features=[{"name": "prefers-color-scheme", "value": "light"}])
            result.pdf = folder / f"{name}.pdf"
            result.pdf.write_bytes(base64.b64decode(s.call("Page.printToPDF", printBackground=True)["data"]))
            s.call("Runtime.evaluate", expression="1")  # every event before this answer has been read
            result.errors = _errors(s.events)
            return result
    finally:
        process.terminate()
        try:
            process.wait(timeout=STARTUP_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _devtools_port(process: subprocess.Popen) -> int:
    """Chromium prints ``DevTools listening on ws://127.0.0.1:PORT/...`` on stderr once it listens;
    the rest of stderr is drained by a thread so that the pipe never fills."""
    import re
    import threading

    for line in process.stderr:
        found = re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", line)
        if found:
            threading.Thread(target=lambda: [None for _ in process.stderr], daemon=True).start()
            return int(found.group(1))
    raise RuntimeError(f"chromium exited ({process.wait()}) without listening")
