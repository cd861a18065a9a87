"""Ingest rules (API.md §2) driven through the ledger and a real SQLite store, no HTTP."""

from decimal import Decimal

import pytest

from usage_ledger.ledger import record
from usage_ledger.money import CURRENCY_CODES
from usage_ledger.store.base import UsageFilter
from usage_ledger.timeutil import now_ms, parse_instant


@pytest.fixture
def uid(store):
    return store.create_user("u1", "", now_ms()).uid


def ingest(store, catalog, *records, now=None):
    return [(o.status, o.error) for o in record(store, list(records), catalog, now=now)]


def rows(store, uid):
    return store.usage_after(UsageFilter(uid), None, 10_000, store.max_row_id())


def credit(amount, currency, key):
    return {"userId": "u1", "sku": "credit", "units": Decimal(amount), "pricePerUnitUsd": 1,
            "amount": Decimal(amount), "currency": currency, "idempotencyKey": key}


def event(request_id, **fields):
    return {"userId": "u1", "requestId": request_id, "model": "zai-org-glm-5-1", **fields}


def test_the_spec_example_expands_into_three_exact_rows(store, catalog, uid):
    assert ingest(store, catalog, event("r1", promptTokens=339, cachedPromptTokens=100, completionTokens=227)) == [
        ("recorded", None)]
    got = {r.sku: (r.units, r.price, r.amount) for r in rows(store, uid)}
    # GLM 5.1 costs 1.54 / 0.286 / 4.84 USD per million input / cached / output tokens (data of 2026-08-22):
    # 239 × 1.54e-6 = 0.00036806, 100 × 0.286e-6 = 0.0000286, 227 × 4.84e-6 = 0.00109868.
    assert got == {
        "zai-org-glm-5-1-llm-input-mtoken": (239_000, 1_540_000_000, -368_060),
        "zai-org-glm-5-1-llm-input-cached-mtoken": (100_000, 286_000_000, -28_600),
        "zai-org-glm-5-1-llm-output-mtoken": (227_000, 4_840_000_000, -1_098_680),
    }
    assert {r.request_id for r in rows(store, uid)} == {"r1"}


def test_spend_order_diem_then_bundled_then_usd(store, catalog, uid):
    ingest(store, catalog, credit("0.001", "DIEM", "c1"), credit("0.5", "BUNDLED_CREDITS", "c2"))
    image = {"userId": "u1", "sku": "x-image-unit", "units": 1, "pricePerUnitUsd": Decimal("0.0006")}
    ingest(store, catalog, {**image, "idempotencyKey": "a"})  # DIEM covers 0.0006
    ingest(store, catalog, {**image, "idempotencyKey": "b"})  # DIEM has 0.0004 left: bundled credits
    ingest(store, catalog, {**image, "units": 1000, "idempotencyKey": "c"})  # 0.6: nothing covers it, USD
    charged = [r.currency for r in rows(store, uid) if r.sku != "credit"]
    assert charged == [CURRENCY_CODES[c] for c in ("DIEM", "BUNDLED_CREDITS", "USD")]
    balances = store.balances(uid)
    assert balances[CURRENCY_CODES["USD"]] == -600_000_000  # usage is never dropped: USD goes negative
    assert balances[CURRENCY_CODES["DIEM"]] == 400_000


def test_rows_of_one_event_share_one_currency_chosen_on_the_total(store, catalog, uid):
    input_price = catalog.sku("zai-org-glm-5-1-llm-input-mtoken").price_usd
    # Enough DIEM for the input row alone, not for input + output: the whole event goes to USD.
    ingest(store, catalog, credit(str(input_price / 1000), "DIEM", "c1"))
    ingest(store, catalog, event("r1", promptTokens=1000, completionTokens=1000))
    assert {r.currency for r in rows(store, uid) if r.sku != "credit"} == {CURRENCY_CODES["USD"]}


def test_replays_are_duplicates_and_change_nothing(store, catalog, uid):
    batch = [event("r1", promptTokens=10, completionTokens=5), credit("3", "USD", "c1")]
    assert ingest(store, catalog, *batch) == [("recorded", None)] * 2
    before = (rows(store, uid), store.balances(uid))
    assert ingest(store, catalog, *batch) == [("duplicate", None)] * 2
    assert (rows(store, uid), store.balances(uid)) == before


def test_a_key_reused_with_other_content_is_an_error(store, catalog, uid):
    ingest(store, catalog, event("r1", promptTokens=10))
    assert ingest(store, catalog, event("r1", promptTokens=11)) == [
        ("error", "idempotency key reused with different content")]


def test_duplicates_inside_one_batch(store, catalog, uid):
    result = ingest(store, catalog, event("r1", promptTokens=10), event("r1", promptTokens=10),
                    event("r1", promptTokens=12))
    assert [s for s, _ in result] == ["recorded", "duplicate", "error"]
    assert len(rows(store, uid)) == 1


def test_a_failed_write_leaves_no_claimed_key(store, catalog, uid, monkeypatch):
    from usage_ledger.store import sql

    def explode(self, rows, claims):
        raise RuntimeError("disk full")

    with monkeypatch.context() as m:
        m.setattr(sql.SqlWriteTx, "append", explode)
        with pytest.raises(RuntimeError):
            ingest(store, catalog, event("r1", promptTokens=10))
    assert ingest(store, catalog, event("r1", promptTokens=10)) == [("recorded", None)]


