"""A headless Chromium driven over the DevTools protocol, stdlib only.

``--remote-debugging-pipe``: the browser reads NUL-terminated JSON commands on fd 3
and writes replies and events on fd 4, so no port, no websocket and no test-tool
browser download (which fails here) are needed -- only Debian's ``chromium``.
"""
from __future__ import annotations

import base64
import fcntl
import json
import os
import queue
import shutil
import subprocess
import threading
import time

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--disable-extensions", "--disable-sync",
         "--mute-audio", "--hide-scrollbars"]


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _high_fd(fd: int) -> int:
    """A copy of ``fd`` numbered >= 10 (so moving it to 3 / 4 in the child clobbers nothing)."""
    high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return high


class Browser:
    """One headless browser; ``send`` a command, read ``events``.  Use as a context manager."""

    def __init__(self, profile_dir, log_path, binary: str | None = None, timeout: float = 30.0):
        self.timeout = timeout
        cmd_r, self._cmd_w = map(_high_fd, os.pipe())      # we write, the browser reads on fd 3
        self._res_r, res_w = map(_high_fd, os.pipe())      # the browser writes on fd 4, we read

        def child():
            os.dup2(cmd_r, 3)        # dup2 leaves 3 and 4 inheritable: they survive the exec
            os.dup2(res_w, 4)
        self._log_path = log_path
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen([binary or find_chromium(), *FLAGS, "--remote-debugging-pipe",
                                      f"--user-data-dir={profile_dir}", "about:blank"],
                                     stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log,
                                     preexec_fn=child, close_fds=False)
        os.close(cmd_r)
        os.close(res_w)
        self._next = 0
        self._replies: dict[int, queue.Queue] = {}
        self._lock = threading.Lock()
        self.events: list[tuple[str, dict, str | None]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        buf = b""
        while True:
            chunk = os.read(self._res_r, 1 << 16)
            if not chunk:
                break
            buf += chunk
            while b"\0" in buf:
                raw, buf = buf.split(b"\0", 1)
                msg = json.loads(raw)
                if "id" in msg:
                    with self._lock:
                        q = self._replies.get(msg["id"])
                    if q is not None:
                        q.put(msg)
                else:
                    self.events.append((msg.get("method"), msg.get("params", {}), msg.get("sessionId")))
        with self._lock:
            for q in self._replies.values():
                q.put({"error": {"message": "browser closed its pipe"}})

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        with self._lock:
            self._next += 1
            mid = self._next
            q = self._replies[mid] = queue.Queue()
        msg = {"id": mid, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._cmd_w, json.dumps(msg).encode() + b"\0")
        try:
            reply = q.get(timeout=self.timeout)
        except queue.Empty:
            raise TimeoutError(f"no reply to {method} in {self.timeout} s{self._log_tail()}") from None
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}{self._log_tail()}")
        return reply.get("result", {})

    def _log_tail(self) -> str:
        """The browser's last log lines, for a failure message."""
        try:
            self._log.flush()
            with open(self._log_path, "rb") as f:
                return "\nchromium log:\n" + f.read()[-2000:].decode(errors="replace")
        except OSError:
            return ""

    def wait_event(self, method: str, session: str | None = None, since: int = 0) -> dict:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            for m, params, s in self.events[since:]:
                if m == method and (session is None or s == session):
                    return params
            time.sleep(0.05)
        raise TimeoutError(f"no {method} event in {self.timeout} s")

    def page(self) -> "Page":
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        return Page(self, session)

    def close(self):
        try:
            self.send("Browser.close")
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._cmd_w, self._res_r):
            try:
                os.close(fd)
            except OSError:
                pass
        self._log.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Page:
    """A tab: navigate, evaluate, real mouse and keyboard input, screenshots."""

    def __init__(self, browser: Browser, session: str):
        self.b, self.session = browser, session
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable")
        # one CSS pixel per device pixel: native-resolution checks mean what they say
        self.send("Emulation.setDeviceMetricsOverride", {"width": 1400, "height": 1000, "deviceScaleFactor": 1,
                                                         "mobile": False})

    def send(self, method, params=None):
        return self.b.send(method, params, self.session)

    def events(self, method=None):
        return [p for m, p, s in self.b.events if s == self.session and (method is None or m == method)]

    def goto(self, url: str):
        since = len(self.b.events)
        self.send("Page.navigate", {"url": url})
        self.b.wait_event("Page.loadEventFired", self.session, since)

    def js(self, expr: str):
        r = self.send("Runtime.evaluate", {"expression": expr, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expr}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def click(self, x: float, y: float):
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", {"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1})

    def key(self, key: str, code: str, keycode: int, text: str | None = None):
        down = {"type": "keyDown", "key": key, "code": code, "windowsVirtualKeyCode": keycode}
        if text:
            down["text"] = text
        self.send("Input.dispatchKeyEvent", down)
        self.send("Input.dispatchKeyEvent", {"type": "keyUp", "key": key, "code": code, "windowsVirtualKeyCode": keycode})

    def screenshot(self, full: bool = True) -> bytes:
        return base64.b64decode(self.send("Page.captureScreenshot", {"format": "png",
                                                                     "captureBeyondViewport": full})["data"])

    def errors(self) -> list[str]:
        """Console errors, uncaught exceptions and the browser's own error log entries."""
        out = [f"console.{p['type']}: {[a.get('value', a.get('description')) for a in p.get('args', [])]}"
               for p in self.events("Runtime.consoleAPICalled") if p.get("type") in ("error", "assert")]
        out += [f"exception: {p['exceptionDetails']}" for p in self.events("Runtime.exceptionThrown")]
        out += [f"log: {p['entry'].get('text')} {p['entry'].get('url', '')}" for p in self.events("Log.entryAdded")
                if p["entry"].get("level") == "error"]
        out += [f"failed request: {p.get('errorText')}" for p in self.events("Network.loadingFailed")]
        return out

    def requested_urls(self) -> list[str]:
        return [p["request"]["url"] for p in self.events("Network.requestWillBeSent")]
