"""/ledger/*: the platform's side, behind the operator token (API.md §2)."""

from __future__ import annotations

import json
import uuid
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from .. import ledger
from ..ledger import MAX_NOTES, Outcome, RecordError, credit_record
from ..money import MAX_NANO, nano_to_decimal
from ..services import Services
from ..store.base import Conflict, User
from ..timeutil import iso_ms, now_ms
from ..usage import total_pages
from . import schemas
from .billing import balance_json
from .deps import OperatorDep, ServicesDep
from .errors import ApiError, invalid, json_response, not_found
from .keys import NO_NUL, CreateKey, create_key_for
from .metrics import ROWS_INGESTED

router = APIRouter(prefix="/api/v1/ledger", tags=["Ledger (operator)"], dependencies=[OperatorDep])

NDJSON_TYPES = ("application/x-ndjson", "application/ndjson", "application/jsonl")


def _loads(data: bytes | str) -> Any:
    # Decimal, not float: a price or amount must arrive exactly as written.
    return json.loads(data, parse_float=Decimal)


def parse_records(body: bytes, content_type: str, max_records: int) -> list[Any]:
    """The records of a JSON or NDJSON body; an unparsable NDJSON line stays in place as a RecordError."""
    if content_type.split(";")[0].strip().lower() in NDJSON_TYPES:
        try:
            text = body.decode()
        except UnicodeDecodeError:
            raise invalid(general=["body is not UTF-8"]) from None
        # Split on "\n" only: splitlines() would also cut at U+2028, U+0085, ... which JSON strings may hold raw.
        lines = [line for line in text.split("\n") if line.strip()]
        if not lines:
            raise invalid({"records": ["no records: send 1 to 1000 NDJSON lines"]})
        if len(lines) > max_records:
            raise invalid({"records": [f"at most {max_records} records per request, got {len(lines)}"]})
        records: list[Any] = []
        for n, line in enumerate(lines, 1):
            try:
                records.append(_loads(line))
            except (ValueError, RecursionError):
                records.append(RecordError(f"line {n} is not valid JSON"))
        return records
    try:
        payload = _loads(body)
    except (ValueError, RecursionError):
        raise invalid(general=["body is not valid JSON"]) from None
    records = payload.get("records") if isinstance(payload, dict) else None
    if not isinstance(records, list) or not records:
        raise invalid({"records": ["records must be a non-empty array"]})
    if len(records) > max_records:
        raise invalid({"records": [f"at most {max_records} records per request, got {len(records)}"]})
    return records


def record(svc: Services, records: list[Any]) -> list[Outcome]:
    outcomes = ledger.record(svc.store, records, svc.catalog)
    ROWS_INGESTED.inc(sum(1 for o in outcomes if o.status == "recorded"))
    return outcomes


def records_json(outcomes: list[Outcome]) -> dict:
    counts = {status: sum(1 for o in outcomes if o.status == status) for status in ("recorded", "duplicate", "error")}
    return {"results": [o.as_json() for o in outcomes], "recorded": counts["recorded"],
            "duplicates": counts["duplicate"], "errors": counts["error"]}


@router.post("/records", summary="Record usage: 1..1000 inference events or priced rows (JSON or NDJSON)",
             responses={200: {"model": schemas.RecordsResponse}, 413: {"model": schemas.StandardError},
                        **schemas.errors(400, 401, 429)},
             openapi_extra={"requestBody": {"required": True, "content": {
                 "application/json": {"schema": {"type": "object", "required": ["records"], "properties": {
                     "records": {"type": "array", "minItems": 1, "maxItems": 1000, "items": {"type": "object"}}}}},
                 "application/x-ndjson": {"schema": {"type": "string", "description": "one record per line"}}}}})
async def post_records(request: Request, svc: ServicesDep) -> Response:
    body = await request.body()  # bounded in size and time by api/limits.py, as every body is
    records = parse_records(body, request.headers.get("content-type", ""), svc.settings.max_batch_records)
    return json_response(records_json(await run_in_threadpool(record, svc, records)))


class CreditIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    userId: Annotated[str, Field(min_length=1, max_length=128)]
    currency: Literal["USD", "DIEM", "BUNDLED_CREDITS"]
    # What the ledger holds exactly: nano-units in a signed 64-bit integer.
    amount: Annotated[Decimal, Field(gt=0, decimal_places=9, le=nano_to_decimal(MAX_NANO))]
    notes: Annotated[str, Field(max_length=MAX_NOTES)] = ""
    idempotencyKey: Annotated[str, Field(min_length=1, max_length=256)]


@router.post("/credits", summary="Add credit to a user's balance",
             responses={200: {"model": schemas.CreditResponse}, **schemas.errors(400, 401, 429)})
async def post_credit(body: CreditIn, svc: ServicesDep) -> Response:
    credit = credit_record(body.userId, body.currency, body.amount, body.notes, body.idempotencyKey)
    outcome = (await run_in_threadpool(record, svc, [credit]))[0]
    if outcome.status == "error":
        # The body was validated above: what the ledger can still refuse is the user, a reused key or a text with
        # NUL characters, and it names the field.
        raise invalid({outcome.field: [outcome.error]}) if outcome.field else invalid(general=[outcome.error])
    return json_response({"status": outcome.status})


class UserIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    userId: Annotated[str | None, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:@-]+$")] = None
    name: Annotated[str, Field(max_length=256, pattern=NO_NUL)] = ""


def user_json(user: User) -> dict:
    return {"id": user.user_id, "name": user.name, "createdAt": iso_ms(user.created_at)}


@router.post("/users", status_code=201, summary="Create a user",
             responses={201: {"model": schemas.UserOut}, 409: {"model": schemas.StandardError},
                        **schemas.errors(400, 401, 429)})
async def create_user(body: UserIn, svc: ServicesDep) -> Response:
    try:
        user = await run_in_threadpool(svc.store.create_user, body.userId or str(uuid.uuid4()), body.name, now_ms())
    except Conflict:
        raise ApiError(409, {"error": f"user '{body.userId}' already exists"}) from None
    return json_response(user_json(user), 201)


@router.get("/users", summary="Users, page by page", responses={200: {"model": schemas.UserList},
                                                                 **schemas.errors(400, 401, 429)})
async def list_users(svc: ServicesDep, page: Annotated[int, Query(ge=1, le=10**6)] = 1,
                     limit: Annotated[int, Query(ge=1, le=500)] = 100) -> Response:
    users, total = await run_in_threadpool(svc.store.list_users, (page - 1) * limit, limit)
    return json_response({"data": [user_json(u) for u in users],
                          "pagination": {"page": page, "limit": limit, "total": total,
                                         "totalPages": total_pages(total, limit)}})


async def _user(svc: Services, user_id: str) -> User:
    user = await run_in_threadpool(svc.store.get_user, user_id)
    if user is None:
        raise not_found()
    return user


@router.get("/users/{userId}", summary="One user", responses={200: {"model": schemas.UserOut},
                                                              **schemas.errors(401, 404, 429)})
async def get_user(userId: str, svc: ServicesDep) -> Response:
    return json_response(user_json(await _user(svc, userId)))


@router.post("/users/{userId}/api_keys", summary="Create an API key for a user (same body and answer as POST "
                                                  "/api/v1/api_keys)",
             responses={200: {"model": schemas.CreatedKeyResponse}, **schemas.errors(400, 401, 404, 429)})
async def create_user_key(userId: str, body: CreateKey, svc: ServicesDep) -> Response:
    user = await _user(svc, userId)
    return json_response(await run_in_threadpool(create_key_for, svc, user.uid, body))


@router.get("/users/{userId}/balance", summary="A user's balances (the body of GET /api/v1/billing/balance)",
            responses={200: {"model": schemas.BalanceResponse}, **schemas.errors(401, 404, 429)})
async def user_balance(userId: str, svc: ServicesDep) -> Response:
    user = await _user(svc, userId)
    return json_response(balance_json(await run_in_threadpool(svc.store.balances, user.uid)))
