"""GET /api/v1/billing/usage (API.md §3, §9): parameters, pages, Accept, and the exact bytes of JSON and CSV."""

from __future__ import annotations

import itertools
import re
from decimal import ROUND_HALF_EVEN, Decimal

import pytest

from conftest import Tenant, exact_body, post_records

USAGE = "/api/v1/billing/usage"
INVALID = "Invalid request parameters"
_keys = itertools.count(1)


@pytest.fixture
def client(module_client):
    """One app for the module (see conftest): every test works as users of its own."""
    return module_client


def priced(ts: str, notes: str = "", *, sku: str = "test-sku", units: str = "1", price: str = "1",
           amount: str | None = None, currency: str = "USD", **extra) -> dict:
    """A priced row with an explicit timestamp, price and currency (and amount when given); record_all() says whose."""
    record = {"sku": sku, "units": Decimal(units), "pricePerUnitUsd": Decimal(price),
              "currency": currency, "timestamp": ts, "notes": notes, "idempotencyKey": f"k{next(_keys)}", **extra}
    if amount is not None:
        record["amount"] = Decimal(amount)
    return record


def record_all(client, user: Tenant, records: list[dict]) -> None:
    answer = post_records(client, [{**record, "userId": user.id} for record in records])
    assert answer["recorded"] == len(records), answer


def get(client, headers: dict, **params):
    return client.get(USAGE, params=params, headers=headers)


def notes_of(client, headers: dict, **params) -> list[str]:
    r = get(client, headers, limit=500, sortOrder="asc", **params)
    assert r.status_code == 200, r.text
    return [row["notes"] for row in r.json()["data"]]


def assert_invalid(r, *fields: str) -> None:
    """A 400 in zod format() shape naming exactly these fields, each with at least one reason."""
    assert r.status_code == 400, r.text
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["error"] == INVALID
    details = body["details"]
    assert isinstance(details["_errors"], list)
    assert set(details) - {"_errors"} == set(fields), details
    for field in fields:
        reasons = details[field]["_errors"]
        assert reasons and all(isinstance(reason, str) and reason for reason in reasons), details


def minute_rows(n: int) -> list[dict]:
    """n rows one minute apart from 2024-01-01T00:00Z, notes '0'..'n-1' in time order."""
    return [priced(f"2024-01-01T{i // 60:02d}:{i % 60:02d}:00.000Z", str(i)) for i in range(n)]


# --- parameters at their bounds and just past them -----------------------------------------------------------


