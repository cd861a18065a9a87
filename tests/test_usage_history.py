"""GET /api/v1/billing/usage-history (API.md §4, §9): the signed cursor walk, its bounds, its CSV."""

from __future__ import annotations

import csv
import io
import itertools
import re
import time
from datetime import datetime, timezone
from decimal import Decimal

import pytest

from conftest import Api, Tenant, app_client, new_tenant, post_records
from usage_ledger.api import billing

HISTORY = "/api/v1/billing/usage-history"
INVALID = "Invalid request parameters"
DAY_MS = 86_400_000
_keys = itertools.count(1)


@pytest.fixture
def client(module_client):
    """One app for the module (see conftest): every test works as users of its own."""
    return module_client


def row(ts: str, notes: str, *, currency: str = "USD", amount: str = "-0.01") -> dict:
    """A priced row; record_all() says whose."""
    return {"sku": "test-sku", "units": Decimal(1), "pricePerUnitUsd": Decimal("0.01"),
            "amount": Decimal(amount), "currency": currency, "timestamp": ts, "notes": notes,
            "idempotencyKey": f"h{next(_keys)}"}


def second_rows(n: int, prefix: str = "") -> list[dict]:
    """n rows one second apart from 2024-01-01T00:00:00Z, notes '<prefix>0'.. in time order."""
    return [row(f"2024-01-01T{i // 3600:02d}:{i // 60 % 60:02d}:{i % 60:02d}.000Z", f"{prefix}{i}")
            for i in range(n)]


def record_all(client, user: Tenant, records: list[dict]) -> None:
    records = [{**record, "userId": user.id} for record in records]
    for i in range(0, len(records), 1000):
        answer = post_records(client, records[i:i + 1000])
        assert answer["recorded"] == len(records[i:i + 1000]), answer


def history(client, headers: dict, **params):
    return client.get(HISTORY, params=params, headers=headers)


def page(client, headers: dict, **params) -> tuple[list[str], str | None]:
    r = history(client, headers, **params)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"data", "nextCursor"}
    return [x["notes"] for x in body["data"]], body["nextCursor"]


def walk(client, headers: dict, **first) -> list[list[str]]:
    """Every page of a walk, following nextCursor until it is null."""
    pages = []
    notes, cursor = page(client, headers, **first)
    pages.append(notes)
    while cursor is not None:
        assert cursor != ""
        notes, cursor = page(client, headers, cursor=cursor)
        pages.append(notes)
        assert len(pages) < 1000
    return pages


def assert_invalid(r, *fields: str) -> None:
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["error"] == INVALID
    assert isinstance(body["details"]["_errors"], list)
    assert set(body["details"]) - {"_errors"} == set(fields), body
    for field in fields:
        assert body["details"][field]["_errors"], body


# --- pageSize -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [10, 11, 1000])
def test_page_size_within_bounds(client, alice, size):
    record_all(client, alice, second_rows(25))
    pages = walk(client, alice, pageSize=size)
    assert [len(p) for p in pages] == [min(size, 25 - i) for i in range(0, 25, size)]
    assert sum(pages, []) == [str(i) for i in range(25)]


@pytest.mark.parametrize("size", ["9", "1001", "0", "-10", "ten", "", "10.5"])
def test_page_size_out_of_bounds_is_a_400_naming_pageSize(client, alice, size):
    assert_invalid(client.get(f"{HISTORY}?pageSize={size}", headers=alice), "pageSize")


def test_default_page_size_is_1000(client, alice):
    record_all(client, alice, second_rows(1001))
    first, cursor = page(client, alice)
    assert first == [str(i) for i in range(1000)]
    assert cursor is not None
    assert page(client, alice, cursor=cursor) == (["1000"], None)


def test_a_walk_ends_with_null_and_no_empty_trailing_page(client, alice):
    record_all(client, alice, second_rows(20))
    assert walk(client, alice, pageSize=10) == [[str(i) for i in range(10)], [str(i) for i in range(10, 20)]]


def test_an_empty_walk_is_one_empty_page(client, alice):
    assert page(client, alice) == ([], None)


