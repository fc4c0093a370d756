"""One OpenAI-protocol HTTP client per endpoint and key, per job process, made before a job.

Left to themselves, the openai and groq plugins each build their own
``openai.AsyncClient``, and each of those builds an httpx client that loads the
CA bundle into a new SSL context, costly in CPU, three plugins per
session, all of it on the job's event loop while the visitor waits for the agent
(docs/benchmarks.md, dispatch stages). The plugins accept ``client=`` and do not
close a client they did not make, so a process makes one client per (base URL,
key) in its prewarm and every plugin of its session shares it.

A job process serves one job and runs one event loop (livekit-agents' process
executor), so a client made in prewarm, before that loop exists, is used by one
loop only; httpx binds its connection pool on the first request.
"""

from __future__ import annotations

import asyncio
import threading

import httpx2 as httpx
import openai

GROQ_DEFAULT_BASE_URL = "https://api.groq.com/openai/v1"

_LOCK = threading.Lock()
# (base URL, key) -> (the event loop that uses the client, or None while unused; the client)
_CLIENTS: dict[tuple[str, str], tuple[asyncio.AbstractEventLoop | None, openai.AsyncClient]] = {}


def openai_client(*, api_key: str, base_url: str = "") -> openai.AsyncClient:
    """The process's client for this endpoint and key, made on first use.

    An empty ``base_url`` means the OpenAI SDK's default (api.openai.com, or its
    own OPENAI_BASE_URL environment variable). The settings mirror what the
    plugins would have built themselves: no SDK retries (the framework retries a
    turn), the same timeouts and keep-alive pool.

    A client made outside an event loop (prewarm) goes to the first loop that
    asks for it. Its pooled connections belong to that loop, so a caller on
    another loop (tests run one loop per test) gets a client of its own.
    """
    try:
        loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    key = (base_url, api_key)
    with _LOCK:
        owner, client = _CLIENTS.get(key, (None, None))
        if client is not None and (owner is None or loop is None or owner is loop):
            if owner is None and loop is not None:
                _CLIENTS[key] = (loop, client)
            return client
        client = openai.AsyncClient(
            api_key=api_key,
            base_url=base_url or None,
            max_retries=0,
            http_client=httpx.AsyncClient(
                timeout=httpx.Timeout(connect=15.0, read=5.0, write=5.0, pool=5.0),
                follow_redirects=True,
                limits=httpx.Limits(max_connections=50, max_keepalive_connections=50, keepalive_expiry=120),
            ),
        )
        _CLIENTS[key] = (loop, client)
        return client
