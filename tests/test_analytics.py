"""GET /api/v1/billing/usage-analytics (API.md §5) over HTTP, and its rollups against a rebuild."""

from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from conftest import Api, bearer, make_settings
from contextlib import contextmanager

from fastapi.testclient import TestClient

from usage_ledger.app import create_app
from usage_ledger.services import Services
from usage_ledger.store.sql import SqlStore
from usage_ledger.timeutil import parse_instant

URL = "/api/v1/billing/usage-analytics"
RANGE = "startDate=2026-10-01&endDate=2026-10-07"


@pytest.fixture
def user(api):
    api.user("u1")
    return api.key("u1", description="Production")


def priced(i, sku, amount, ts, currency="USD", key=None, units="1"):
    record = {"userId": "u1", "sku": sku, "units": Decimal(units), "pricePerUnitUsd": Decimal(1),
              "amount": Decimal(amount), "currency": currency, "timestamp": ts, "idempotencyKey": f"k{i}"}
    if key:
        record["apiKeyId"] = key
    return record


def get(client, key, query=RANGE):
    r = client.get(f"{URL}?{query}", headers=bearer(key["apiKey"]))
    assert r.status_code == 200, r.text
    return r.json()


def test_days_are_zero_filled_and_ascending_and_credits_vcu_are_not_spend(client, api, user):
    api.record(priced(1, "m-image-unit", "-0.5", "2026-10-02T10:00:00Z"),
               priced(2, "m-image-unit", "-0.25", "2026-10-02T23:59:59.999Z", "BUNDLED_CREDITS"),
               priced(3, "m-image-unit", "-2", "2026-10-05T00:00:00Z", "DIEM"),
               priced(4, "credit", "7", "2026-10-03T00:00:00Z", "USD"),
               priced(5, "m-image-unit", "-9", "2026-10-04T00:00:00Z", "VCU"),
               priced(6, "m-image-unit", "-1", "2026-10-08T00:00:00Z"))  # the day after the range
    body = get(client, user)
    assert body["lookback"] == "2026-10-01:2026-10-07"
    assert body["byDate"] == [
        {"date": "2026-10-01", "USD": 0, "DIEM": 0}, {"date": "2026-10-02", "USD": 0.75, "DIEM": 0},
        {"date": "2026-10-03", "USD": 0, "DIEM": 0}, {"date": "2026-10-04", "USD": 0, "DIEM": 0},
        {"date": "2026-10-05", "USD": 0, "DIEM": 2}, {"date": "2026-10-06", "USD": 0, "DIEM": 0},
        {"date": "2026-10-07", "USD": 0, "DIEM": 0}]
    assert body["byModel"] == [{"modelName": "m-image-unit", "unitType": "images", "modelType": None,
                                "totalUsd": 0.75, "totalDiem": 2, "totalUnits": 3}]
    assert set(body) == {"lookback", "byDate", "byModel", "byModelDaily", "topModels", "byKey", "byKeyDaily",
                         "topKeyNames"}


