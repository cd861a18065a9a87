"""Venice's error shapes: DetailedError (zod format()) for 400, StandardError for the rest."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from ..store.base import StoreError
from ..usage import dumps

_STATUS_TEXT = {404: "Not found", 405: "Method not allowed", 413: "Request body too large",
                415: "Unsupported media type"}


class ApiError(Exception):
    def __init__(self, status: int, body: dict, headers: dict[str, str] | None = None) -> None:
        super().__init__(body.get("error"))
        self.status, self.body, self.headers = status, body, headers or {}


def json_response(body, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(dumps(body), status_code=status, media_type="application/json", headers=headers)


def details(fields: dict[str, list[str]], general: list[str] | None = None) -> dict:
    out: dict = {"_errors": list(general or [])}
    for name, reasons in fields.items():
        out[name] = {"_errors": reasons}
    return out


def invalid(fields: dict[str, list[str]] | None = None, general: list[str] | None = None) -> ApiError:
    return ApiError(400, {"error": "Invalid request parameters", "details": details(fields or {}, general)})


def unauthorized(message: str = "Authentication failed") -> ApiError:
    return ApiError(401, {"error": message})


def not_found() -> ApiError:
    return ApiError(404, {"error": "Not found"})


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> Response:
        return json_response(exc.body, exc.status, exc.headers)

    @app.exception_handler(StoreError)
    async def _store_error(_request: Request, exc: StoreError) -> Response:
        # Nothing of the request was stored (a write is all or nothing): the platform retries, idempotently.
        return json_response({"error": "The ledger is unavailable, nothing was stored: retry"}, 503,
                             {"Retry-After": "1"})

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> Response:
        fields: dict[str, list[str]] = {}
        general: list[str] = []
        for error in exc.errors():
            loc = [part for part in error.get("loc", ()) if part not in ("query", "body", "path", "header")]
            message = error.get("msg", "invalid")
            if loc and isinstance(loc[0], str):
                fields.setdefault(".".join(str(p) for p in loc), []).append(message)
            else:
                general.append(message)
        return json_response(invalid(fields, general).body, 400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> Response:
        message = _STATUS_TEXT.get(exc.status_code) or (exc.detail if isinstance(exc.detail, str) else "Error")
        if exc.status_code == 400:  # FastAPI's "error parsing the body": a 400 is always the DetailedError shape
            return json_response(invalid(general=[message]).body, 400, getattr(exc, "headers", None))
        return json_response({"error": message}, exc.status_code, getattr(exc, "headers", None))
