"""Open an ``autotune report`` page in headless Chromium and check it really works offline.

    python scripts/report_check.py report.html [--screenshot docs/report.png]

Checks, over the Chrome DevTools protocol (``--remote-debugging-pipe``, no extra package):
- no console error or warning, no uncaught exception, no browser log error;
- no request leaves the page (only file:, data:, blob: and about: URLs; DNS is also mapped
  to nothing, so a CDN script could not load even if the page asked for one);
- every plot rendered: each ``.plotly-graph-div`` holds plotly's ``svg.main-svg``;
- every report section (``autotune.report.SECTIONS``) is on the page.
``--screenshot`` writes a full-page PNG, 1280 px wide.

Chromium's stderr log (``--enable-logging=stderr``) is not enough for this: it prints
console messages of every level alike and never shows blocked network loads.

Exit 0 when every check passes, 1 when one fails (each failure on its own line), 2 when
Chromium is missing or cannot start (install it: ``apt-get install -y chromium``).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autotune.report import SECTIONS  # noqa: E402

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")
LOCAL_SCHEMES = ("file:", "data:", "blob:", "about:")
RENDER_TIMEOUT_S = 20.0
# Everything the page does in JS, as one JSON string for Runtime.evaluate.
PROBE_JS = """JSON.stringify({
  plots: document.querySelectorAll('.plotly-graph-div').length,
  rendered: Array.from(document.querySelectorAll('.plotly-graph-div'))
    .filter(d => d.querySelector('svg.main-svg')).length,
  sections: Array.from(document.querySelectorAll('section[id]')).map(s => s.id),
  height: document.documentElement.scrollHeight,
})"""


class CheckError(Exception):
    """Chromium could not be started or stopped answering; exit code 2."""


@dataclass
class PageState:
    plots: int
    rendered: int
    sections: list[str]
    height: int


@dataclass
class Findings:
    """What the browser reported while the page loaded and rendered."""

    problems: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def observe(self, event: dict[str, Any]) -> None:
        """Record one CDP event if it is a console problem or a request."""
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in (
            "error",
            "warning",
            "assert",
        ):
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in params["args"])
            self.problems.append(f"console.{params['type']}: {text}")
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            message = details.get("exception", {}).get("description") or details.get("text")
            self.problems.append(f"uncaught exception: {message}")
        elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
            self.problems.append(f"browser log: {params['entry'].get('text')}")
        elif method == "Network.requestWillBeSent":
            self.requests.append(params["request"]["url"])


# Chromium puts its singleton socket in $TMPDIR. A Unix socket's path holds at most 107
# bytes, and under a nested scratch TMPDIR (a CI script's inside a clone's mktemp, then
# pytest's per-test one) the path got longer and Chromium aborted ("Socket path too long").
_SOCKET_ROOM = 40  # longest temp dir used as is: the socket's own part takes about 45


def _profile_dir() -> str:
    """A new, short temp dir for Chromium's profile and its $TMPDIR."""
    base = tempfile.gettempdir()
    if len(base) > _SOCKET_ROOM and os.access("/tmp", os.W_OK):
        base = "/tmp"
    return tempfile.mkdtemp(prefix="report-check-", dir=base)