@pytest.mark.parametrize("limit", [1, 2, 499, 500])
def test_limit_within_bounds_is_honoured_and_echoed(client, alice, limit):
    record_all(client, alice, minute_rows(3))
    r = get(client, alice, limit=limit)
    assert r.status_code == 200
    assert len(r.json()["data"]) == min(limit, 3)
    assert r.json()["pagination"] == {"page": 1, "limit": limit, "total": 3, "totalPages": -(-3 // limit)}
    assert r.headers["x-pagination-limit"] == str(limit)


@pytest.mark.parametrize("value", ["0", "501", "-1", "abc", "1.5", "", "1e2", "99999999999999999999"])
def test_limit_out_of_bounds_or_not_an_integer_is_a_400_naming_limit(client, alice, value):
    assert_invalid(client.get(f"{USAGE}?limit={value}", headers=alice), "limit")


def test_page_one_is_the_first_page(client, alice):
    record_all(client, alice, minute_rows(3))
    r = get(client, alice, page=1, limit=2, sortOrder="asc")
    assert [row["notes"] for row in r.json()["data"]] == ["0", "1"]
    assert r.json()["pagination"]["page"] == 1


@pytest.mark.parametrize("value", ["0", "-1", "x", "", "1.5"])
def test_page_below_one_or_not_an_integer_is_a_400_naming_page(client, alice, value):
    assert_invalid(client.get(f"{USAGE}?page={value}", headers=alice), "page")


@pytest.mark.parametrize("page", [10**9, 10**9 + 1, 10**12, 2**53 - 1])
def test_a_huge_page_is_past_the_end_with_true_totals(client, alice, page):
    record_all(client, alice, minute_rows(3))
    r = get(client, alice, page=page, limit=500)
    assert r.status_code == 200
    assert r.json() == {"data": [], "pagination": {"page": page, "limit": 500, "total": 3, "totalPages": 1}}
    assert r.headers["x-pagination-page"] == str(page)


@pytest.mark.parametrize("page", [2**53, 10**30])
def test_a_page_number_beyond_exact_json_integers_is_a_400_not_a_crash(client, alice, page):
    assert_invalid(client.get(f"{USAGE}?page={page}", headers=alice), "page")


@pytest.mark.parametrize("order, expected", [("asc", ["0", "1", "2"]), ("desc", ["2", "1", "0"])])
def test_sort_order(client, alice, order, expected):
    record_all(client, alice, [minute_rows(3)[i] for i in (2, 0, 1)])  # given out of time order
    r = get(client, alice, sortOrder=order)
    assert [row["notes"] for row in r.json()["data"]] == expected


@pytest.mark.parametrize("value", ["ASC", "descending", "", "up"])
def test_other_sort_orders_are_a_400_naming_sortOrder(client, alice, value):
    assert_invalid(client.get(f"{USAGE}?sortOrder={value}", headers=alice), "sortOrder")


def _one_row_per_currency() -> list[dict]:
    return [priced("2024-01-01T00:00:00Z", "usd", currency="USD", amount="-1"),
            priced("2024-01-01T00:00:01Z", "vcu", currency="VCU", amount="-1"),
            priced("2024-01-01T00:00:02Z", "diem", currency="DIEM", amount="-1"),
            priced("2024-01-01T00:00:03Z", "bundled", currency="BUNDLED_CREDITS", amount="-1"),
            priced("2024-01-01T00:00:04Z", "usd-credit", currency="USD", amount="5")]


@pytest.mark.parametrize("currency, expected", [("USD", ["usd", "usd-credit"]), ("VCU", ["vcu"]), ("DIEM", ["diem"]),
                                                ("BUNDLED_CREDITS", ["bundled"])])
def test_currency_filter(client, alice, currency, expected):
    record_all(client, alice, _one_row_per_currency())
    r = get(client, alice, currency=currency, sortOrder="asc")
    assert [row["notes"] for row in r.json()["data"]] == expected
    assert {row["currency"] for row in r.json()["data"]} == {currency}
    assert r.json()["pagination"]["total"] == len(expected)


@pytest.mark.parametrize("value", ["EUR", "usd", "Diem", "", "USD,DIEM"])
def test_unknown_currency_is_a_400_naming_currency(client, alice, value):
    assert_invalid(client.get(f"{USAGE}?currency={value}", headers=alice), "currency")


def test_every_invalid_parameter_is_named_at_once(client, alice):
    r = client.get(f"{USAGE}?limit=0&page=0&sortOrder=x&currency=EUR", headers=alice)
    assert_invalid(r, "limit", "page", "sortOrder", "currency")


# --- dates ----------------------------------------------------------------------------------------------------

BOUNDARY_ROWS = [  # (notes, timestamp); listed in time order, recorded shuffled
    ("prev-day-end", "2024-03-04T23:59:59.999Z"),
    ("day-start", "2024-03-05T00:00:00.000Z"),
    ("before-10", "2024-03-05T09:59:59.999Z"),
    ("at-10", "2024-03-05T10:00:00.000Z"),
    ("t122", "2024-03-05T10:00:00.122Z"),
    ("t123", "2024-03-05T10:00:00.123Z"),
    ("t124", "2024-03-05T10:00:00.124Z"),
    ("day-end", "2024-03-05T23:59:59.999Z"),
    ("next-day", "2024-03-06T00:00:00.000Z"),
]
NAMES = [name for name, _ in BOUNDARY_ROWS]


def names_from(first: str) -> list[str]:
    return NAMES[NAMES.index(first):]


def names_to(last: str) -> list[str]:
    return NAMES[:NAMES.index(last) + 1]


@pytest.fixture
def boundary(client, alice) -> dict:
    shuffled = BOUNDARY_ROWS[4:] + BOUNDARY_ROWS[:4]
    record_all(client, alice, [priced(ts, name) for name, ts in shuffled])
    return alice


@pytest.mark.parametrize("start, expected", [
    ("2024-03-05T10:00:00.123Z", names_from("t123")),
    ("2024-03-05T10:00:00.123+00:00", names_from("t123")),
    ("2024-03-05T15:00:00.123+05:00", names_from("t123")),
    ("2024-03-05T15:30:00.123+05:30", names_from("t123")),
    ("2024-03-05T05:00:00.123-05:00", names_from("t123")),
    ("2024-03-04T22:00:00.123-12:00", names_from("t123")),
    ("2024-03-05T15:30:00.123+0530", names_from("t123")),  # ISO 8601 basic offset
    ("2024-03-05T15:00:00.123+05", names_from("t123")),  # hours-only offset (Venice's zod datetime takes it)
    ("2024-03-05T05:00:00.123-05", names_from("t123")),
    ("2024-03-05T10:00:00Z", names_from("at-10")),  # 0 fraction digits
    ("2024-03-05T10:00:00.1Z", names_from("t122")),  # .100, before .122
    ("2024-03-05T10:00:00.12Z", names_from("t122")),  # .120
    ("2024-03-05T10:00:00.122Z", names_from("t122")),
    ("2024-03-05T10:00:00.1229Z", names_from("t122")),  # floored to .122, not rounded to .123
    ("2024-03-05T10:00:00.12299Z", names_from("t122")),
    ("2024-03-05T10:00:00.122999Z", names_from("t122")),  # 6 digits
    ("2024-03-05T10:00:00.124001Z", names_from("t124")),
    ("2024-03-05", names_from("day-start")),  # a bare date starts at the day's first millisecond
    ("2024-03-06", ["next-day"]),
])
def test_startDate_is_an_inclusive_lower_bound(client, boundary, start, expected):
    assert notes_of(client, boundary, startDate=start) == expected


@pytest.mark.parametrize("end, expected", [
    ("2024-03-05T10:00:00.123Z", names_to("t123")),
    ("2024-03-05T15:00:00.123+05:00", names_to("t123")),
    ("2024-03-05T10:00:00.123999Z", names_to("t123")),  # floored: .123999 is still .123
    ("2024-03-05T10:00:00.122999Z", names_to("t122")),
    ("2024-03-05T10:00:00Z", names_to("at-10")),
    ("2024-03-05T09:59:59.999Z", names_to("before-10")),
    ("2024-03-05", names_to("day-end")),  # a bare date ends at the day's last millisecond
    ("2024-03-04", ["prev-day-end"]),
])
def test_endDate_is_an_inclusive_upper_bound(client, boundary, end, expected):
    assert notes_of(client, boundary, endDate=end) == expected


def test_a_bare_date_on_both_sides_is_that_whole_utc_day(client, boundary):
    assert notes_of(client, boundary, startDate="2024-03-05", endDate="2024-03-05") == NAMES[1:-1]


def test_equal_bounds_select_exactly_that_millisecond(client, boundary):
    t = "2024-03-05T10:00:00.123Z"
    assert notes_of(client, boundary, startDate=t, endDate=t) == ["t123"]


def test_a_space_where_the_offsets_plus_should_be_is_read_as_plus(client, boundary):
    # An unescaped '+' in a query string arrives as a space.
    r = client.get(f"{USAGE}?sortOrder=asc&startDate=2024-03-05T15:00:00.123+05:00"
                   f"&endDate=2024-03-05T15:00:00.124+05:00", headers=boundary)
    assert r.status_code == 200, r.text
    assert [row["notes"] for row in r.json()["data"]] == ["t123", "t124"]


@pytest.mark.parametrize("start, end", [
    ("2024-03-05T10:00:00.124Z", "2024-03-05T10:00:00.123Z"),
    ("2024-03-06", "2024-03-05"),
    ("2024-03-05T10:00:00.000+01:00", "2024-03-05T08:59:59.999Z"),
])
def test_startDate_after_endDate_is_a_400(client, boundary, start, end):
    assert_invalid(get(client, boundary, startDate=start, endDate=end), "startDate")


GARBAGE_DATES = ["yesterday", "", "2024-13-01", "2024-02-30", "2024-03-05T24:00:00Z", "2024-03-05T10:60:00Z",
                 "2024-03-05T10:00:00.1234567Z", "2024-03-05T10:00:00+25:00", "1709632800000", "2024-3-5",
                 "2024-03-05T10:00:00Z junk", "05/03/2024"]


@pytest.mark.parametrize("value", GARBAGE_DATES)
@pytest.mark.parametrize("field", ["startDate", "endDate"])
def test_garbage_dates_are_a_400_naming_the_field(client, alice, field, value):
    assert_invalid(get(client, alice, **{field: value}), field)


def test_both_bad_dates_are_named(client, alice):
    assert_invalid(get(client, alice, startDate="soon", endDate="later"), "startDate", "endDate")


# --- defaults and pages ---------------------------------------------------------------------------------------


def test_defaults_are_limit_200_page_1_newest_first(client, alice):
    record_all(client, alice, minute_rows(201))
    r = client.get(USAGE, headers=alice)
    body = r.json()
    assert body["pagination"] == {"page": 1, "limit": 200, "total": 201, "totalPages": 2}
    assert [row["notes"] for row in body["data"]] == [str(i) for i in range(200, 0, -1)]
    last = get(client, alice, page=2).json()
    assert [row["notes"] for row in last["data"]] == ["0"]


def test_a_limit_of_500_fills_whole_pages(client, alice):
    record_all(client, alice, minute_rows(501))
    first, second = (get(client, alice, limit=500, page=p, sortOrder="asc").json() for p in (1, 2))
    assert [row["notes"] for row in first["data"]] == [str(i) for i in range(500)]
    assert [row["notes"] for row in second["data"]] == ["500"]
    assert second["pagination"] == {"page": 2, "limit": 500, "total": 501, "totalPages": 2}


def pagination_headers(r) -> dict:
    return {name: r.headers.get(name) for name in
            ("x-pagination-limit", "x-pagination-page", "x-pagination-total", "x-pagination-total-pages")}


@pytest.mark.parametrize("order", ["asc", "desc"])
def test_every_page_but_the_last_holds_exactly_limit_rows(client, alice, order):
    record_all(client, alice, minute_rows(30))
    seen = []
    for page in range(1, 6):
        r = get(client, alice, limit=7, page=page, sortOrder=order)
        assert r.status_code == 200
        data = r.json()["data"]
        assert len(data) == (7 if page < 5 else 2)
        assert r.json()["pagination"] == {"page": page, "limit": 7, "total": 30, "totalPages": 5}
        assert pagination_headers(r) == {"x-pagination-limit": "7", "x-pagination-page": str(page),
                                         "x-pagination-total": "30", "x-pagination-total-pages": "5"}
        seen += [row["notes"] for row in data]
    expected = [str(i) for i in range(30)]
    assert seen == (expected if order == "asc" else expected[::-1])


def test_pages_past_the_end_are_empty_with_true_totals_and_headers(client, alice):
    record_all(client, alice, minute_rows(5))
    for page in (4, 5, 1000):
        r = get(client, alice, limit=2, page=page)
        assert r.status_code == 200
        assert r.json() == {"data": [], "pagination": {"page": page, "limit": 2, "total": 5, "totalPages": 3}}
        assert pagination_headers(r) == {"x-pagination-limit": "2", "x-pagination-page": str(page),
                                         "x-pagination-total": "5", "x-pagination-total-pages": "3"}


def test_an_empty_ledger_has_zero_pages_and_headers(client, alice):
    for accept in ("application/json", "text/csv"):
        r = client.get(USAGE, headers={**alice, "Accept": accept})
        assert r.status_code == 200
        assert pagination_headers(r) == {"x-pagination-limit": "200", "x-pagination-page": "1",
                                         "x-pagination-total": "0", "x-pagination-total-pages": "0"}
    assert client.get(USAGE, headers=alice).json() == {
        "data": [], "pagination": {"page": 1, "limit": 200, "total": 0, "totalPages": 0}}


def test_unknown_parameters_are_ignored(client, alice):
    record_all(client, alice, minute_rows(3))
    plain = get(client, alice, limit=2)
    extra = client.get(f"{USAGE}?limit=2&foo=bar&cursor=!!&pageSize=0&lookback=x", headers=alice)
    assert extra.status_code == 200
    assert extra.content == plain.content


@pytest.mark.parametrize("path", [USAGE + "/", "/api/v1/billing/usage-history/", "/api/v1/billing/balance/",
                                  "/api/v1/api_keys/"])
def test_a_trailing_slash_is_a_json_404_never_a_redirect(client, alice, path):
    r = client.get(path, headers=alice, follow_redirects=False)
    assert r.status_code == 404
    assert "location" not in r.headers
    assert r.headers["content-type"] == "application/json"
    assert isinstance(r.json()["error"], str) and r.json()["error"]


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_other_methods_are_a_json_405(client, alice, method):
    r = client.request(method, USAGE, headers=alice)
    assert r.status_code == 405
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {"error": "Method not allowed"}


# --- JSON or CSV ----------------------------------------------------------------------------------------------

CSV_HEADER = ("timestamp,sku,pricePerUnitUsd,units,amount,currency,notes,inferenceDetails.requestId,"
              "inferenceDetails.inferenceExecutionTime,inferenceDetails.promptTokens,"
              "inferenceDetails.completionTokens\r\n")


@pytest.mark.parametrize("accept, is_csv", [
    (None, False),
    ("application/json", False),
    ("*/*", False),
    ("text/csv", True),
    ("text/csv, application/json", True),
    ("application/json, text/csv", False),  # a tie: the first listed wins
    ("text/csv;q=0.5, application/json;q=0.9", False),
    ("application/json;q=0.5, text/csv", True),
    ("application/json;q=0.5, text/csv;q=0.6", True),
    ("text/csv;q=0", False),
])
def test_json_or_csv_by_accept(client, alice, accept, is_csv):
    record_all(client, alice, minute_rows(2))
    headers = dict(alice) if accept is None else {**alice, "Accept": accept}
    r = client.get(USAGE, headers=headers)
    assert r.status_code == 200
    assert pagination_headers(r)["x-pagination-total"] == "2"
    if is_csv:
        assert r.headers["content-type"] == "text/csv; charset=utf-8"
        assert r.headers["content-disposition"] == "attachment; filename=billing_usage.csv"
        assert r.text.startswith(CSV_HEADER)
        assert r.text.count("\r\n") == 3
    else:
        assert r.headers["content-type"] == "application/json"
        assert "content-disposition" not in r.headers
        assert len(r.json()["data"]) == 2


# --- the exact bytes ------------------------------------------------------------------------------------------

FIXED_ROWS = [
    priced("2024-03-05T10:00:00.123Z", "API Inference", sku="zai-org-glm-5-1-llm-output-mtoken", units="0.000227",
           price="2.8", currency="DIEM", requestId="chatcmpl-4007fd29f42b7d3c4107f4345e8d174a",
           inferenceExecutionTime=2964, promptTokens=339, completionTokens=227),
    priced("2024-03-05T10:00:00.123Z", 'He said "hi, there"', sku="tiny-units", units="0.000001", amount="-0.000001"),
    priced("2024-03-05T10:00:00.123Z", "line one\nline two", sku="nano-units", units="0.000000001",
           requestId="req-no-tokens"),
    priced("2024-03-05T10:00:01Z", "=SUM(A1:A9)", sku="formula-eq", price="0.5"),
    priced("2024-03-05T10:00:02Z", "+15551234567", sku="formula-plus", units="2", price="0.25"),
    priced("2024-03-05T10:00:03Z", "-2+3", sku="formula-minus", units="3", price="0.1"),
    priced("2024-03-05T10:00:04Z", "@SUM(A1)", sku="formula-at", units="4", price="0.01", requestId="=req-formula",
           inferenceExecutionTime=0, promptTokens=10, completionTokens=0),
    priced("2024-03-05T10:00:05Z", "\tindented", sku="formula-tab", price="0.000000001"),
    priced("2024-03-05T10:00:06Z", "Café ☕ — 東京", sku="unicode", price="1.5"),
    priced("2024-03-05T12:00:07.000+02:00", "", sku="precise", units="0.123456789", price="9.87654321"),
    priced("2024-03-05T10:00:08Z", "top-up, thanks", sku="credit", units="25", amount="25"),
    priced("2024-03-05T10:00:09Z", "legacy", sku="legacy-vcu", units="2", price="0.5", amount="-1", currency="VCU"),
    priced("2024-03-05T10:00:10Z", "", sku="bundled", units="3", price="0.1", amount="-0.3",
           currency="BUNDLED_CREDITS"),
    # Recorded last, but in the same millisecond as the first three: it sorts after them (by id), not at the end.
    priced("2024-03-05T10:00:00.123Z", "", sku="late-same-ms", units="0.000000001", price="0.000000001"),
]

# Written by hand from FIXED_ROWS and API.md §3, not produced by the code.
EXPECTED_JSON = (
    '{"data":['
    '{"timestamp":"2024-03-05T10:00:00.123Z","sku":"zai-org-glm-5-1-llm-output-mtoken","pricePerUnitUsd":2.8,'
    '"units":0.000227,"amount":-0.0006356,"currency":"DIEM","notes":"API Inference","inferenceDetails":'
    '{"requestId":"chatcmpl-4007fd29f42b7d3c4107f4345e8d174a","inferenceExecutionTime":2964,"promptTokens":339,'
    '"completionTokens":227}},'
    '{"timestamp":"2024-03-05T10:00:00.123Z","sku":"tiny-units","pricePerUnitUsd":1,"units":0.000001,'
    r'"amount":-0.000001,"currency":"USD","notes":"He said \"hi, there\"","inferenceDetails":null},'
    '{"timestamp":"2024-03-05T10:00:00.123Z","sku":"nano-units","pricePerUnitUsd":1,"units":0.000000001,'
    r'"amount":-0.000000001,"currency":"USD","notes":"line one\nline two","inferenceDetails":'
    '{"requestId":"req-no-tokens","inferenceExecutionTime":null,"promptTokens":null,"completionTokens":null}},'
    '{"timestamp":"2024-03-05T10:00:00.123Z","sku":"late-same-ms","pricePerUnitUsd":0.000000001,'
    '"units":0.000000001,"amount":0,"currency":"USD","notes":"","inferenceDetails":null},'
    '{"timestamp":"2024-03-05T10:00:01.000Z","sku":"formula-eq","pricePerUnitUsd":0.5,"units":1,"amount":-0.5,'
    '"currency":"USD","notes":"=SUM(A1:A9)","inferenceDetails":null},'
    '{"timestamp":"2024-03-05T10:00:02.000Z","sku":"formula-plus","pricePerUnitUsd":0.25,"units":2,"amount":-0.5,'
    '"currency":"USD","notes":"+15551234567","inferenceDetails":null},'
    '{"timestamp":"2024-03-05T10:00:03.000Z","sku":"formula-minus","pricePerUnitUsd":0.1,"units":3,"amount":-0.3,'
    '"currency":"USD","notes":"-2+3","inferenceDetails":null},'
    '{"timestamp":"2024-03-05T10:00:04.000Z","sku":"formula-at","pricePerUnitUsd":0.01,"units":4,"amount":-0.04,'
    '"currency":"USD","notes":"@SUM(A1)","inferenceDetails":{"requestId":"=req-formula","inferenceExecutionTime":0,'
    '"promptTokens":10,"completionTokens":0}},'
    '{"timestamp":"2024-03-05T10:00:05.000Z","sku":"formula-tab","pricePerUnitUsd":0.000000001,"units":1,'
    r'"amount":-0.000000001,"currency":"USD","notes":"\tindented","inferenceDetails":null},'
    '{"timestamp":"2024-03-05T10:00:06.000Z","sku":"unicode","pricePerUnitUsd":1.5,"units":1,"amount":-1.5,'
    '"currency":"USD","notes":"Café ☕ — 東京","inferenceDetails":null},'
    '{"timestamp":"2024-03-05T10:00:07.000Z","sku":"precise","pricePerUnitUsd":9.87654321,"units":0.123456789,'
    '"amount":-1.219326311,"currency":"USD","notes":"","inferenceDetails":null},'
    '{"timestamp":"2024-03-05T10:00:08.000Z","sku":"credit","pricePerUnitUsd":1,"units":25,"amount":25,'
    '"currency":"USD","notes":"top-up, thanks","inferenceDetails":null},'
    '{"timestamp":"2024-03-05T10:00:09.000Z","sku":"legacy-vcu","pricePerUnitUsd":0.5,"units":2,"amount":-1,'
    '"currency":"VCU","notes":"legacy","inferenceDetails":null},'
    '{"timestamp":"2024-03-05T10:00:10.000Z","sku":"bundled","pricePerUnitUsd":0.1,"units":3,"amount":-0.3,'
    '"currency":"BUNDLED_CREDITS","notes":"","inferenceDetails":null}'
    '],"pagination":{"page":1,"limit":200,"total":14,"totalPages":1}}'
).encode()

EXPECTED_CSV = (
    CSV_HEADER
    + "2024-03-05T10:00:00.123Z,zai-org-glm-5-1-llm-output-mtoken,2.8,0.000227,-0.0006356,DIEM,API Inference,"
      "chatcmpl-4007fd29f42b7d3c4107f4345e8d174a,2964,339,227\r\n"
    + '2024-03-05T10:00:00.123Z,tiny-units,1,0.000001,-0.000001,USD,"He said ""hi, there""",,,,\r\n'
    + '2024-03-05T10:00:00.123Z,nano-units,1,0.000000001,-0.000000001,USD,"line one\nline two",req-no-tokens,,,\r\n'
    + "2024-03-05T10:00:00.123Z,late-same-ms,0.000000001,0.000000001,0,USD,,,,,\r\n"
    + "2024-03-05T10:00:01.000Z,formula-eq,0.5,1,-0.5,USD,'=SUM(A1:A9),,,,\r\n"
    + "2024-03-05T10:00:02.000Z,formula-plus,0.25,2,-0.5,USD,'+15551234567,,,,\r\n"
    + "2024-03-05T10:00:03.000Z,formula-minus,0.1,3,-0.3,USD,'-2+3,,,,\r\n"
    + "2024-03-05T10:00:04.000Z,formula-at,0.01,4,-0.04,USD,'@SUM(A1),'=req-formula,0,10,0\r\n"
    + "2024-03-05T10:00:05.000Z,formula-tab,0.000000001,1,-0.000000001,USD,'\tindented,,,,\r\n"
    + "2024-03-05T10:00:06.000Z,unicode,1.5,1,-1.5,USD,Café ☕ — 東京,,,,\r\n"
    + "2024-03-05T10:00:07.000Z,precise,9.87654321,0.123456789,-1.219326311,USD,,,,,\r\n"
    + '2024-03-05T10:00:08.000Z,credit,1,25,25,USD,"top-up, thanks",,,,\r\n'
    + "2024-03-05T10:00:09.000Z,legacy-vcu,0.5,2,-1,VCU,legacy,,,,\r\n"
    + "2024-03-05T10:00:10.000Z,bundled,0.1,3,-0.3,BUNDLED_CREDITS,,,,,\r\n"
).encode()


@pytest.fixture
def fixed(client, alice) -> dict:
    record_all(client, alice, FIXED_ROWS)
    return alice


def test_json_body_is_exactly_as_specified(client, fixed):
    r = get(client, fixed, sortOrder="asc")
    assert r.headers["content-type"] == "application/json"
    assert r.content == EXPECTED_JSON


def test_csv_body_is_exactly_as_specified(client, fixed):
    r = client.get(USAGE, params={"sortOrder": "asc"}, headers={**fixed, "Accept": "text/csv"})
    assert r.headers["content-type"] == "text/csv; charset=utf-8"
    assert not r.content.startswith(b"\xef\xbb\xbf")  # no BOM
    assert r.content == EXPECTED_CSV


def test_descending_is_the_exact_reverse(client, fixed):
    asc = exact_body(get(client, fixed, sortOrder="asc"))["data"]
    desc = exact_body(get(client, fixed, sortOrder="desc"))["data"]
    assert desc == asc[::-1]
    csv_rows = client.get(USAGE, headers={**fixed, "Accept": "text/csv"}).content
    assert csv_rows == CSV_HEADER.encode() + b"".join(_csv_records(EXPECTED_CSV)[::-1])


def _csv_records(csv_bytes: bytes) -> list[bytes]:
    """The data records of a CSV body, each with its CRLF (a quoted cell here holds a bare LF, never CRLF)."""
    lines = csv_bytes.split(b"\r\n")
    return [line + b"\r\n" for line in lines[1:-1]]


# --- money ----------------------------------------------------------------------------------------------------

# (units, pricePerUnitUsd, amount worked out by hand: -(units × price) rounded half-even at 9 decimals)
AMOUNTS = [
    ("0.123456789", "9.87654321", "-1.219326311"),  # 1.21932631112635269
    ("0.333333333", "3.000000002", "-1"),  # 0.999999999666666666 rounds up to a whole number
    ("1.5", "0.000000001", "-0.000000002"),  # exactly half: to even (2)
    ("2.5", "0.000000001", "-0.000000002"),  # exactly half: to even (2), not up to 3
    ("3.5", "0.000000001", "-0.000000004"),
    ("0.5", "0.000000001", "0"),  # exactly half of the smallest unit: to even (0)
    ("0.000000003", "0.5", "-0.000000002"),
    ("1234567.123456789", "1", "-1234567.123456789"),  # more digits than a double holds
    ("0.1", "0.2", "-0.02"),  # 0.020000000000000004 in floats
    ("3", "0.1", "-0.3"),  # 0.30000000000000004 in floats
]


def assert_plain_numbers(text: str) -> None:
    """Every JSON number in the text is plain decimal: no exponent, no trailing zeros, no float noise."""
    numbers = re.findall(r'(?<=[:\[,])(-?[0-9][0-9.eE+-]*)(?=[,}\]])', text)
    assert numbers
    for n in numbers:
        assert re.fullmatch(r"-?(0|[1-9][0-9]*)(\.[0-9]{0,8}[1-9])?", n), n


def test_amounts_are_exact_and_rounded_half_even(client, alice):
    record_all(client, alice, [priced(f"2024-01-01T00:00:{i:02d}Z", str(i), units=u, price=p)
                        for i, (u, p, _) in enumerate(AMOUNTS)])
    r = get(client, alice, sortOrder="asc")
    assert_plain_numbers(r.text)
    rows = exact_body(r)["data"]
    for (units, price, amount), row in zip(AMOUNTS, rows, strict=True):
        # The hand-written amount agrees with exact decimal arithmetic:
        assert Decimal(amount) == -(Decimal(units) * Decimal(price)).quantize(Decimal("1e-9"), ROUND_HALF_EVEN)
        assert (row["units"], row["pricePerUnitUsd"], row["amount"]) == (Decimal(units), Decimal(price),
                                                                        Decimal(amount))
    assert '"amount":-1234567.123456789,' in r.text
    assert '"amount":-0.02,' in r.text and '"amount":-0.3,' in r.text and '"amount":0,' in r.text


@pytest.mark.parametrize("field, value", [("units", "0.0000000001"), ("pricePerUnitUsd", "1.0000000001"),
                                          ("amount", "-0.1234567891")])
def test_a_tenth_decimal_is_an_error_for_that_record_only(client, alice, field, value):
    bad = priced("2024-01-01T00:00:00Z", "bad", userId=alice.id)
    bad[field] = Decimal(value)
    good = priced("2024-01-01T00:00:01Z", "good", userId=alice.id)
    answer = post_records(client, [bad, good])
    assert answer["recorded"] == 1 and answer["errors"] == 1
    assert answer["results"][0]["status"] == "error"
    assert field in answer["results"][0]["error"]
    assert answer["results"][1] == {"index": 1, "status": "recorded"}
    assert notes_of(client, alice) == ["good"]
