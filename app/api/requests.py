"""Every request's identity and its one log line.

``X-Request-ID`` is taken from the client when it is a plausible id (or made here), kept in
``request.state.request_id`` for the audit trail, and echoed on the response. When the response
is sent, one JSON log line records the method, the route *template* (``/Patient/{resource_id}``,
never the path or query, which can carry identifiers), status, duration, request id and client.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("waymark.request")
_PLAUSIBLE_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


class RequestContext:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = _request_id(scope)
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode("ascii")))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            route = scope.get("route")
            log.info(
                "request",
                extra={
                    "method": scope.get("method"),
                    "route": getattr(route, "path", None),
                    "status": status,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                    "request_id": request_id,
                    "client_id": state.get("client_id"),
                },
            )


def _request_id(scope: Scope) -> str:
    name: bytes
    value: bytes
    for name, value in scope.get("headers", []):
        if name == b"x-request-id":
            text = value.decode("latin-1").strip()
            if _PLAUSIBLE_ID.match(text):
                return text
    return str(uuid.uuid4())
