"""Properties of paging over random ledgers (API.md §2, §3, §4): every matching row exactly once, in order, with true
totals, whatever the recording order, ties, currencies, users and date range; and ingest is idempotent.

The store finds deep pages through hourly and daily rollups (store/sql.py `_segments`, `usage_page`), so the
generated ledgers and ranges cross hour and day boundaries, start and end mid-hour and mid-day, and sit on the
boundaries themselves, give or take a millisecond.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal

from hypothesis import HealthCheck, event, given, settings, strategies as st

from conftest import OPERATOR_TOKEN, bearer, exact_body, post_records

HOUR = 3_600_000
DAY = 24 * HOUR
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
BASE = 1_709_251_200_000  # 2024-03-01T00:00:00Z: the generated week spans 2024-02-27 .. 2024-03-04
CURRENCIES = ("USD", "DIEM", "BUNDLED_CREDITS", "VCU")
USERS = ("me", "other")

# Bounded so that the whole suite stays fast (PAGINATION_EXAMPLES=500 for a deeper run); the fixture (one app per
# test) is shared by the examples on purpose: each example uses users of its own.
PROPERTY = settings(max_examples=int(os.environ.get("PAGINATION_EXAMPLES", "30")), deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

_run = itertools.count(1)


# --- what the generator makes ---------------------------------------------------------------------------------

# Instants that sit on, next to and between hour and day boundaries, plus a few far away.
instants = st.one_of(
    st.builds(lambda day, hour, ms: BASE + day * DAY + hour * HOUR + ms,
              st.integers(-3, 3), st.integers(0, 23),
              st.sampled_from([0, 1, 999, HOUR // 2, HOUR - 1]) | st.integers(0, HOUR - 1)),
    st.sampled_from([BASE - 400 * DAY + 12_345, BASE - 40 * DAY, BASE - 1, BASE]),
)


@dataclass(frozen=True)
class Row:
    seq: int  # recording order: the store's id order
    user: str
    ts: int
    currency: str
    amount: Decimal
    notes: str  # unique, so that a row can be recognised in an answer


@st.composite
def ledgers(draw, max_rows: int = 45) -> tuple[str, list[list[dict]], list[Row]]:
    """A tag naming the example's users, batches of priced rows (recorded in the order given, out of time order),
    and the rows they become."""
    pool = draw(st.lists(instants, min_size=1, max_size=10))  # a small pool: many rows share one millisecond
    n = draw(st.integers(max_rows // 4, max_rows)) if draw(st.integers(0, 9)) else 0  # now and then empty
    tag = f"r{next(_run)}"
    rows = []
    for seq in range(n):
        ts = draw(st.sampled_from(pool) | instants)
        currency = draw(st.sampled_from(CURRENCIES))
        amount = draw(st.sampled_from([Decimal("-0.000000001"), Decimal("-1.5"), Decimal("-0.25"), Decimal("3")]))
        user = draw(st.sampled_from(USERS[:1] * 3 + USERS[1:]))  # mostly "me": the walks are over "me"'s rows
        rows.append(Row(seq, user, ts, currency, amount, f"{tag}-{seq}"))
    cuts = sorted(set(draw(st.lists(st.integers(1, max(n - 1, 1)), max_size=3)))) if n > 1 else []
    bounds = [0, *cuts, n]
    batches = [[record(r, tag) for r in rows[a:b]] for a, b in zip(bounds, bounds[1:]) if a < b]
    return tag, batches, rows


def record(r: Row, tag: str) -> dict:
    return {"userId": f"{tag}-{r.user}", "sku": "test-sku", "units": Decimal(1), "pricePerUnitUsd": Decimal(1),
            "amount": r.amount, "currency": r.currency, "timestamp": write_instant(r.ts, "Z"), "notes": r.notes,
            "idempotencyKey": r.notes}


def utc(ms: int) -> datetime:
    return EPOCH + timedelta(milliseconds=ms)


def write_instant(ms: int, style: str) -> str:
    """The same instant, written the ways API.md §3 accepts."""
    if style == "Z":
        return utc(ms).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"
    if style == "micro":  # extra digits are floored away
        return utc(ms).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}999Z"
    offset_minutes = {"plus": 330, "minus": -300, "space": 840}[style]
    local = utc(ms) + timedelta(minutes=offset_minutes)
    sign = "-" if offset_minutes < 0 else ("+" if style == "plus" else " ")  # " ": an unescaped '+'
    hours, minutes = divmod(abs(offset_minutes), 60)
    return local.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}{sign}{hours:02d}:{minutes:02d}"


@st.composite
def bounds(draw, rows: list[Row]) -> tuple[int, str] | None:
    """None, or (instant, style): near a row, on/next to/in the middle of an hour or a day, or a bare date."""
    if draw(st.booleans()):
        return None
    anchor = draw(st.sampled_from([r.ts for r in rows])) if rows and draw(st.integers(0, 3)) else draw(instants)
    shape = draw(st.sampled_from(["exact", "exact", "hour", "mid-hour", "day", "mid-day"]))
    ms = {"exact": anchor, "hour": anchor - anchor % HOUR, "mid-hour": anchor - anchor % HOUR + HOUR // 2,
          "day": anchor - anchor % DAY, "mid-day": anchor - anchor % DAY + DAY // 2}[shape]
    ms += draw(st.sampled_from([-1, 0, 0, 1]))
    style = draw(st.sampled_from(["Z", "Z", "micro", "plus", "minus", "space", "date"]))
    return ms, style


@st.composite
def ranges(draw, rows: list[Row], *, inclusive_end: bool) -> tuple[str | None, int | None, str | None, int | None]:
    """Start and end bounds (query text, the millisecond meant), usually in order, sometimes the wrong way round
    (which must be a 400). The end is inclusive (/billing/usage) or exclusive (/usage-history)."""
    first, second = draw(bounds(rows), label="start"), draw(bounds(rows), label="end")

    def texts(a, b):
        return (*bound_text(a, end_of_day=False), *bound_text(b, end_of_day=inclusive_end))

    out = texts(first, second)
    start, end = out[1], out[3]
    wrong_way = start is not None and end is not None and (start > end if inclusive_end else end <= start)
    if wrong_way and draw(st.integers(0, 4)):
        out = texts(second, first)
    return out


def bound_text(bound: tuple[int, str] | None, *, end_of_day: bool) -> tuple[str | None, int | None]:
    """The query text of a bound and the millisecond it means (a bare date: the day's first, or last, ms)."""
    if bound is None:
        return None, None
    ms, style = bound
    if style == "date":
        day_start = ms - ms % DAY
        return utc(day_start).strftime("%Y-%m-%d"), day_start + DAY - 1 if end_of_day else day_start
    return write_instant(ms, style), ms


# --- driving the service --------------------------------------------------------------------------------------

def set_up(client, tag: str, batches: list[list[dict]]) -> dict[str, dict]:
    """Create the example's users and keys, record the batches; the ADMIN headers of each user."""
    headers = {}
    for user in USERS:
        user_id = f"{tag}-{user}"
        r = client.post("/api/v1/ledger/users", json={"userId": user_id}, headers=bearer(OPERATOR_TOKEN))
        assert r.status_code == 201, r.text
        r = client.post(f"/api/v1/ledger/users/{user_id}/api_keys", json={"apiKeyType": "ADMIN", "description": ""},
                        headers=bearer(OPERATOR_TOKEN))
        headers[user] = bearer(r.json()["data"]["apiKey"])
    for batch in batches:
        answer = post_records(client, batch)
        assert answer["recorded"] == len(batch), answer
    return headers


def bucket(n: int) -> str:
    return str(n) if n < 2 else "2-3" if n < 4 else "4+"


def in_order(rows: list[Row]) -> list[str]:
    return [r.notes for r in sorted(rows, key=lambda r: (r.ts, r.seq))]


def walk_usage(client, headers: dict, limit: int, order: str, params: dict) -> tuple[list[str], int]:
    """Every page of /billing/usage, checking each page's size, echo and headers; the notes and the total."""
    seen, page, total = [], 1, None
    while True:
        r = client.get("/api/v1/billing/usage", params={**params, "limit": limit, "page": page, "sortOrder": order},
                       headers=headers)
        assert r.status_code == 200, r.text
        body = r.json()
        pagination = body["pagination"]
        if total is None:
            total = pagination["total"]
        assert pagination == {"page": page, "limit": limit, "total": total, "totalPages": -(-total // limit)}
        assert r.headers["x-pagination-total"] == str(total)
        if page < pagination["totalPages"]:
            assert len(body["data"]) == limit
        elif page == pagination["totalPages"]:
            assert 1 <= len(body["data"]) <= limit
        else:
            assert body["data"] == []
            return seen, total
        seen += [row["notes"] for row in body["data"]]
        page += 1


# --- the properties -------------------------------------------------------------------------------------------

@PROPERTY
@given(data=st.data(), ledger=ledgers())
def test_page_walks_yield_every_matching_row_once_in_order(client, data, ledger):
    tag, batches, rows = ledger
    headers = set_up(client, tag, batches)
    limit = data.draw(st.integers(1, 9), label="limit")
    currency = data.draw(st.sampled_from([None, None, None, *CURRENCIES]), label="currency")
    start_text, start, end_text, end = data.draw(ranges(rows, inclusive_end=True), label="range")
    params = {k: v for k, v in (("currency", currency), ("startDate", start_text), ("endDate", end_text)) if v}

    if start is not None and end is not None and start > end:
        r = client.get("/api/v1/billing/usage", params=params, headers=headers["me"])
        assert r.status_code == 400 and "startDate" in r.json()["details"]
        return
    matching = [r for r in rows if r.user == "me" and (currency is None or r.currency == currency)
                and (start is None or r.ts >= start) and (end is None or r.ts <= end)]
    expected = in_order(matching)
    for order in ("asc", "desc"):
        seen, total = walk_usage(client, headers["me"], limit, order, params)
        event(f"page walk: {bucket(-(-total // limit))} pages")
        assert total == len(matching)
        assert seen == (expected if order == "asc" else expected[::-1])


@PROPERTY
@given(data=st.data(), ledger=ledgers(max_rows=90))
def test_cursor_walks_yield_every_matching_row_once_in_order(client, data, ledger):
    tag, batches, rows = ledger
    headers = set_up(client, tag, batches)
    size = data.draw(st.integers(10, 13), label="pageSize")
    currency = data.draw(st.sampled_from([None, None, None, *CURRENCIES]), label="currency")
    # The end is exclusive here: a bare date is that day's first millisecond, on both sides.
    start_text, start, end_text, end = data.draw(ranges(rows, inclusive_end=False), label="range")
    params = {k: v for k, v in (("currency", currency), ("startTimestamp", start_text), ("endTimestamp", end_text),
                                ("pageSize", size)) if v}

    if start is not None and end is not None and end <= start:
        r = client.get("/api/v1/billing/usage-history", params=params, headers=headers["me"])
        assert r.status_code == 400 and "endTimestamp" in r.json()["details"]
        return
    matching = [r for r in rows if r.user == "me" and (currency is None or r.currency == currency)
                and (start is None or r.ts >= start) and (end is None or r.ts < end)]
    seen, query, pages = [], params, 0
    while True:
        pages += 1
        r = client.get("/api/v1/billing/usage-history", params=query, headers=headers["me"])
        assert r.status_code == 200, r.text
        body = r.json()
        seen += [row["notes"] for row in body["data"]]
        if body["nextCursor"] is None:
            assert len(body["data"]) <= size
            break
        assert len(body["data"]) == size
        query = {"cursor": body["nextCursor"]}
    event(f"cursor walk: {bucket(pages)} pages")
    assert seen == in_order(matching)


def snapshot(client, headers: dict) -> tuple:
    """Everything a user can see of their ledger: all rows (exact bytes) and balances."""
    rows = client.get("/api/v1/billing/usage", params={"limit": 500, "sortOrder": "asc"}, headers=headers)
    balance = client.get("/api/v1/billing/balance", headers=headers)
    assert rows.status_code == balance.status_code == 200
    return rows.content, balance.content


@PROPERTY
@given(ledger=ledgers())
def test_ingesting_any_batch_twice_changes_nothing(client, ledger):
    tag, batches, rows = ledger
    headers = set_up(client, tag, batches)
    before = {user: snapshot(client, h) for user, h in headers.items()}
    for batch in batches:
        answer = post_records(client, batch)
        assert (answer["recorded"], answer["duplicates"], answer["errors"]) == (0, len(batch), 0)
        assert all(result["status"] == "duplicate" for result in answer["results"])
    after = {user: snapshot(client, h) for user, h in headers.items()}
    assert after == before
    # ... and the ledger holds each row once, with balances equal to the sum of the user's amounts.
    for user, h in headers.items():
        mine = [r for r in rows if r.user == user]
        data = client.get("/api/v1/billing/usage", params={"limit": 500, "sortOrder": "asc"}, headers=h).json()
        assert [row["notes"] for row in data["data"]] == in_order(mine)
        balances = exact_body(client.get("/api/v1/billing/balance", headers=h))["balances"]
        for name, key in (("USD", "usd"), ("DIEM", "diem"), ("BUNDLED_CREDITS", "bundledCredits")):
            assert Decimal(balances[key]) == sum((r.amount for r in mine if r.currency == name), Decimal(0))