def test_page_size_beside_a_cursor_replaces_the_carried_one(client, alice):
    record_all(client, alice, second_rows(50))
    first, cursor = page(client, alice, pageSize=10)
    second, cursor = page(client, alice, cursor=cursor, pageSize=15)
    assert second == [str(i) for i in range(10, 25)]
    third, cursor = page(client, alice, cursor=cursor)  # the new size travels on in the cursor
    assert third == [str(i) for i in range(25, 40)]
    assert walk(client, alice, cursor=cursor) == [[str(i) for i in range(40, 50)]]


def test_rows_ascend_by_timestamp_then_id_whatever_the_recording_order(client, alice):
    rows = [row("2024-01-01T00:00:02Z", "c"), row("2024-01-01T00:00:01Z", "a"), row("2024-01-01T00:00:02Z", "d"),
            row("2024-01-01T00:00:01Z", "b")]
    record_all(client, alice, rows)
    assert page(client, alice) == (["a", "b", "c", "d"], None)


# --- the cursor carries the walk ------------------------------------------------------------------------------


@pytest.mark.parametrize("extra", [{"currency": "USD"}, {"startTimestamp": "2024-01-01T00:00:00Z"},
                                   {"endTimestamp": "2024-02-01T00:00:00Z"},
                                   {"currency": "DIEM", "startTimestamp": "2024-01-01",
                                    "endTimestamp": "2024-01-02"}])
def test_filters_beside_a_cursor_are_a_400_naming_them(client, alice, extra):
    record_all(client, alice, second_rows(15))
    _, cursor = page(client, alice, pageSize=10)
    assert_invalid(history(client, alice, cursor=cursor, **extra), *extra)


def test_the_cursor_carries_the_filters(client, alice):
    rows = second_rows(30)
    for i, r in enumerate(rows):
        r["currency"] = "DIEM" if i % 2 else "USD"
    record_all(client, alice, rows)
    pages = walk(client, alice, pageSize=10, currency="DIEM", startTimestamp="2024-01-01T00:00:03Z",
                 endTimestamp="2024-01-01T00:00:27Z")
    assert sum(pages, []) == [str(i) for i in range(3, 27) if i % 2]
    assert [len(p) for p in pages] == [10, 2]


def tampered(cursor: str) -> str:
    """The same cursor with one character in its middle changed (still matching the pattern)."""
    i = len(cursor) // 2
    return cursor[:i] + ("A" if cursor[i] != "A" else "B") + cursor[i + 1:]


def test_a_tampered_cursor_is_a_400_naming_cursor(client, alice):
    record_all(client, alice, second_rows(15))
    _, cursor = page(client, alice, pageSize=10)
    for bad in (tampered(cursor), cursor[:-4], cursor + "AAAA", "A" * 40):
        assert_invalid(history(client, alice, cursor=bad), "cursor")


def test_another_users_cursor_is_a_400_naming_cursor(client, api, alice):
    bob = new_tenant(api, "bob")
    record_all(client, alice, second_rows(15))
    record_all(client, bob, second_rows(15, prefix="b"))
    _, cursor = page(client, alice, pageSize=10)
    assert_invalid(history(client, bob, cursor=cursor), "cursor")
    assert page(client, alice, cursor=cursor) == ([str(i) for i in range(10, 15)], None)


@pytest.mark.parametrize("age_ms, valid", [(DAY_MS - 1000, True), (DAY_MS, True), (DAY_MS + 1, False),
                                           (30 * DAY_MS, False)])
def test_a_cursor_older_than_24_hours_is_a_400_naming_cursor(client, alice, monkeypatch, age_ms, valid):
    record_all(client, alice, second_rows(15))
    issued = 1_900_000_000_000
    monkeypatch.setattr(billing, "now_ms", lambda: issued)
    _, cursor = page(client, alice, pageSize=10)
    monkeypatch.setattr(billing, "now_ms", lambda: issued + age_ms)
    r = history(client, alice, cursor=cursor)
    if valid:
        assert r.status_code == 200 and len(r.json()["data"]) == 5
    else:
        assert_invalid(r, "cursor")