def test_bad_records_never_fail_their_neighbours(store, catalog, uid):
    other = store.create_user("u2", "", now_ms())
    result = ingest(store, catalog,
                    event("ok", promptTokens=10),
                    {**event("x1", promptTokens=10), "userId": "nobody"},
                    {**event("x2", promptTokens=5, cachedPromptTokens=6)},
                    {**event("x3", promptTokens=5), "timestamp": "2999-01-01T00:00:00Z"},
                    {**event("x4", promptTokens=5), "sku": "both"},
                    {"userId": "u1", "sku": "s", "units": 1, "pricePerUnitUsd": 1},
                    {"userId": "u1", "sku": "s", "units": Decimal("0.0000000001"), "pricePerUnitUsd": 1,
                     "idempotencyKey": "tiny"},
                    {**event("x5", promptTokens=5), "promtTokens": 3},
                    {"userId": "u1", "model": "no-such-model", "requestId": "x6", "promptTokens": 1},
                    "not an object")
    statuses = [s for s, _ in result]
    assert statuses == ["recorded"] + ["error"] * 9
    errors = [e for _, e in result[1:]]
    assert "unknown userId" in errors[0]
    assert "negative" in errors[1] or "cached" in errors[1]
    assert "future" in errors[2]
    assert "exactly one of model" in errors[3]
    assert "idempotencyKey" in errors[4]
    assert "9 decimal places" in errors[5]
    assert "promtTokens" in errors[6]
    assert "no-such-model" in errors[7]
    assert len(rows(store, uid)) == 1
    assert store.balances(other.uid) == {}


def test_backfills_land_in_time_order(store, catalog, uid):
    now = now_ms()
    ingest(store, catalog, event("late", promptTokens=10))
    ingest(store, catalog, event("early", promptTokens=10, timestamp="2026-01-02T03:04:05.678Z"))
    got = rows(store, uid)
    assert [r.request_id for r in got] == ["early", "late"]
    assert got[0].ts == parse_instant("2026-01-02T03:04:05.678Z")
    assert got[1].ts >= now


def test_imports_keep_their_amount_and_currency(store, catalog, uid):
    legacy = {"userId": "u1", "sku": "old-llm-output-mtoken", "units": Decimal("0.5"), "pricePerUnitUsd": 2,
              "amount": Decimal("-0.75"), "currency": "VCU", "requestId": "v1", "promptTokens": 3}
    assert ingest(store, catalog, legacy) == [("recorded", None)]
    (row,) = rows(store, uid)
    assert (row.amount, row.currency, row.prompt_tokens) == (-750_000_000, CURRENCY_CODES["VCU"], 3)
    assert store.balances(uid) == {CURRENCY_CODES["VCU"]: -750_000_000}


def test_extended_prices_above_the_context_threshold(store, catalog, uid):
    threshold_model = "gemini-3-1-pro-preview"
    ingest(store, catalog, {"userId": "u1", "requestId": "big", "model": threshold_model, "promptTokens": 200_001,
                            "completionTokens": 10})
    assert {r.sku for r in rows(store, uid)} == {f"{threshold_model}-llm-extended-input-mtoken",
                                                 f"{threshold_model}-llm-extended-output-mtoken"}


def test_rollups_and_balances_match_the_rows(store, catalog, uid):
    ingest(store, catalog, credit("1", "DIEM", "c"), *[event(f"r{i}", promptTokens=100 * i, completionTokens=i,
                                                             timestamp=now_ms() - i * 3_600_000 * 7)
                                                       for i in range(1, 30)])
    all_rows = rows(store, uid)
    assert store.count(UsageFilter(uid)) == len(all_rows)
    for code in CURRENCY_CODES.values():
        assert store.count(UsageFilter(uid, currency=code)) == sum(1 for r in all_rows if r.currency == code)
    sums = {}
    for r in all_rows:
        sums[r.currency] = sums.get(r.currency, 0) + r.amount
    assert store.balances(uid) == sums


def test_values_no_column_can_hold_are_errors_not_crashes(store, catalog, uid):
    huge = {"userId": "u1", "sku": "s", "units": 10**30, "pricePerUnitUsd": 1, "idempotencyKey": "h"}
    nested: dict = {}
    for _ in range(300):
        nested = {"n": nested}
    deep = {"userId": "u1", "sku": "s", "units": 1, "pricePerUnitUsd": 1, "idempotencyKey": "d", "notes": nested}
    assert [s for s, _ in ingest(store, catalog, huge, deep)] == ["error", "error"]


def test_rows_of_one_millisecond_keep_the_batch_order(store, catalog, uid):
    # Pages break ties on the row id: the ids must follow the order the platform sent the records in.
    ts = now_ms() - 60_000
    names = [f"r{n:03d}" for n in range(300)]
    import random
    random.Random(7).shuffle(names)
    outcomes = ingest(store, catalog, *({"userId": "u1", "sku": "s", "units": 1, "pricePerUnitUsd": 1,
                                         "requestId": name, "timestamp": ts} for name in names))
    assert {status for status, _ in outcomes} == {"recorded"}
    assert [row.request_id for row in rows(store, uid)] == names
