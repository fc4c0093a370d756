"""A company's tool endpoint for tests: HTTPS on 127.0.0.1 with a throwaway certificate.

Runs on its own thread; records every request (headers, body) and answers by path:
``/ok`` a JSON object, ``/fail`` HTTP 500, ``/slow`` nothing until released (or the
server stops), ``/big`` a JSON body of ``big_bytes``, ``/garbage`` text that is not JSON.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web


@dataclass
class ToolRequest:
    path: str
    headers: dict[str, str]
    body: bytes


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (PEM cert, key), valid one day."""
    cert, key = directory / "tool-cert.pem", directory / "tool-key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    return cert, key


class ToolServer:
    def __init__(
        self, directory: Path, *, answer: dict[str, Any] | None = None, big_bytes: int = 200_000
    ) -> None:
        self.cert, self.key = make_certificate(directory)
        self.answer = answer or {"order": "A-1234", "status": "shipped"}
        self.big_bytes = big_bytes
        self.requests: list[ToolRequest] = []
        self._loop = asyncio.new_event_loop()
        self._release: asyncio.Event | None = None
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="tool-server", daemon=True)
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.requests.append(ToolRequest(request.path, dict(request.headers), body))
        if request.path == "/fail":
            return web.json_response({"error": "database down"}, status=500)
        if request.path == "/slow":
            assert self._release is not None
            await self._release.wait()
            return web.json_response(self.answer)
        if request.path == "/big":
            return web.json_response({"blob": "x" * self.big_bytes})
        if request.path == "/garbage":
            return web.Response(text="<html>oops</html>", content_type="text/html")
        return web.json_response(self.answer)

    async def _start(self) -> None:
        self._release = asyncio.Event()
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        self.port = self._runner.addresses[0][1]

    def start(self) -> ToolServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=30)
        return self

    def stop(self) -> None:
        async def stop() -> None:
            assert self._release is not None and self._runner is not None
            self._release.set()
            await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def json_bodies(self, path: str) -> list[Any]:
        return [json.loads(r.body) for r in self.requests if r.path == path]
