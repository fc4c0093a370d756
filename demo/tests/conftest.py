"""Browser fixtures: Debian's Chromium driven by Playwright, with a fake microphone
that plays a WAV of real speech, against the live Django server on 127.0.0.1."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from html import escape
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
WIDGET_JS = ROOT / "static" / "agentconnect" / "widget.js"
ARTIFACTS = ROOT / "test-artifacts"
# What the fake microphone says, on a loop with silence around it.
VISITOR_SENTENCE = "Hello, can you hear me? What are your opening hours?"
# The flags from the issue; Playwright adds --headless itself.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-device-for-media-stream",
]

T = TypeVar("T")


def off_loop(fn: Callable[..., T], *args: Any, timeout: float = 30.0, **kwargs: Any) -> T:
    """Run `fn` on a fresh thread. Playwright's sync API keeps an asyncio loop
    running on the test's thread, so code that calls asyncio.run (the LiveKit
    gateway) must run elsewhere."""
    result: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(fn(*args, **kwargs))
        except BaseException as exc:  # re-raised on the test's thread
            error.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise AssertionError(f"{getattr(fn, '__name__', fn)} did not return within {timeout}s")
    if error:
        raise error[0]
    return result[0]


@pytest.fixture(scope="session")
def speech_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The visitor's voice: espeak-ng's speech, resampled to 48 kHz mono for Chromium's fake device."""
    for tool in ("espeak-ng", "sox"):
        assert shutil.which(tool), f"{tool} missing: scripts/install-deps.sh installs it"
    folder = tmp_path_factory.mktemp("speech")
    raw, wav = folder / "raw.wav", folder / "visitor.wav"
    subprocess.run(
        ["espeak-ng", "-v", "en-us", "-s", "140", "-w", str(raw), VISITOR_SENTENCE], check=True, timeout=60
    )
    # 2 s of silence first (the agent greets), 8 s after (room for the reply) before the loop repeats.
    subprocess.run(
        ["sox", str(raw), "-r", "48000", "-c", "1", "-b", "16", str(wav), "pad", "2", "8"],
        check=True,
        timeout=60,
    )
    info = subprocess.run(["soxi", "-r", str(wav)], check=True, capture_output=True, text=True, timeout=30)
    assert info.stdout.strip() == "48000"
    return wav


@pytest.fixture(scope="module")
def playwright_driver() -> Iterator[Any]:
    """Module-scoped: while Playwright's sync API runs, its event loop is the
    thread's running loop, and every later test that calls asyncio.run() (the
    provider, stub and mixer tests) would fail. It must stop with this module."""
    assert CHROMIUM.exists(), "Debian's chromium is missing: scripts/install-deps.sh installs it"
    assert WIDGET_JS.exists() and WIDGET_JS.stat().st_size > 0, (
        "static/agentconnect/widget.js is not built: run scripts/build-widget.sh (make test does)"
    )
    from playwright.sync_api import expect, sync_playwright

    # Each step waits for an event, never a fixed time; 20 s covers a loaded CI machine.
    expect.set_options(timeout=20_000)

    # Playwright's sync API keeps an event loop running on this thread; the ORM
    # calls the tests make between browser steps are still plain sync code.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as driver:
            yield driver
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@dataclass
class BrowserRun:
    """The browsers and pages of one test, their console output, and their screenshots."""

    driver: Any
    wav: Path
    name: str
    browsers: list[Any] = field(default_factory=list)
    pages: list[Any] = field(default_factory=list)
    log: list[str] = field(default_factory=list)

    def launch(self, *, fake_ui: bool = True) -> Any:
        """fake_ui=False: no --use-fake-ui-for-media-stream, so the page's
        permissions decide whether it gets the microphone."""
        args = [*CHROMIUM_ARGS, f"--use-file-for-fake-audio-capture={self.wav}"]
        if fake_ui:
            args.append("--use-fake-ui-for-media-stream")
        browser = self.driver.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=args, timeout=60_000
        )
        self.browsers.append(browser)
        return browser

    def page(self, *, fake_ui: bool = True, microphone: bool = True, browser: Any = None) -> Any:
        browser = browser or self.launch(fake_ui=fake_ui)
        context = browser.new_context(
            permissions=["microphone"] if microphone else [], viewport={"width": 1100, "height": 820}
        )
        page = context.new_page()
        page.set_default_timeout(20_000)
        label = f"page{len(self.pages) + 1}"
        start = time.monotonic()

        def note(line: str) -> None:
            self.log.append(f"{time.monotonic() - start:7.2f}s [{label} {line}")

        page.on("console", lambda msg: note(f"console.{msg.type}] {msg.text}"))
        page.on("pageerror", lambda err: note(f"pageerror] {err}"))
        page.on("request", lambda r: note(f"http] {r.method} {r.url} ->") if "/api/" in r.url else None)
        page.on("response", lambda r: note(f"http] {r.request.method} {r.url} -> {r.status}"))
        page.on("requestfailed", lambda r: note(f"http] {r.method} {r.url} failed: {r.failure}"))
        self.pages.append(page)
        return page

    def screenshot(self, page: Any, suffix: str) -> Path:
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / f"{self.name}-{suffix}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    def close(self) -> None:
        ARTIFACTS.mkdir(exist_ok=True)
        for i, page in enumerate(self.pages, 1):
            try:
                if not page.is_closed():
                    page.screenshot(path=str(ARTIFACTS / f"{self.name}-end-page{i}.png"), full_page=True)
            except Exception:  # a crashed page: the log says more
                pass
        (ARTIFACTS / f"{self.name}.console.log").write_text("\n".join(self.log) + "\n")
        for browser in self.browsers:
            try:
                browser.close()
            except Exception:
                pass


@pytest.fixture
def browser_run(
    playwright_driver: Any, speech_wav: Path, request: pytest.FixtureRequest
) -> Iterator[BrowserRun]:
    run = BrowserRun(
        driver=playwright_driver, wav=speech_wav, name=re.sub(r"[^\w.-]+", "_", request.node.name)
    )
    try:
        yield run
    finally:
        run.close()


def host_page_html(script_src: str, attrs: dict[str, str]) -> str:
    """A company's web page with the widget's one script tag pasted in."""
    data = " ".join(f'data-{k}="{escape(v)}"' for k, v in attrs.items())
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Shop</title></head>"
        "<body><h1>A company's website</h1><p><a href='#top'>A link before the widget</a></p>"
        f'<script src="{escape(script_src)}" {data}></script></body></html>'
    )


class HostSite:
    """A company's website on another origin (http://localhost:<port>) than the
    API (http://127.0.0.1:18765), so the widget's calls are cross-origin, CORS
    preflights included. A real server on loopback, not pages answered by
    Playwright: Chromium counts those as public and then blocks their requests
    to 127.0.0.1 on unload (Local Network Access), which no real site meets."""

    def __init__(self) -> None:
        self.pages: dict[str, bytes] = {}
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = site.pages.get(self.path.split("?")[0])
                self.send_response(200 if body else 404)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://localhost:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def add(self, html: str) -> str:
        path = f"/shop/{uuid.uuid4().hex[:8]}/"
        self.pages[path] = html.encode()
        return f"{self.origin}{path}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="session")
def host_site() -> Iterator[HostSite]:
    site = HostSite()
    try:
        yield site
    finally:
        site.close()


def open_host_page(page: Any, site: HostSite, *, live_server_url: str, attrs: dict[str, str]) -> None:
    """Open a page of the company's website that loads the real widget.js from the live server."""
    page.goto(site.add(host_page_html(f"{live_server_url}/static/agentconnect/widget.js", attrs)))
