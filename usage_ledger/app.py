"""Builds the ASGI app: routers, error shapes, the request middleware."""

from __future__ import annotations

from fastapi import FastAPI

from .api import billing, errors, keys, ledger, ops, web
from .api import limits
from .api.metrics import RequestMiddleware
from .services import Services
from .settings import Settings


def create_app(services: Services | None = None, settings: Settings | None = None) -> FastAPI:
    services = services or Services.build(settings or Settings())
    app = FastAPI(
        title="usage-ledger",
        version="0.1.0",
        description="Metering and billing usage for AI inference APIs, wire-compatible with Venice.ai's billing API.",
        redirect_slashes=False,  # API.md §9: no redirects; a trailing slash is a 404
        docs_url=None,
        redoc_url=None,
    )
    app.state.services = services
    errors.install(app)
    for module in (ops, billing, keys, ledger, web):
        app.include_router(module.router)
    app.add_middleware(limits.BodyLimit, max_bytes=services.settings.max_body_bytes,
                       timeout=services.settings.body_timeout_seconds)
    app.add_middleware(RequestMiddleware)
    app.openapi_schema = None
    _bearer_security(app)
    return app


def _bearer_security(app: FastAPI) -> None:
    """Document the Bearer credential on every route that takes one."""
    original = app.openapi

    def openapi() -> dict:
        if app.openapi_schema:
            return app.openapi_schema
        schema = original()
        schema.setdefault("components", {}).setdefault("securitySchemes", {})["BearerAuth"] = {
            "type": "http", "scheme": "bearer",
            "description": "An ADMIN API key for /billing and /api_keys; the operator token for /ledger"}
        for path, operations in schema["paths"].items():
            if path.startswith("/api/v1/"):
                for operation in operations.values():
                    operation["security"] = [{"BearerAuth": []}]
        limits.document(schema)  # 408 and 413 wherever a body is taken
        return schema

    app.openapi = openapi
