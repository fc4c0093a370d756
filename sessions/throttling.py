"""Rate limits for the widget endpoints: per client IP and per widget key.

DRF throttles on Django's cache (Redis when REDIS_URL is set, so every web
process shares one count). Each limit is a fixed-window counter kept with
`cache.add` + `cache.incr`, on Redis as SET NX and INCR pipelined, which are
atomic there: N concurrent requests at the limit cannot all pass, as they can
with DRF's SimpleRateThrottle (it reads its history list, then writes it
back). A fixed window lets a client send up to twice the rate across a window
boundary; for abuse control that is enough, and it costs one round trip.

The per-IP limit is checked *before* authentication, so requests with a wrong
or missing widget key count too; the per-key limit after it (it needs the
key's company). The client IP is REMOTE_ADDR, unless RATE_LIMIT_CLIENT_IP_HEADER
names a header set by a proxy we run (X-Forwarded-For: the address the
nearest RATE_LIMIT_TRUSTED_PROXIES proxies saw); a header a client could set
is never trusted by default. IPv6 clients are counted per /64, the block one
subscriber usually holds.

If the cache is down the limits fail open (with a warning): a Redis outage
must not take the API down with it, and admission control still caps sessions.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from typing import Any

from django.conf import settings
from django.core.cache import caches
from rest_framework import exceptions
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle

logger = logging.getLogger(__name__)

_PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_WARN_EVERY_SECONDS = 60.0
_last_cache_warning = 0.0


def parse_rate(rate: str | None) -> tuple[int, int] | None:
    """'20/min' → (20, 60); '', None or 'off' → None (no limit)."""
    if not rate or rate.strip().lower() in ("off", "none", "0"):
        return None
    count, _, period = rate.partition("/")
    try:
        return int(count), _PERIODS[period.strip().lower()[0]]
    except (ValueError, KeyError, IndexError):
        raise ValueError(f"bad rate {rate!r}: use '<count>/<s|min|hour|day>'") from None


def client_ip(request: Request) -> str:
    """The address to count a request against (see the module docstring)."""
    meta = request.META
    address = meta.get("REMOTE_ADDR", "") or "unknown"
    header: str = settings.RATE_LIMIT_CLIENT_IP_HEADER
    if header:
        raw = meta.get("HTTP_" + header.upper().replace("-", "_"), "")
        hops = [h.strip() for h in raw.split(",") if h.strip()]
        if hops:
            # Each trusted proxy appends the address it saw: the entry the
            # outermost trusted proxy appended is the first one we can believe.
            address = hops[-min(settings.RATE_LIMIT_TRUSTED_PROXIES, len(hops))]
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


class RateLimited(exceptions.Throttled):
    """A 429 that says which limit was hit; the error handler adds `details` and Retry-After."""

    def __init__(self, *, wait: float, scope: str, rate: str, by: str) -> None:
        seconds = max(1, math.ceil(wait))
        super().__init__(
            wait=seconds,
            detail=f"Too many requests from this {by}: the limit is {rate}. Retry in {seconds} s.",
        )
        self.details = {"limit": scope, "rate": rate, "retry_after": seconds}


class WindowThrottle(BaseThrottle):
    """A fixed-window counter in the cache, keyed by scope, identity and window number."""

    by = "client"

    def __init__(self, scope: str) -> None:
        self.scope = scope
        self.rate: str = settings.RATE_LIMITS.get(scope, "")
        self._wait = 0.0

    def ident(self, request: Request) -> str | None:
        raise NotImplementedError

    def allow_request(self, request: Request, view: Any) -> bool:
        limit = parse_rate(self.rate)
        ident = self.ident(request)
        if limit is None or ident is None:
            return True
        count_max, period = limit
        now = time.time()
        window = int(now // period)
        key = f"{settings.RATE_LIMIT_KEY_PREFIX}:{self.scope}:{ident}:{window}"
        try:
            # Twice the period: the key outlives its window, so incr never
            # meets a key that expired after add (it would recreate it without a TTL).
            count = _hit(key, timeout=2 * period)
        except Exception as exc:  # the cache is down: fail open, see the module docstring
            _warn_cache_down(exc)
            return True
        if count <= count_max:
            return True
        self._wait = (window + 1) * period - now
        return False

    def wait(self) -> float:
        return self._wait


class IPThrottle(WindowThrottle):
    by = "address"

    def ident(self, request: Request) -> str | None:
        return client_ip(request)


class WidgetKeyThrottle(WindowThrottle):
    by = "widget key"

    def ident(self, request: Request) -> str | None:
        # Counted per company (one widget key each): no key material in cache keys.
        pk = getattr(request.auth, "pk", None)
        return None if pk is None else f"company-{pk}"


def _hit(key: str, *, timeout: int) -> int:
    """Create the counter `key` at 0 unless it exists, add one, return the count (Django's cache API)."""
    cache = caches["default"]
    cache.add(key, 0, timeout=timeout)
    return cache.incr(key)


def _warn_cache_down(exc: Exception) -> None:
    global _last_cache_warning
    now = time.monotonic()
    if now - _last_cache_warning >= _WARN_EVERY_SECONDS:
        _last_cache_warning = now
        logger.warning("rate limits not applied: the cache is unreachable (%s)", type(exc).__name__)


class RateLimitedViewMixin:
    """For DRF viewsets: per-IP limits before authentication, per-key limits after it.

    `ip_rate_scopes` / `key_rate_scopes` map a viewset action to a scope in
    settings.RATE_LIMITS; actions not named are not limited.
    """

    ip_rate_scopes: dict[str, str] = {}
    key_rate_scopes: dict[str, str] = {}
    action: str  # set by DRF's ViewSetMixin; None outside a routed request

    def perform_authentication(self, request: Request) -> None:
        scope = self.ip_rate_scopes.get(self.action or "")
        if scope:
            _check(IPThrottle(scope), request, self)
        super().perform_authentication(request)  # type: ignore[misc]

    def check_throttles(self, request: Request) -> None:
        scope = self.key_rate_scopes.get(self.action or "")
        if scope:
            _check(WidgetKeyThrottle(scope), request, self)


def _check(throttle: WindowThrottle, request: Request, view: Any) -> None:
    if not throttle.allow_request(request, view):
        logger.info("rate limited: %s (%s)", throttle.scope, throttle.rate)
        raise RateLimited(wait=throttle.wait(), scope=throttle.scope, rate=throttle.rate, by=throttle.by)