def test_models_keys_breakdowns_and_names(client, api, user):
    plain = api.key("u1")  # no description: "Key ...<last6>"
    twin_a, twin_b = api.key("u1", description="Batch"), api.key("u1", description="Batch")
    api.record(
        {"userId": "u1", "requestId": "r1", "model": "zai-org-glm-5-1", "promptTokens": 1_000_000,
         "cachedPromptTokens": 200_000, "completionTokens": 100_000, "timestamp": "2026-10-03T12:00:00Z",
         "apiKeyId": user["id"]},
        priced(2, "flux-2-max-image-unit", "-0.1", "2026-10-03T12:00:00Z", key=plain["id"]),
        priced(3, "flux-2-max-edit-inpaint-unit", "-0.2", "2026-10-03T12:00:00Z", "DIEM", key=twin_a["id"]),
        priced(4, "flux-2-max-edit-inpaint-unit", "-0.3", "2026-10-04T12:00:00Z", key=twin_b["id"]),
        priced(5, "flux-2-max-image-unit", "-0.05", "2026-10-04T13:00:00Z"))
    body = get(client, user)
    # GLM 5.1: 0.8M input × 1.54 + 0.2M cached × 0.286 + 0.1M output × 4.84 = 1.232 + 0.0572 + 0.484
    assert body["byModel"] == [
        {"modelName": "GLM 5.1", "unitType": "tokens", "modelType": "LLM", "totalUsd": 1.7732, "totalDiem": 0,
         "totalUnits": 1_100_000, "breakdown": [
             {"type": "Input", "usd": 1.232, "diem": 0, "units": 800_000},
             {"type": "Output", "usd": 0.484, "diem": 0, "units": 100_000},
             {"type": "Cache Read", "usd": 0.0572, "diem": 0, "units": 200_000}]},
        {"modelName": "Flux 2 Max (flux-2-max-edit)", "unitType": "images", "modelType": "IMAGE",
         "totalUsd": 0.3, "totalDiem": 0.2, "totalUnits": 2},
        {"modelName": "Flux 2 Max (flux-2-max)", "unitType": "images", "modelType": "IMAGE",
         "totalUsd": 0.15, "totalDiem": 0, "totalUnits": 2}]
    assert body["topModels"] == ["GLM 5.1", "Flux 2 Max (flux-2-max-edit)", "Flux 2 Max (flux-2-max)"]
    assert body["byKey"] == [
        {"apiKeyId": user["id"], "description": "Production", "totalUsd": 1.7732, "totalDiem": 0,
         "totalUnits": 1_100_000},
        {"apiKeyId": twin_b["id"], "description": f"Batch ...{twin_b['apiKey'][-6:]}", "totalUsd": 0.3,
         "totalDiem": 0, "totalUnits": 1},
        {"apiKeyId": twin_a["id"], "description": f"Batch ...{twin_a['apiKey'][-6:]}", "totalUsd": 0,
         "totalDiem": 0.2, "totalUnits": 1},
        {"apiKeyId": plain["id"], "description": f"Key ...{plain['apiKey'][-6:]}", "totalUsd": 0.1,
         "totalDiem": 0, "totalUnits": 1},
        {"apiKeyId": None, "description": "Web App", "totalUsd": 0.05, "totalDiem": 0, "totalUnits": 1}]
    day3 = next(d for d in body["byKeyDaily"] if d["date"] == 1790985600000)  # 2026-10-03T00:00Z
    assert day3 == {"date": 1790985600000, "Production": 1.7732, f"Batch ...{twin_b['apiKey'][-6:]}": 0,
                    f"Batch ...{twin_a['apiKey'][-6:]}": 0.2, f"Key ...{plain['apiKey'][-6:]}": 0.1, "Web App": 0}
    # A revoked key keeps its name in history.
    assert client.delete(f"/api/v1/api_keys?id={plain['id']}", headers=bearer(user["apiKey"])).status_code == 200
    client.app.state.services.analytics_cache.ttl = 0
    assert any(k["apiKeyId"] == plain["id"] for k in get(client, user)["byKey"])


def test_top_eight_and_other(client, api, user):
    api.record(*[priced(i, f"model{i}-image-unit", f"-{i}", "2026-10-02T00:00:00Z") for i in range(1, 11)])
    body = get(client, user)
    assert body["topModels"] == [f"model{i}-image-unit" for i in range(10, 2, -1)] + ["Other"]
    day = body["byModelDaily"][1]
    assert day["Other"] == 3 and day["model10-image-unit"] == 10 and len(day) == 10
    assert [k["description"] for k in body["byKey"]] == ["Web App"] and body["topKeyNames"] == ["Web App"]


