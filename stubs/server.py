"""One HTTP server on 127.0.0.1 serving every provider stub.

In-process, on the caller's event loop::

    async with StubServer() as stub:
        llm = openai.LLM(base_url=stub.openai_base_url, api_key="test")

In-process, on its own thread (for sync code, or a loop the stub must not share)::

    stub = StubServer()
    base_url = stub.start()
    ...
    stub.stop()

As a process: ``python -m stubs.server --port 8901`` (prints its base URL, stops on
SIGINT/SIGTERM). Change its behaviour at run time with ``POST /_control`` (see
``StubState.apply_control``); ``GET /_control`` returns behaviours and request counts.

It binds 127.0.0.1 only, always: it exists for tests and demos on this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import threading
import uuid
from types import SimpleNamespace, TracebackType

from aiohttp import web

from . import RELEASE_KEY, STATE_KEY, HangReleaser, StubState, deepgram_stub, openai_stub

HOST = "127.0.0.1"


async def _control(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    if request.method == "POST":
        try:
            payload = await request.json()
            if not isinstance(payload, dict):
                raise ValueError("the control body must be a JSON object")
            state.apply_control(payload)
        except (ValueError, json.JSONDecodeError) as e:
            return web.json_response({"error": str(e)}, status=400)
    return web.json_response(state.snapshot())


async def _add_request_id(request: web.Request, response: web.StreamResponse) -> None:
    # the SDKs read these into error messages and the plugins into metrics
    if request.path.endswith("/listen"):
        response.headers.setdefault("dg-request-id", str(uuid.uuid4()))
    elif request.path.startswith(("/v1/", "/openai/v1/")):
        response.headers.setdefault("x-request-id", "req_" + uuid.uuid4().hex)


def build_app(state: StubState) -> web.Application:
    # 50 MB: a long utterance uploaded as WAV is well past aiohttp's 1 MB default
    app = web.Application(client_max_size=50 * 1024 * 1024)
    app[STATE_KEY] = state
    app[RELEASE_KEY] = HangReleaser()
    openai_stub.add_routes(app)
    deepgram_stub.add_routes(app)
    app.on_response_prepare.append(_add_request_id)
    app.router.add_get("/_control", _control)
    app.router.add_post("/_control", _control)
    return app


class StubServer:
    """OpenAI, Groq and Deepgram stand-ins on one ephemeral (or given) loopback port."""

    def __init__(self, *, port: int = 0, state: StubState | None = None) -> None:
        self.state = state or StubState()
        self._requested_port = port
        self._port: int | None = None
        self._app: web.Application | None = None
        self._runner: web.AppRunner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # -- addresses -----------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the stub server is not running")
        return self._port

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def openai_base_url(self) -> str:
        return self.base_url + "/v1"

    @property
    def groq_base_url(self) -> str:
        return self.base_url + "/openai/v1"

    @property
    def deepgram_base_url(self) -> str:
        """The full listen URL, which is what ``deepgram.STT(base_url=...)`` expects."""
        return self.base_url + "/v1/listen"

    def settings(self, api_key: str = "test") -> SimpleNamespace:
        """A settings object for ``build_providers`` pointing every provider here."""
        return SimpleNamespace(
            OPENAI_API_KEY=api_key,
            OPENAI_BASE_URL=self.openai_base_url,
            GROQ_API_KEY=api_key,
            GROQ_BASE_URL=self.groq_base_url,
            DEEPGRAM_API_KEY=api_key,
            DEEPGRAM_BASE_URL=self.deepgram_base_url,
        )

    # -- on the caller's loop ------------------------------------------------------------

    async def astart(self) -> str:
        if self._runner is not None:
            raise RuntimeError("the stub server is already running")
        self._app = build_app(self.state)
        # hanging handlers are released on stop; what remains gets a short grace period
        self._runner = web.AppRunner(self._app, shutdown_timeout=1.0, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, HOST, self._requested_port)
        await site.start()
        self._port = int(self._runner.addresses[0][1])
        return self.base_url

    async def astop(self) -> None:
        if self._runner is None:
            return
        assert self._app is not None
        self._app[RELEASE_KEY].release()
        await self._runner.cleanup()
        self._runner = None
        self._app = None
        self._port = None

    def release_hangs(self) -> None:
        """Let every request hanging in ``hang``/``stall`` mode return now."""
        if self._app is None:
            return
        releaser = self._app[RELEASE_KEY]
        if self._loop is not None:
            self._loop.call_soon_threadsafe(releaser.release)
        else:
            releaser.release()

    async def __aenter__(self) -> StubServer:
        await self.astart()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.astop()

    # -- on a thread of its own ----------------------------------------------------------

    def start(self, timeout: float = 30.0) -> str:
        """Run the server on a background thread; return its base URL once it listens."""
        if self._thread is not None:
            raise RuntimeError("the stub server is already running")
        ready = threading.Event()
        failure: list[BaseException] = []
        loop = asyncio.new_event_loop()

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.astart())
            except BaseException as e:
                failure.append(e)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(self.astop())
                loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=run, name="stub-server", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise TimeoutError(f"the stub server did not start within {timeout} s")
        if failure:
            self._thread.join()
            self._thread = None
            self._loop = None
            raise failure[0]
        return self.base_url

    def stop(self, timeout: float = 10.0) -> None:
        if self._thread is None or self._loop is None:
            return
        self.release_hangs()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"the stub server did not stop within {timeout} s")
        self._thread = None
        self._loop = None

    def __enter__(self) -> StubServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


async def _serve(args: argparse.Namespace) -> None:
    state = StubState(
        reply_template=args.reply_template,
        fixed_transcript=args.fixed_transcript,
        fallback_transcript=args.fallback_transcript,
        api_key=args.api_key,
    )
    server = StubServer(port=args.port, state=state)
    await server.astart()
    print(f"stub server listening on {server.base_url}", flush=True)
    print(f"  OpenAI:   {server.openai_base_url}", flush=True)
    print(f"  Groq:     {server.groq_base_url}", flush=True)
    print(f"  Deepgram: {server.deepgram_base_url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.astop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m stubs.server",
        description="OpenAI/Groq/Deepgram stand-ins on 127.0.0.1 (real wire protocols, offline speech).",
    )
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    parser.add_argument(
        "--api-key", default=None, help="require exactly this key (default: any non-empty key)"
    )
    parser.add_argument("--reply-template", default="Stub reply to: {text}")
    parser.add_argument("--fixed-transcript", default=None, help="skip pocketsphinx and always return this")
    parser.add_argument("--fallback-transcript", default="", help="returned when pocketsphinx hears no words")
    args = parser.parse_args(argv)
    asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