def test_cursor_max_age_is_a_setting(tmp_path, monkeypatch):
    with app_client(tmp_path / "short", cursor_max_age_seconds=60) as c:
        api = Api(c)
        headers = new_tenant(api, "alice")
        record_all(c, headers, second_rows(15))
        issued = 1_900_000_000_000
        monkeypatch.setattr(billing, "now_ms", lambda: issued)
        _, cursor = page(c, headers, pageSize=10)
        monkeypatch.setattr(billing, "now_ms", lambda: issued + 61_000)
        assert_invalid(history(c, headers, cursor=cursor), "cursor")


@pytest.mark.parametrize("cursor", ["abc.def", "abc=", "a/b", "é", "A" * 513, "A" * 512, "", "A"])
def test_a_cursor_of_the_wrong_pattern_or_length_is_a_400_naming_cursor(client, alice, cursor):
    assert_invalid(history(client, alice, cursor=cursor), "cursor")


def test_rows_recorded_after_the_walk_started_never_appear_in_it(client, alice):
    record_all(client, alice, second_rows(15))
    first, cursor = page(client, alice, pageSize=10)
    # Later rows of every kind: after the position, before it (a backfill), in the very same millisecond as the last
    # row served, and at the far end.
    record_all(client, alice, [row("2024-01-01T00:00:12Z", "new-between"), row("2023-12-31T00:00:00Z", "new-backfill"),
                               row("2024-01-01T00:00:09Z", "new-same-ms"), row("2024-01-01T00:00:14.500Z", "new-end"),
                               row("2024-06-01T00:00:00Z", "new-later")])
    rest = walk(client, alice, cursor=cursor)
    assert first + sum(rest, []) == [str(i) for i in range(15)]
    # A new walk sees them all.
    assert len(sum(walk(client, alice, pageSize=10), [])) == 20


# --- bounds ---------------------------------------------------------------------------------------------------

@pytest.fixture
def edges(client, alice) -> dict:
    stamps = {"before": "2024-03-05T09:59:59.999Z", "start": "2024-03-05T10:00:00.000Z",
              "after-start": "2024-03-05T10:00:00.001Z", "before-end": "2024-03-05T10:59:59.999Z",
              "end": "2024-03-05T11:00:00.000Z", "after": "2024-03-05T11:00:00.001Z"}
    record_all(client, alice, [row(ts, name) for name, ts in reversed(list(stamps.items()))])
    return alice


def test_start_is_inclusive_and_end_exclusive(client, edges):
    assert page(client, edges, startTimestamp="2024-03-05T10:00:00Z", endTimestamp="2024-03-05T11:00:00Z") == (
        ["start", "after-start", "before-end"], None)
    # The same instants with offsets, and a space where the offset's '+' was.
    assert page(client, edges, startTimestamp="2024-03-05T15:30:00.000+05:30",
                endTimestamp="2024-03-05T06:00:00-05:00") == (["start", "after-start", "before-end"], None)
    r = client.get(f"{HISTORY}?startTimestamp=2024-03-05T12:00:00.001+02:00", headers=edges)
    assert [x["notes"] for x in r.json()["data"]] == ["after-start", "before-end", "end", "after"]


def test_consecutive_windows_sharing_a_boundary_have_no_gap_and_no_overlap(client, edges):
    bounds = ["2024-03-05", "2024-03-05T10:00:00.001Z", "2024-03-05T11:00:00Z", "2024-03-06"]
    parts = [page(client, edges, startTimestamp=a, endTimestamp=b)[0] for a, b in zip(bounds, bounds[1:])]
    assert parts == [["before", "start"], ["after-start", "before-end"], ["end", "after"]]


@pytest.mark.parametrize("start, end", [("2024-03-05T10:00:00Z", "2024-03-05T10:00:00Z"),
                                        ("2024-03-05T10:00:00.001Z", "2024-03-05T10:00:00Z"),
                                        ("2024-03-05T15:00:00+05:00", "2024-03-05T10:00:00Z"),
                                        ("2024-03-06", "2024-03-05")])
