"""Abuse limits that the settings switch on and off (API.md §1, §7)."""

import pytest
from fastapi.testclient import TestClient

from conftest import Api, bearer, make_settings
from usage_ledger.app import create_app
from usage_ledger.services import Services
from usage_ledger.store.sql import SqlStore


@pytest.fixture
def limited(tmp_path, catalog):
    settings = make_settings(tmp_path, key_rate_limit_per_minute=5)
    store = SqlStore(settings.database_url)
    store.migrate()
    with TestClient(create_app(Services.build(settings, store=store, catalog=catalog))) as client:
        yield client
    store.close()


def test_a_user_key_past_its_rate_gets_429_with_retry_after(limited):
    api = Api(limited)
    api.user("u1")
    busy, calm = api.key("u1")["apiKey"], api.key("u1")["apiKey"]
    answers = [limited.get("/api/v1/billing/balance", headers=bearer(busy)) for _ in range(6)]
    assert [r.status_code for r in answers] == [200] * 5 + [429]
    refused = answers[-1]
    assert refused.json()["error"].startswith("Rate limit exceeded")
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.headers["x-ratelimit-limit-requests"] == "5"
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    # Limits are per key; the operator's ingest is not rate limited.
    assert limited.get("/api/v1/billing/balance", headers=bearer(calm)).status_code == 200
    for i in range(10):
        api.record({"userId": "u1", "sku": "s", "units": 1, "pricePerUnitUsd": 1, "idempotencyKey": str(i)})