class Browser:
    """Headless Chromium driven over --remote-debugging-pipe (fd 3 in, fd 4 out)."""

    def __init__(self, executable: str) -> None:
        self.profile = _profile_dir()
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()

        def wire_pipes() -> None:  # in the child: the protocol's fixed fds, kept across exec
            read_end = os.dup(to_browser_r)  # neither may be overwritten by the other dup2
            write_end = os.dup(from_browser_w)
            os.dup2(read_end, 3)
            os.dup2(write_end, 4)
            os.set_inheritable(3, True)
            os.set_inheritable(4, True)

        args = [
            executable,
            "--headless",
            "--disable-gpu",
            "--no-sandbox",
            "--hide-scrollbars",
            "--no-first-run",
            "--remote-debugging-pipe",
            "--host-resolver-rules=MAP * ~NOTFOUND",
            f"--user-data-dir={self.profile}",
            "about:blank",
        ]
        self._log = (Path(self.profile) / "chromium.log").open("wb")  # for the error message
        self.process = subprocess.Popen(
            args,
            stdout=subprocess.DEVNULL,
            stderr=self._log,
            preexec_fn=wire_pipes,
            close_fds=False,
            env={**os.environ, "TMPDIR": self.profile},  # short: see _SOCKET_ROOM
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []

    def close(self) -> None:
        """Stop the browser we started and remove its profile."""
        for fd in (self._to_browser, self._from_browser):
            os.close(fd)
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log.close()
        shutil.rmtree(self.profile, ignore_errors=True)

    def send(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        """Send one command and return its result; events that arrive meanwhile are kept."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if session is not None:
            message["sessionId"] = session
        try:
            os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        except BrokenPipeError:  # it exited before reading: CI's fake browser did
            raise self._closed() from None
        while True:
            reply = self._receive(timeout_s=30.0)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise CheckError(f"{method} failed: {reply['error'].get('message')}")
                result: dict[str, Any] = reply.get("result", {})
                return result
            self.events.append(reply)

    def wait_for(self, method: str, timeout_s: float) -> None:
        """Read events until one named ``method`` arrives."""
        deadline = time.monotonic() + timeout_s
        while not any(e.get("method") == method for e in self.events):
            self.events.append(self._receive(max(0.1, deadline - time.monotonic())))
            if time.monotonic() > deadline:
                raise CheckError(f"no {method} within {timeout_s:.0f} s")

    def _receive(self, timeout_s: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            ready, _, _ = select.select([self._from_browser], [], [], timeout_s)
            if not ready:
                raise CheckError(f"Chromium sent nothing for {timeout_s:.0f} s{self._log_tail()}")
            chunk = os.read(self._from_browser, 1 << 20)
            if not chunk:
                raise self._closed()
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        message: dict[str, Any] = json.loads(raw)
        return message

    def _closed(self) -> CheckError:
        """The error for a browser that closed its pipe: its exit code and its log."""
        return CheckError(
            f"Chromium closed its pipe (exit code {self._exit_code()}){self._log_tail()}"
        )

    def _exit_code(self) -> int | None:
        """Its exit code once it has exited (its pipe closes a moment before); None if it
        still runs after 2 s."""
        try:
            return self.process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            return None

    def _log_tail(self) -> str:
        """The last lines Chromium wrote to stderr, as ``; its log: ...`` (or nothing)."""
        self._log.flush()
        lines = (Path(self.profile) / "chromium.log").read_text(errors="replace").splitlines()
        tail = " | ".join(line.strip() for line in lines[-5:] if line.strip())
        return f"; its log: {tail}" if tail else ""


def open_page(browser: Browser, url: str, width: int) -> str:
    """A new tab with the page loaded; returns the tab's session id."""
    target = browser.send("Target.createTarget", url="about:blank")["targetId"]
    session = str(browser.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"])
    for domain in ("Runtime", "Log", "Network", "Page"):
        browser.send(f"{domain}.enable", session)
    browser.send(
        "Emulation.setDeviceMetricsOverride",
        session,
        width=width,
        height=900,
        deviceScaleFactor=1,
        mobile=False,
    )
    browser.send("Page.navigate", session, url=url)
    browser.wait_for("Page.loadEventFired", RENDER_TIMEOUT_S)
    return session


def page_state(browser: Browser, session: str) -> PageState:
    """Poll the page until every plot has its SVG (or the render timeout passes)."""
    deadline = time.monotonic() + RENDER_TIMEOUT_S
    while True:
        reply = browser.send("Runtime.evaluate", session, expression=PROBE_JS, returnByValue=True)
        state = PageState(**json.loads(reply["result"]["value"]))
        if (state.plots and state.rendered == state.plots) or time.monotonic() > deadline:
            return state
        time.sleep(0.2)


def screenshot(browser: Browser, session: str, path: Path, width: int, height: int) -> None:
    """The whole page as one PNG."""
    browser.send(
        "Emulation.setDeviceMetricsOverride",
        session,
        width=width,
        height=height,
        deviceScaleFactor=1,
        mobile=False,
    )
    time.sleep(0.5)  # responsive plots redraw for the new viewport
    data = browser.send("Page.captureScreenshot", session, format="png", captureBeyondViewport=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(base64.b64decode(data["data"]))


def check(report: Path, shot: Path | None, width: int, executable: str) -> list[str]:
    """Every failed check, as one line each; empty when the page is fine."""
    browser = Browser(executable)
    try:
        session = open_page(browser, report.resolve().as_uri(), width)
        state = page_state(browser, session)
        if shot is not None:
            screenshot(browser, session, shot, width, state.height)
    finally:
        browser.close()
    findings = Findings()
    for event in browser.events:
        findings.observe(event)
    return failures(state, findings)


def failures(state: PageState, findings: Findings) -> list[str]:
    problems = list(findings.problems)
    problems += [
        f"request leaves the page: {url}"
        for url in findings.requests
        if not url.startswith(LOCAL_SCHEMES)
    ]
    if state.plots == 0:
        problems.append("the page holds no plot")
    elif state.rendered < state.plots:
        problems.append(f"only {state.rendered} of {state.plots} plots rendered an svg.main-svg")
    missing = [s for s, _ in SECTIONS if s not in state.sections]
    if missing:
        problems.append(f"sections missing: {', '.join(missing)}")
    return problems


def find_browser(given: str | None) -> str:
    for name in (given,) if given else BROWSERS:
        path = shutil.which(name) if name else None
        if path:
            return path
    raise CheckError(
        "no Chromium found; install it (Debian: apt-get install -y chromium) or pass --chromium."
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("report", type=Path, help="The HTML file `autotune report` wrote.")
    parser.add_argument("--screenshot", type=Path, help="Write a full-page PNG here.")
    parser.add_argument("--width", type=int, default=1280, help="Viewport width in px.")
    parser.add_argument("--chromium", help="The browser executable (default: found on PATH).")
    args = parser.parse_args(argv)
    if not args.report.is_file():
        print(f"error: {args.report} does not exist; run `autotune report -o FILE` first.")
        return 2
    try:
        problems = check(args.report, args.screenshot, args.width, find_browser(args.chromium))
    except CheckError as exc:
        print(f"error: {exc}")
        return 2
    for problem in problems:
        print("FAIL " + " ".join(problem.split()))  # one line each
    if not problems:
        shot = f"; screenshot {args.screenshot}" if args.screenshot else ""
        print(f"ok: {args.report}: every plot rendered, no console error, no network{shot}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
