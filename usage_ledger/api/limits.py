"""Every request body is bounded (API.md §2, §7): past `max_bytes` it is a 413 (by its Content-Length before a byte
is read, else as soon as the stream passes the limit) and when it has not fully arrived within `timeout` seconds of
the request it is a 408, whatever the route, and before any credential is checked. So no route, authenticated or
not, can be made to buffer a body of any size or be held open by a client that trickles one."""

from __future__ import annotations

import asyncio

from starlette.exceptions import HTTPException

from ..usage import dumps


class BodyLimit:
    """Pure ASGI: wraps `receive` while the body is incomplete; limits surface as HTTPExceptions (413, 408), which
    FastAPI lets through its body parsing and the app's handlers render."""

    def __init__(self, app, max_bytes: int, timeout: float) -> None:
        self.app, self.max_bytes, self.timeout = app, max_bytes, timeout

    def _too_large(self) -> HTTPException:
        return HTTPException(413, detail=f"Request body too large (limit {self.max_bytes} bytes)")

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            body = dumps({"error": f"Request body too large (limit {self.max_bytes} bytes)"})
            await send({"type": "http.response.start", "status": 413, "headers": [
                (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                (b"connection", b"close")]})
            await send({"type": "http.response.body", "body": body})
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        received, complete = 0, False

        async def bounded_receive():
            nonlocal received, complete
            if complete:  # past the body: waiting for a disconnect is not bounded
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise HTTPException(408, detail=f"Request body not received within {self.timeout:g} s") from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise self._too_large()
                complete = not message.get("more_body", False)
            return message

        await self.app(scope, bounded_receive, send)


_REFUSAL = {"application/json": {"schema": {"type": "object", "required": ["error"],
                                            "properties": {"error": {"type": "string"}}}}}


def document(schema: dict) -> None:
    """The OpenAPI description tells the truth: every operation that takes a body may answer 408 and 413."""
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            if isinstance(operation, dict) and "requestBody" in operation:
                responses = operation.setdefault("responses", {})
                responses.setdefault("408", {"description": "Request body not received in time",
                                             "content": _REFUSAL})
                responses.setdefault("413", {"description": "Request body too large", "content": _REFUSAL})
