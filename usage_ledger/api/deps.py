"""Request dependencies: the services, and who is calling (API.md §1)."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from ..keys import same_secret, secret_hash
from ..services import Services
from ..store.base import ApiKey
from ..timeutil import now_ms
from .errors import ApiError, unauthorized


def services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(services)]


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated user, through one of their ADMIN keys."""
    uid: int
    key: ApiKey


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > 512:
        return None
    return token


def _address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _refused_headers(limit: int, wait: int) -> dict[str, str]:
    """429 headers: Retry-After and the reset in whole seconds, nothing remaining."""
    return {"Retry-After": str(wait), "x-ratelimit-limit-requests": str(limit),
            "x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": str(wait)}


def _guard(request: Request, svc: Services) -> None:
    wait = svc.auth_limiter.retry_after(_address(request))
    if wait:
        raise ApiError(429, {"error": "Too many failed authentication attempts; try again later"},
                       _refused_headers(svc.auth_limiter.limit, wait))


def _fail(request: Request, svc: Services, message: str = "Authentication failed") -> ApiError:
    svc.auth_limiter.failed(_address(request))
    return unauthorized(message)


async def admin_caller(request: Request, svc: ServicesDep) -> Caller:
    _guard(request, svc)
    token = _bearer(request)
    if token is None:
        raise _fail(request, svc)
    presented = secret_hash(token)
    found = await run_in_threadpool(svc.store.key_by_hash, presented)
    now = now_ms()
    if found is None or not same_secret(found[1], presented):
        raise _fail(request, svc)
    key = found[0]
    if key.revoked_at is not None or (key.expires_at is not None and key.expires_at <= now):
        raise _fail(request, svc)
    if key.api_key_type != "ADMIN":
        raise _fail(request, svc, "Admin API key required")
    _, wait = svc.key_rate.take(key.kid)
    if wait:
        raise ApiError(429, {"error": "Rate limit exceeded: too many requests for this API key"},
                       _refused_headers(svc.key_rate.limit, wait))
    if svc.last_used.due(key.kid, key.last_used_at, now):
        await run_in_threadpool(svc.store.touch_key, key.kid, now)
    return Caller(key.uid, key)


async def operator(request: Request, svc: ServicesDep) -> None:
    _guard(request, svc)
    token = _bearer(request)
    expected = svc.settings.operator_token
    if token is None or not expected or not hmac.compare_digest(token.encode(), expected.encode()):
        raise _fail(request, svc)


CallerDep = Annotated[Caller, Depends(admin_caller)]
OperatorDep = Depends(operator)
