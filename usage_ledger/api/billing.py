"""/billing/usage, /billing/usage-history, /billing/balance: parse, call the store, render (API.md §3, §4, §6)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Header, Query
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from ..analytics import AnalyticsParamError, build, resolve_range
from ..money import CURRENCY_CODES, SPEND_ORDER
from ..store.base import UsageFilter
from ..timeutil import compact_iso_ms, now_ms, parse_instant, TimeParseError
from ..usage import Cursor, CursorError, csv_text, decode_cursor, dumps, encode_cursor, prefers_csv, row_json, total_pages
from . import schemas
from .deps import CallerDep, ServicesDep
from .errors import invalid, json_response

router = APIRouter(prefix="/api/v1/billing", tags=["Billing"])

Currency = Literal["USD", "VCU", "DIEM", "BUNDLED_CREDITS"]
AcceptHeader = Annotated[str | None, Header(description="`text/csv` preferred (q-values honoured) gives CSV")]
_DATE_HELP = ("ISO 8601 date-time with Z or an offset (converted to UTC; fraction floored to the millisecond), "
              "or a date YYYY-MM-DD meaning that whole UTC day")


def _instants(errors: dict, **values: tuple[str | None, bool]) -> dict[str, int | None]:
    out: dict[str, int | None] = {}
    for name, (text, end_of_day) in values.items():
        if text is None:
            out[name] = None
            continue
        try:
            out[name] = parse_instant(text, end_of_day=end_of_day)
        except TimeParseError as exc:
            errors[name] = [f"{name} {exc}"]
    return out


@router.get("/usage", summary="Usage rows, page by page (Venice's export)", responses=schemas.usage_responses())
async def usage(
    caller: CallerDep, svc: ServicesDep, accept: AcceptHeader = None,
    currency: Annotated[Currency | None, Query(description="Filter by currency")] = None,
    startDate: Annotated[str | None, Query(description=f"Inclusive lower bound: {_DATE_HELP}")] = None,
    endDate: Annotated[str | None, Query(description=f"Inclusive upper bound: {_DATE_HELP}")] = None,
    limit: Annotated[int, Query(ge=1, le=500, description="Rows per page")] = 200,
    # Any page a client can name is answered (past the end: empty, true totals); 2^53 - 1 is the largest exact
    # integer of a JSON/JavaScript client.
    page: Annotated[int, Query(ge=1, le=2**53 - 1, description="Page number, from 1")] = 1,
    sortOrder: Annotated[Literal["asc", "desc"], Query(description="Order of createdAt")] = "desc",
) -> Response:
    errors: dict[str, list[str]] = {}
    bounds = _instants(errors, startDate=(startDate, False), endDate=(endDate, True))
    if not errors and bounds["startDate"] is not None and bounds["endDate"] is not None \
            and bounds["startDate"] > bounds["endDate"]:
        errors["startDate"] = ["startDate must not be after endDate"]
    if errors:
        raise invalid(errors)
    end = bounds["endDate"]
    f = UsageFilter(caller.uid, None if currency is None else CURRENCY_CODES[currency], bounds["startDate"],
                    None if end is None else end + 1)
    total, rows = await run_in_threadpool(svc.store.usage_page, f, descending=sortOrder == "desc",
                                          offset=(page - 1) * limit, limit=limit)
    headers = {"x-pagination-limit": str(limit), "x-pagination-page": str(page), "x-pagination-total": str(total),
               "x-pagination-total-pages": str(total_pages(total, limit))}
    if prefers_csv(accept):
        headers["Content-Disposition"] = "attachment; filename=billing_usage.csv"
        return Response(csv_text(rows), media_type="text/csv; charset=utf-8", headers=headers)
    body = {"data": [row_json(r) for r in rows],
            "pagination": {"page": page, "limit": limit, "total": total, "totalPages": total_pages(total, limit)}}
    return json_response(body, headers=headers)


@router.get("/usage-history", summary="Usage rows as a cursor walk, ascending",
            responses=schemas.usage_history_responses())
async def usage_history(
    caller: CallerDep, svc: ServicesDep, accept: AcceptHeader = None,
    currency: Annotated[Currency | None, Query(description="Filter by currency (VCU too, so no row is hidden)")] = None,
    startTimestamp: Annotated[str | None, Query(max_length=40, description=f"Inclusive: {_DATE_HELP}")] = None,
    endTimestamp: Annotated[str | None, Query(max_length=40, description=f"Exclusive: {_DATE_HELP}")] = None,
    pageSize: Annotated[int | None, Query(ge=10, le=1000, description="Rows per page (default 1000); "
                                          "beside a cursor it replaces the carried one")] = None,
    cursor: Annotated[str | None, Query(max_length=512, pattern=r"^[A-Za-z0-9_-]+$",
                                        description="nextCursor of the previous page; carries the filters")] = None,
) -> Response:
    now = now_ms()
    errors: dict[str, list[str]] = {}
    if cursor is not None:
        for name, value in (("currency", currency), ("startTimestamp", startTimestamp), ("endTimestamp", endTimestamp)):
            if value is not None:
                errors[name] = [f"{name} cannot be combined with cursor: the cursor carries the walk's filters"]
        try:
            position = decode_cursor(cursor, svc.cursor_secret, uid=caller.uid, now=now,
                                     max_age_ms=svc.settings.cursor_max_age_seconds * 1000)
        except CursorError as exc:
            errors["cursor"] = [f"cursor {exc}"]
        if errors:
            raise invalid(errors)
        f = UsageFilter(caller.uid, position.currency, position.start, position.end)
        size, after, max_id = pageSize or position.page_size, (position.after_ts, position.after_id), position.max_id
    else:
        bounds = _instants(errors, startTimestamp=(startTimestamp, False), endTimestamp=(endTimestamp, False))
        start, end = bounds.get("startTimestamp"), bounds.get("endTimestamp")
        if not errors and start is not None and end is not None and end <= start:
            errors["endTimestamp"] = ["endTimestamp must be after startTimestamp"]
        if errors:
            raise invalid(errors)
        f = UsageFilter(caller.uid, None if currency is None else CURRENCY_CODES[currency], start, end)
        # The walk sees the ledger as it is now: rows recorded later never shift its pages.
        size, after, max_id = pageSize or 1000, None, await run_in_threadpool(svc.store.max_row_id)
    rows = await run_in_threadpool(svc.store.usage_after, f, after, size + 1, max_id)
    next_cursor = None
    if len(rows) > size:
        rows = rows[:size]
        last = rows[-1]
        next_cursor = encode_cursor(Cursor(caller.uid, f.currency, f.start, f.end, size, last.ts, last.id, max_id, now),
                                    svc.cursor_secret)
    if prefers_csv(accept):
        headers = {"Content-Disposition": f"attachment; filename=billing-usage-history-{compact_iso_ms(now)}.csv"}
        if next_cursor:
            headers["x-next-cursor"] = next_cursor
        return Response(csv_text(rows), media_type="text/csv; charset=utf-8", headers=headers)
    return json_response({"data": [row_json(r) for r in rows], "nextCursor": next_cursor})


def balance_json(balances: dict[int, int]) -> dict:
    """API.md §6: the first currency of the spend order with a positive balance is the one consumed next."""
    by_name = {name: balances.get(CURRENCY_CODES[name], 0) for name in SPEND_ORDER}
    consumption = next((name for name in SPEND_ORDER if by_name[name] > 0), None)
    return {"canConsume": consumption is not None, "consumptionCurrency": consumption,
            "balances": {"diem": schemas.money(by_name["DIEM"]), "usd": schemas.money(by_name["USD"]),
                         "bundledCredits": schemas.money(by_name["BUNDLED_CREDITS"])},
            "diemEpochAllocation": 0}


@router.get("/balance", summary="Balances and the currency consumed next", responses=schemas.balance_responses())
async def balance(caller: CallerDep, svc: ServicesDep) -> Response:
    return json_response(balance_json(await run_in_threadpool(svc.store.balances, caller.uid)))


@router.get("/usage-analytics", summary="Spend by day, by model and by API key (cached 10 minutes)",
            responses=schemas.analytics_responses())
async def usage_analytics(
    caller: CallerDep, svc: ServicesDep,
    lookback: Annotated[str | None, Query(max_length=16, description="Last N calendar days including today, "
                                          "`^[1-9]\\d*d$`, default 7d; more than 90d is clamped to 90d")] = None,
    startDate: Annotated[str | None, Query(max_length=10, description="YYYY-MM-DD; with endDate, wins over "
                                           "lookback; at most 90 days counting both ends")] = None,
    endDate: Annotated[str | None, Query(max_length=10, description="YYYY-MM-DD, with startDate")] = None,
    timezone: Annotated[str, Query(max_length=64, description="IANA time zone where days begin (our extension)")]
    = "UTC",
) -> Response:
    try:
        days = resolve_range(lookback, startDate, endDate, timezone, now_ms())
    except AnalyticsParamError as exc:
        raise invalid(exc.fields) from None
    cache_key = (caller.uid, days.cache_key)
    body = svc.analytics_cache.get(cache_key)
    if body is None:
        def compute() -> bytes:
            buckets = svc.store.analytics_buckets(caller.uid, days.bounds, hourly=not days.daily_grain)
            keys = svc.store.keys_by_kid(caller.uid, {kid for _, kid, *_ in buckets.by_key if kid})
            return dumps(build(days, buckets, svc.catalog, keys))

        body = await run_in_threadpool(compute)
        svc.analytics_cache.put(cache_key, body)
    return Response(body, media_type="application/json",
                    # Vary: a browser shared by two users must not serve one the other's cached answer.
                    headers={"Cache-Control": f"private, max-age={svc.settings.analytics_cache_seconds}",
                             "Vary": "Authorization"})
