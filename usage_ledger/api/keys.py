"""/api_keys: a user's own keys through an ADMIN key (API.md §6); the operator's twin lives in api/ledger.py."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from ..keys import MAX_ACTIVE_KEYS, consumption_limits, key_json, limit_text, new_secret, secret_hash, \
    trailing_usage_json
from ..money import CURRENCY_NAMES, MoneyError
from ..services import Services
from ..store.base import ApiKey, Conflict
from ..timeutil import MS_PER_DAY, TimeParseError, now_ms, parse_instant
from . import schemas
from .deps import CallerDep, ServicesDep
from .errors import ApiError, invalid, json_response, not_found

router = APIRouter(prefix="/api/v1", tags=["API Keys"])

NO_NUL = r"^[^\x00]*$"  # text PostgreSQL can store: a NUL character is a 400, on both engines
_EXPIRES = r"^$|^\d{4}-\d{2}-\d{2}$|^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{3})?Z$"


class LimitsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    usd: Annotated[Decimal, Field(ge=0, le=9999999999)] | None = None
    diem: Annotated[Decimal, Field(ge=0, le=9999999999)] | None = None
    vcu: Annotated[Decimal, Field(ge=0, le=9999999999)] | None = None


class CreateKey(BaseModel):
    model_config = ConfigDict(extra="forbid")
    apiKeyType: Literal["INFERENCE", "ADMIN"]
    description: Annotated[str, Field(max_length=64, pattern=NO_NUL)]
    consumptionLimit: LimitsIn | None = None
    limitPeriod: Literal["EPOCH", "MONTH", "LIFETIME"] = "EPOCH"
    modelPrivacy: Literal["ALL", "PRIVATE_TEXT", "PRIVATE_ONLY"] = "ALL"
    expiresAt: Annotated[str | None, Field(pattern=_EXPIRES, description="'' or null: never")] = None


class UpdateKey(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    description: Annotated[str | None, Field(max_length=64, pattern=NO_NUL)] = None
    consumptionLimit: LimitsIn | None = None
    limitPeriod: Literal["EPOCH", "MONTH", "LIFETIME"] | None = None
    modelPrivacy: Literal["ALL", "PRIVATE_TEXT", "PRIVATE_ONLY"] | None = None
    expiresAt: Annotated[str | None, Field(pattern=_EXPIRES)] = None


def _expiry(text: str | None, now: int) -> int | None:
    if not text:
        return None
    try:
        ms = parse_instant(text, end_of_day=True)
    except TimeParseError as exc:
        raise invalid({"expiresAt": [f"expiresAt {exc}"]}) from None
    if ms <= now:
        raise invalid({"expiresAt": ["expiresAt must be in the future"]})
    return ms


def _limits(limits: LimitsIn | None) -> dict[str, str | None]:
    limits = limits or LimitsIn()
    try:
        return {"limit_usd": limit_text(limits.usd), "limit_diem": limit_text(limits.diem),
                "limit_vcu": limit_text(limits.vcu)}
    except MoneyError as exc:
        raise invalid({"consumptionLimit": [str(exc)]}) from None


def create_key_for(svc: Services, uid: int, body: CreateKey) -> dict:
    """Shared by the user's POST /api_keys and the operator's POST /ledger/users/{id}/api_keys."""
    now = now_ms()
    secret = new_secret()
    key = ApiKey(kid=0, id=str(uuid.uuid4()), uid=uid, api_key_type=body.apiKeyType, description=body.description,
                 last6=secret[-6:], created_at=now, expires_at=_expiry(body.expiresAt, now), last_used_at=None,
                 revoked_at=None, **_limits(body.consumptionLimit), limit_period=body.limitPeriod,
                 model_privacy=body.modelPrivacy)
    try:
        key = svc.store.create_key(key, secret_hash(secret), MAX_ACTIVE_KEYS)
    except Conflict as exc:
        raise ApiError(429, {"error": str(exc)}) from None
    shown = key_json(key)
    return {"success": True, "data": {"id": key.id, "apiKey": secret, "apiKeyType": key.api_key_type,
                                      "description": key.description, "expiresAt": shown["expiresAt"],
                                      "consumptionLimit": consumption_limits(key), "limitPeriod": key.limit_period,
                                      "modelPrivacy": key.model_privacy}}


def _with_usage(svc: Services, uid: int, keys: list[ApiKey]) -> list[dict]:
    # Trailing seven days: today (UTC) and the six days before it, from the per-key daily rollup.
    spend = svc.store.key_spend_since(uid, now_ms() // MS_PER_DAY - 6)
    out = []
    for key in keys:
        sums = {CURRENCY_NAMES[cur]: amount for (kid, cur), amount in spend.items() if kid == key.kid}
        out.append({**key_json(key), "usage": trailing_usage_json(sums)})
    return out


@router.get("/api_keys", summary="The caller's active API keys", responses={200: {"model": schemas.ApiKeyList},
                                                                               **schemas.errors(400, 401, 429)})
async def list_keys(
    caller: CallerDep, svc: ServicesDep,
    page: Annotated[int | None, Query(ge=1, le=10**6, description="with limit: one page of keys")] = None,
    limit: Annotated[int | None, Query(ge=1, le=500, description="keys per page; all keys when page and limit "
                                                                 "are both absent")] = None,
) -> Response:
    if page is not None or limit is not None:
        limit = limit or 100
        offset = ((page or 1) - 1) * limit
    else:
        offset = 0

    def load() -> list[dict]:
        return _with_usage(svc, caller.uid, svc.store.list_keys(caller.uid, offset, limit))

    return json_response({"object": "list", "data": await run_in_threadpool(load)})


@router.post("/api_keys", summary="Create an API key; the secret is shown once",
             responses={200: {"model": schemas.CreatedKeyResponse}, **schemas.errors(400, 401, 429)})
async def create_key(caller: CallerDep, svc: ServicesDep, body: CreateKey) -> Response:
    return json_response(await run_in_threadpool(create_key_for, svc, caller.uid, body))


@router.get("/api_keys/{key_id}", summary="One of the caller's API keys",
            responses={200: {"model": schemas.KeyDetail}, **schemas.errors(401, 404, 429)})
async def get_key(key_id: str, caller: CallerDep, svc: ServicesDep) -> Response:
    def load():
        key = svc.store.get_key(caller.uid, key_id)
        return None if key is None else _with_usage(svc, caller.uid, [key])[0]

    found = await run_in_threadpool(load)
    if found is None:
        raise not_found()
    return json_response({"data": found})


@router.patch("/api_keys", summary="Change a key's description, expiry, limits, period or privacy",
              responses={200: {"model": schemas.KeyResponse}, **schemas.errors(400, 401, 404, 429)})
async def update_key(caller: CallerDep, svc: ServicesDep, body: UpdateKey) -> Response:
    sent = body.model_fields_set
    changes: dict = {}
    if "description" in sent:
        if body.description is None:
            raise invalid({"description": ["description must be a string"]})
        changes["description"] = body.description
    if "expiresAt" in sent:
        changes["expires_at"] = _expiry(body.expiresAt, now_ms())
    if "consumptionLimit" in sent:
        changes.update(_limits(body.consumptionLimit))
    for field, column in (("limitPeriod", "limit_period"), ("modelPrivacy", "model_privacy")):
        if field in sent and getattr(body, field) is not None:
            changes[column] = getattr(body, field)
    key = await run_in_threadpool(svc.store.update_key, caller.uid, body.id, changes)
    if key is None:
        raise not_found()
    return json_response({"success": True, "data": key_json(key)})


@router.delete("/api_keys", summary="Revoke a key (kept for history, no longer listed or accepted)",
               responses={200: {"model": schemas.Success}, **schemas.errors(400, 401, 404, 429)})
async def delete_key(caller: CallerDep, svc: ServicesDep,
                     id: Annotated[str | None, Query(description="The ID of the API key to delete")] = None) -> Response:
    if not id:
        raise invalid({"id": ["id is required"]})
    if not await run_in_threadpool(svc.store.revoke_key, caller.uid, id, now_ms()):
        raise not_found()
    return json_response({"success": True})
