"""Failed logins slow down, per client address: after a few wrong passwords from one address, its next
attempts wait a delay that doubles with each failure (up to five minutes), and are answered 429 until
then without the password being tried. Each failure is logged with the address. An ASGI middleware
around Gradio's own `/login`, so the login page itself is unchanged.

The address is the connection's own (a proxy in front should be the one that limits); forwarded
headers are not trusted, since any client can write them.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

log = logging.getLogger(__name__)

FREE_FAILURES = 3  # wrong passwords an address may make before any delay
FIRST_DELAY_S = 1.0
MAX_DELAY_S = 300.0
FORGET_S = 3600.0  # an address quiet this long starts afresh

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass
class _Record:
    failures: int = 0
    blocked_until: float = 0.0
    last: float = 0.0


class LoginLimiter:
    """The failure counts and delays, by address (shared by the middleware's instances)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._records: dict[str, _Record] = {}
        self._lock = threading.Lock()
        self._clock = clock

    def wait_s(self, address: str) -> float:
        """Seconds this address must still wait before its next attempt (0: it may try)."""
        with self._lock:
            record = self._records.get(address)
            return max(0.0, record.blocked_until - self._clock()) if record else 0.0

    def failed(self, address: str) -> None:
        now = self._clock()
        with self._lock:
            record = self._records.get(address)
            if record is None or now - record.last > FORGET_S:
                record = self._records[address] = _Record()
            record.failures += 1
            record.last = now
            over = record.failures - FREE_FAILURES
            delay = 0.0 if over < 0 else min(MAX_DELAY_S, FIRST_DELAY_S * 2 ** over)
            record.blocked_until = now + delay
            if len(self._records) > 10_000:  # many addresses: forget the quiet ones
                for key in [k for k, r in self._records.items() if now - r.last > FORGET_S]:
                    del self._records[key]
        log.warning("failed login from %s (%d in a row); next attempt allowed in %.0f s", address,
                    record.failures, delay)

    def succeeded(self, address: str) -> None:
        with self._lock:
            self._records.pop(address, None)


class LoginLimitMiddleware:
    """ASGI middleware: throttles POST /login by client address (see the module)."""

    limiter = LoginLimiter()

    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "http" or scope.get("method") != "POST" \
                or not str(scope.get("path", "")).rstrip("/").endswith("/login"):
            await self.app(scope, receive, send)
            return
        address = (scope.get("client") or ("unknown", 0))[0]
        wait = self.limiter.wait_s(address)
        if wait > 0:
            body = json.dumps({"detail": f"Too many failed logins from this address: try again in {wait:.0f} s."})
            headers = [(b"content-type", b"application/json"), (b"retry-after", str(int(wait) + 1).encode())]
            await send({"type": "http.response.start", "status": 429, "headers": headers})
            await send({"type": "http.response.body", "body": body.encode()})
            return

        async def watch(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status = message.get("status", 0)
                if status == 200:
                    self.limiter.succeeded(address)
                elif 400 <= status < 500:
                    self.limiter.failed(address)
            await send(message)

        await self.app(scope, receive, watch)