def test_timezones_cut_days_at_local_midnight_or_the_whole_hour_before_it(client, api, user):
    api.record(priced(1, "m-image-unit", "-1", "2026-10-02T15:30:00Z"),   # Tokyo: 10-03 00:30
               priced(2, "m-image-unit", "-2", "2026-10-02T18:15:00Z"))   # Kolkata: 10-02 23:45, cut at 18:00Z
    tokyo = get(client, user, RANGE + "&timezone=Asia/Tokyo")["byDate"]
    assert [d["USD"] for d in tokyo[1:3]] == [0, 3]
    kolkata = get(client, user, RANGE + "&timezone=Asia/Kolkata")
    assert [d["USD"] for d in kolkata["byDate"][1:3]] == [1, 2]
    assert kolkata["byModelDaily"][0]["date"] == 1790793000000  # 2026-10-01T00:00+05:30, the true midnight


@pytest.mark.parametrize("query, field", [
    ("lookback=0d", "lookback"), ("lookback=7", "lookback"), ("lookback=d", "lookback"), ("lookback=-1d", "lookback"),
    ("startDate=2026-10-01", "endDate"), ("endDate=2026-10-01", "startDate"),
    ("startDate=2026-10-02&endDate=2026-10-01", "endDate"), ("startDate=2026-01-01&endDate=2026-04-01", "endDate"),
    ("startDate=2026-13-01&endDate=2026-10-01", "startDate"), ("startDate=26-10-01&endDate=2026-10-01", "startDate"),
    ("timezone=Mars/Olympus", "timezone"), ("timezone=../../etc/passwd", "timezone"),
    ("startDate=0001-01-01&endDate=0001-01-02", "startDate"), ("startDate=9999-12-30&endDate=9999-12-31", "endDate"),
])
def test_bad_parameters_are_400_naming_the_field(client, user, query, field):
    r = client.get(f"{URL}?{query}", headers=bearer(user["apiKey"]))
    assert r.status_code == 400, r.text
    assert r.json()["details"][field]["_errors"]


def test_lookback_default_clamp_and_exact_ninety_days(client, user):
    assert len(get(client, user, "")["byDate"]) == 7
    body = get(client, user, "lookback=365d")
    assert body["lookback"] == "90d" and len(body["byDate"]) == 90
    assert len(get(client, user, "startDate=2026-01-01&endDate=2026-03-31")["byDate"]) == 90


def test_answers_are_cached_for_ten_minutes_per_user_and_parameters(client, api, user, services, monkeypatch):
    calls = []
    original = services.store.analytics_buckets
    monkeypatch.setattr(services.store, "analytics_buckets", lambda *a, **k: calls.append(a) or original(*a, **k))
    first = client.get(f"{URL}?{RANGE}", headers=bearer(user["apiKey"]))
    assert first.headers["cache-control"] == "private, max-age=600"
    assert first.headers["vary"] == "Authorization"
    api.record(priced(1, "m-image-unit", "-1", "2026-10-02T00:00:00Z"))  # ingest never waits on the cache
    second = client.get(f"{URL}?{RANGE}", headers=bearer(user["apiKey"]))
    assert second.content == first.content and len(calls) == 1
    client.get(f"{URL}?{RANGE}&timezone=Europe/Paris", headers=bearer(user["apiKey"]))
    assert len(calls) == 2


# -- properties ---------------------------------------------------------------------------------------------------

_records = st.lists(st.tuples(
    st.integers(0, 3 * 86_400_000 - 1),                              # ms into 2026-10-01..03
    st.sampled_from(["USD", "DIEM", "BUNDLED_CREDITS", "VCU"]),
    st.integers(-5_000_000, 3_000_000),                                # nano; positive: a credit
    st.sampled_from(["a-image-unit", "zai-org-glm-5-1-llm-input-mtoken", "zai-org-glm-5-1-llm-output-mtoken",
                     "tts-kokoro-tts-mchar"]),
    st.sampled_from([None, 0, 1]),
), min_size=1, max_size=40)


@contextmanager
def fresh_service(directory, catalog):
    """A new database per hypothesis example (function-scoped fixtures would be shared between examples)."""
    settings_ = make_settings(directory)
    store = SqlStore(settings_.database_url)
    store.migrate()
    with TestClient(create_app(Services.build(settings_, store=store, catalog=catalog))) as client:
        api = Api(client)
        api.user("u1")
        yield client, api, store
    store.close()


