"""Prometheus metrics and the outermost middleware: request id, timing, and the last word on unexpected errors."""

from __future__ import annotations

import logging
import re
import time
import uuid

from prometheus_client import CollectorRegistry, Counter, Histogram

from ..usage import dumps

log = logging.getLogger("usage_ledger")

REGISTRY = CollectorRegistry(auto_describe=True)
REQUESTS = Counter("usage_ledger_requests", "HTTP requests by route and status", ["method", "route", "status"],
                   registry=REGISTRY)
LATENCY = Histogram("usage_ledger_request_seconds", "HTTP request latency by route", ["method", "route"],
                    registry=REGISTRY,
                    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
ROWS_INGESTED = Counter("usage_ledger_records_recorded", "Records recorded through the ledger", registry=REGISTRY)

_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class RequestMiddleware:
    """Pure ASGI (no BaseHTTPMiddleware) so that streamed bodies stay streamed."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if _SAFE_REQUEST_ID.match(incoming) else uuid.uuid4().hex
        status = 500
        started = False
        began = time.perf_counter()

        async def send_with_id(message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            # No trace, no SQL, ever: the log has them, the client has the request id to quote.
            log.exception("unhandled error on %s %s (request %s)", scope["method"], scope["path"], request_id)
            if not started:
                await send_with_id({"type": "http.response.start", "status": 500, "headers": [
                    (b"content-type", b"application/json")]})
                await send({"type": "http.response.body", "body": dumps({"error": "Internal server error"})})
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            REQUESTS.labels(scope["method"], template, str(status)).inc()
            LATENCY.labels(scope["method"], template).observe(time.perf_counter() - began)