def test_end_not_after_start_is_a_400_naming_endTimestamp(client, alice, start, end):
    assert_invalid(history(client, alice, startTimestamp=start, endTimestamp=end), "endTimestamp")


@pytest.mark.parametrize("field", ["startTimestamp", "endTimestamp"])
@pytest.mark.parametrize("value", ["yesterday", "2024-02-30", "2024-03-05T10:00:00.1234567Z", "1709632800000",
                                   "2024-03-05T10:00:00Z" + " " * 21])
def test_bad_timestamps_are_a_400_naming_the_field(client, alice, field, value):
    assert_invalid(history(client, alice, **{field: value}), field)


CURRENCIES = ("USD", "DIEM", "BUNDLED_CREDITS", "VCU")


@pytest.mark.parametrize("currency", CURRENCIES)
def test_currency_filter_includes_legacy_vcu(client, alice, currency):
    record_all(client, alice, [row("2024-01-01T00:00:00Z", c, currency=c) for c in CURRENCIES])
    assert page(client, alice, currency=currency) == ([currency], None)


def test_an_unknown_currency_is_a_400(client, alice):
    assert_invalid(history(client, alice, currency="EUR"), "currency")


def test_rows_have_the_same_shape_as_billing_usage(client, alice):
    records = second_rows(3)
    records[1].update(requestId="req-1", promptTokens=5, completionTokens=7, inferenceExecutionTime=11)
    record_all(client, alice, records)
    usage = client.get("/api/v1/billing/usage", params={"sortOrder": "asc"}, headers=alice)
    assert history(client, alice).json()["data"] == usage.json()["data"]


# --- CSV ------------------------------------------------------------------------------------------------------

FILENAME = re.compile(r"^attachment; filename=billing-usage-history-(\d{8}T\d{9}Z)\.csv$")


def csv_page(client, headers: dict, **params):
    r = client.get(HISTORY, params=params, headers={**headers, "Accept": "text/csv"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "text/csv; charset=utf-8"
    return r


def test_csv_walk_with_x_next_cursor(client, alice):
    record_all(client, alice, second_rows(25))
    before = datetime.now(timezone.utc).replace(microsecond=0)
    notes, r = [], csv_page(client, alice, pageSize=10)
    pages = 1
    while True:
        stamp = FILENAME.match(r.headers["content-disposition"])
        assert stamp, r.headers["content-disposition"]
        exported = datetime.strptime(stamp[1][:15], "%Y%m%dT%H%M%S").replace(tzinfo=timezone.utc)
        assert before <= exported <= datetime.now(timezone.utc)
        table = list(csv.reader(io.StringIO(r.text, newline="")))
        assert table[0][0] == "timestamp" and len(table[0]) == 11
        assert r.text.endswith("\r\n")
        notes += [line[6] for line in table[1:]]
        cursor = r.headers.get("x-next-cursor")
        if cursor is None:
            break
        assert re.fullmatch(r"[A-Za-z0-9_-]{1,512}", cursor)
        r = csv_page(client, alice, cursor=cursor)
        pages += 1
    assert pages == 3
    assert notes == [str(i) for i in range(25)]


def test_csv_last_page_has_no_x_next_cursor_and_json_has_no_csv_headers(client, alice):
    record_all(client, alice, second_rows(5))
    r = csv_page(client, alice)
    assert "x-next-cursor" not in r.headers
    j = history(client, alice)
    assert j.headers["content-type"] == "application/json"
    assert "x-next-cursor" not in j.headers and "content-disposition" not in j.headers


def test_each_csv_page_downloads_under_a_new_name(client, alice):
    record_all(client, alice, second_rows(25))
    first = csv_page(client, alice, pageSize=10)
    time.sleep(0.002)
    second = csv_page(client, alice, cursor=first.headers["x-next-cursor"])
    a = FILENAME.match(first.headers["content-disposition"])[1]
    b = FILENAME.match(second.headers["content-disposition"])[1]
    assert a < b