def _ledger(api, keys, records):
    out = []
    for i, (offset, currency, amount, sku, key) in enumerate(records):
        ts = 1790812800000 + offset
        out.append({"userId": "u1", "sku": sku, "units": Decimal(i + 1) / 1000, "pricePerUnitUsd": Decimal(1),
                    "amount": Decimal(amount).scaleb(-9), "currency": currency, "timestamp": ts,
                    "idempotencyKey": f"p{i}", **({"apiKeyId": keys[key]["id"]} if key is not None else {})})
    return out


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records=_records, zone=st.sampled_from(["UTC", "Asia/Kolkata", "America/New_York"]))
def test_totals_reconcile_with_the_usage_rows(tmp_path_factory, catalog, records, zone):
    with fresh_service(tmp_path_factory.mktemp("recon"), catalog) as (client, api, _):
        keys = [api.key("u1", description="A"), api.key("u1", description="B")]
        api.record(*_ledger(api, keys, records))
        body = client.get(f"{URL}?startDate=2026-10-01&endDate=2026-10-03&timezone={zone}",
                          headers=bearer(keys[0]["apiKey"])).json()
        first = body["byModelDaily"][0]["date"]
        by_date = sum(Decimal(str(d["USD"])) + Decimal(str(d["DIEM"])) for d in body["byDate"])
        by_model = sum(Decimal(str(m["totalUsd"])) + Decimal(str(m["totalDiem"])) for m in body["byModel"])
        by_key = sum(Decimal(str(k["totalUsd"])) + Decimal(str(k["totalDiem"])) for k in body["byKey"])
        # The matching debit rows, read back through /billing/usage over the same [first cut, last cut).
        cut_lo = first - first % 3_600_000
        midnight_after = body["byModelDaily"][-1]["date"] + 86_400_000
        cut_hi = midnight_after - midnight_after % 3_600_000
        rows, page = [], 1
        while True:
            r = client.get("/api/v1/billing/usage", params={"limit": 500, "page": page},
                           headers=bearer(keys[0]["apiKey"])).json()
            rows += r["data"]
            if page >= r["pagination"]["totalPages"]:
                break
            page += 1
        expected = sum((-Decimal(str(row["amount"])) for row in rows
                        if row["amount"] < 0 and row["currency"] != "VCU"
                        and cut_lo <= parse_instant(row["timestamp"]) < cut_hi), Decimal(0))
        assert by_date == by_model == by_key == expected


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(_records, min_size=1, max_size=3))
def test_maintained_rollups_equal_a_rebuild(tmp_path_factory, catalog, batches):
    with fresh_service(tmp_path_factory.mktemp("rollups"), catalog) as (client, api, store):
        keys = [api.key("u1"), api.key("u1")]
        for batch in batches:
            records = _ledger(api, keys, batch)
            api.record(*records)
            api.record(*records[: len(records) // 2 + 1])  # replays: duplicates change nothing
        api.credit("u1", "DIEM", "5", "credit-1")
        maintained = store.rollup_contents()
        store.rebuild_rollups()
        assert store.rollup_contents() == maintained


def test_days_follow_daylight_saving_changes(client, api, user):
    # New York leaves daylight saving on 2026-11-01: that local day is 25 hours, 04:00Z to 05:00Z the next day.
    api.record(priced(1, "m-image-unit", "-1", "2026-11-01T03:30:00Z"),   # 10-31 23:30 EDT
               priced(2, "m-image-unit", "-2", "2026-11-02T04:30:00Z"),   # 11-01 23:30 EST
               priced(3, "m-image-unit", "-4", "2026-11-02T05:30:00Z"))   # 11-02 00:30 EST
    body = get(client, user, "startDate=2026-10-30&endDate=2026-11-03&timezone=America/New_York")
    assert [(d["date"], d["USD"]) for d in body["byDate"]] == [
        ("2026-10-30", 0), ("2026-10-31", 1), ("2026-11-01", 2), ("2026-11-02", 4), ("2026-11-03", 0)]
    assert [d["m-image-unit"] for d in body["byModelDaily"]] == [0, 1, 2, 4, 0]
