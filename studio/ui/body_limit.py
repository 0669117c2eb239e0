"""Requests too big to be a job are refused before they are read: an API call's body (JSON) is at most
`MAX_CALL_BYTES`; file uploads have their own cap (Gradio's `max_file_size`, `--max-upload-mb`). An
ASGI middleware, so an oversized body is never parsed into memory."""

from __future__ import annotations

import json
from typing import Any, Awaitable, Callable

MAX_CALL_BYTES = 1_000_000  # a job's parameters are a few KB; 1 MB leaves room for long captions

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


async def _refuse(send: Send) -> None:
    body = json.dumps({"detail": f"The request is larger than {MAX_CALL_BYTES // 1000} KB: a job's parameters "
                                 "are far smaller (files go through an upload)."}).encode()
    await send({"type": "http.response.start", "status": 413, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


class BodyLimitMiddleware:
    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = str(scope.get("path", ""))
        if scope.get("type") != "http" or scope.get("method") not in ("POST", "PUT", "PATCH") \
                or path.rstrip("/").endswith("/upload"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > MAX_CALL_BYTES:
            await _refuse(send)
            return
        if length is not None:  # within the limit: the server reads no more than it said
            await self.app(scope, receive, send)
            return
        # No length given (chunked): read it here, up to the limit, then hand it on as it came.
        messages, seen = [], 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            seen += len(message.get("body", b""))
            if seen > MAX_CALL_BYTES:
                await _refuse(send)
                return
            if not message.get("more_body", False):
                break

        async def replay() -> dict[str, Any]:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)
