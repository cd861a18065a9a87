"""The platform's side over HTTP: /ledger/records, credits, users, and the operations routes."""

import json

import pytest

from conftest import OPERATOR_TOKEN, bearer

RECORDS = "/api/v1/ledger/records"


def post(client, body: bytes | str, content_type="application/json", token=OPERATOR_TOKEN):
    return client.post(RECORDS, content=body, headers={**bearer(token), "Content-Type": content_type})


def test_ndjson_batch_with_a_malformed_line(client, api):
    api.user("u1")
    lines = [json.dumps({"userId": "u1", "sku": "s", "units": 1, "pricePerUnitUsd": 0.5, "idempotencyKey": "a"}),
             "{not json",
             json.dumps({"userId": "u1", "sku": "s", "units": 2, "pricePerUnitUsd": 0.5, "idempotencyKey": "b"})]
    r = post(client, "\n".join(lines) + "\n", "application/x-ndjson")
    assert r.status_code == 200
    body = r.json()
    assert [x["status"] for x in body["results"]] == ["recorded", "error", "recorded"]
    assert body["results"][1]["index"] == 1 and "line 2" in body["results"][1]["error"]
    assert (body["recorded"], body["duplicates"], body["errors"]) == (2, 0, 1)


@pytest.mark.parametrize("body, field", [
    ("not json", "_errors"), ('{"records": []}', "records"), ('{"records": {}}', "records"), ("[]", "records"),
    (json.dumps({"records": [{}] * 1001}), "records"),
])
def test_bodies_that_are_not_a_batch_are_400(client, body, field):
    r = post(client, body)
    assert r.status_code == 400
    details = r.json()["details"]
    assert r.json()["error"] == "Invalid request parameters"
    assert details[field] if field == "_errors" else details[field]["_errors"]


def test_more_than_1000_ndjson_lines_is_400(client):
    r = post(client, "{}\n" * 1001, "application/x-ndjson")
    assert r.status_code == 400 and "records" in r.json()["details"]


def test_bodies_over_8_mib_get_413(client):
    r = post(client, b"{" + b" " * (8 * 1024 * 1024) + b"}")
    assert r.status_code == 413
    assert r.json()["error"].startswith("Request body too large")


def test_exactly_1000_records_are_accepted(client, api):
    api.user("u1")
    records = [{"userId": "u1", "sku": "s", "units": 1, "pricePerUnitUsd": "0.001", "idempotencyKey": str(i)}
               for i in range(1000)]
    # pricePerUnitUsd as a string is not a number: every record is an error, but the batch is read.
    r = post(client, json.dumps({"records": records}))
    assert r.status_code == 200 and r.json()["errors"] == 1000
    for rec in records:
        rec["pricePerUnitUsd"] = 0.001
    assert post(client, json.dumps({"records": records})).json()["recorded"] == 1000


def test_prices_arrive_exactly_as_written(client, api):
    """A float parser would turn 0.1 + 0.2 style values into noise; the body is read as decimals."""
    user = api.user("u1")
    key = api.key(user)["apiKey"]
    body = '{"records": [{"userId": "u1", "sku": "s", "units": 0.3, "pricePerUnitUsd": 0.1, "idempotencyKey": "a"}]}'
    assert post(client, body).json()["recorded"] == 1
    row = client.get("/api/v1/billing/usage", headers=bearer(key)).text
    assert '"units":0.3' in row and '"amount":-0.03,' in row and '"pricePerUnitUsd":0.1,' in row


def test_credits(client, api):
    api.user("u1")
    assert api.credit("u1", "DIEM", "2.5", "top-up-1") == {"status": "recorded"}
    assert api.credit("u1", "DIEM", "2.5", "top-up-1") == {"status": "duplicate"}
    r = client.get("/api/v1/ledger/users/u1/balance", headers=api.op)
    assert r.json() == {"canConsume": True, "consumptionCurrency": "DIEM",
                        "balances": {"diem": 2.5, "usd": 0, "bundledCredits": 0}, "diemEpochAllocation": 0}


@pytest.mark.parametrize("body, field", [
    ({"userId": "u1", "currency": "DIEM", "amount": 0, "idempotencyKey": "k"}, "amount"),
    ({"userId": "u1", "currency": "DIEM", "amount": -1, "idempotencyKey": "k"}, "amount"),
    ({"userId": "u1", "currency": "VCU", "amount": 1, "idempotencyKey": "k"}, "currency"),
    ({"userId": "u1", "currency": "DIEM", "amount": 1}, "idempotencyKey"),
    ({"userId": "nobody", "currency": "DIEM", "amount": 1, "idempotencyKey": "k"}, "userId"),
    ({"userId": "u1", "currency": "DIEM", "amount": 0.0000000001, "idempotencyKey": "k"}, "amount"),
    ({"userId": "u1", "currency": "DIEM", "amount": 10**10, "idempotencyKey": "k"}, "amount"),
    ({"userId": "u1", "currency": "DIEM", "amount": 1, "idempotencyKey": "k", "notes": "a\u0000b"}, "notes"),
    ({"userId": "u1", "currency": "DIEM", "amount": 1, "idempotencyKey": "k\u0000"}, "idempotencyKey"),
    ({"userId": "u1\u0000", "currency": "DIEM", "amount": 1, "idempotencyKey": "k"}, "userId"),
])
def test_bad_credits_are_400_naming_the_field(client, api, body, field):
    api.user("u1")
    r = client.post("/api/v1/ledger/credits", json=body, headers=api.op)
    assert r.status_code == 400, r.text
    assert list(r.json()["details"]) == ["_errors", field]
    assert r.json()["details"][field]["_errors"]


def test_a_reused_credit_key_is_400_naming_it(client, api):
    api.user("u1")
    assert api.credit("u1", "DIEM", "1", "k") == {"status": "recorded"}
    r = client.post("/api/v1/ledger/credits", json={"userId": "u1", "currency": "DIEM", "amount": 2,
                                                   "idempotencyKey": "k"}, headers=api.op)
    assert r.status_code == 400
    assert r.json()["details"]["idempotencyKey"]["_errors"] == ["idempotency key reused with different content"]


def test_users(client, api):
    r = client.post("/api/v1/ledger/users", json={"userId": "alice", "name": "Alice"}, headers=api.op)
    assert r.status_code == 201 and r.json()["id"] == "alice" and r.json()["name"] == "Alice"
    assert client.post("/api/v1/ledger/users", json={"userId": "alice"}, headers=api.op).status_code == 409
    generated = client.post("/api/v1/ledger/users", json={}, headers=api.op).json()["id"]
    assert len(generated) == 36
    page = client.get("/api/v1/ledger/users?limit=1&page=2", headers=api.op).json()
    assert page["pagination"] == {"page": 2, "limit": 1, "total": 2, "totalPages": 2}
    assert page["data"][0]["id"] == generated
    assert client.get("/api/v1/ledger/users/alice", headers=api.op).json()["name"] == "Alice"
    assert client.get("/api/v1/ledger/users/bob", headers=api.op).status_code == 404


def test_ledger_routes_need_the_operator_token(client, api):
    api.user("u1")
    key = api.key("u1")["apiKey"]
    for token in (None, key, "x" * 40):
        headers = bearer(token) if token else {}
        assert client.get("/api/v1/ledger/users", headers=headers).status_code == 401
        r = client.post(RECORDS, json={"records": [{}]}, headers=headers)
        assert r.status_code == 401 and r.json() == {"error": "Authentication failed"}


def test_ops_routes_and_request_ids(client, api):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ok"}
    r = client.get("/nope", headers={"x-request-id": "trace-123"})
    assert r.status_code == 404 and r.json() == {"error": "Not found"}
    assert r.headers["x-request-id"] == "trace-123"
    assert client.get("/healthz", headers={"x-request-id": "bad id\n"}).headers["x-request-id"] != "bad id\n"
    api.user("u1")
    api.record({"userId": "u1", "sku": "s", "units": 1, "pricePerUnitUsd": 1, "idempotencyKey": "m1"})
    metrics = client.get("/metrics").text
    assert 'usage_ledger_requests_total{method="POST",route="/api/v1/ledger/records",status="200"}' in metrics
    assert "usage_ledger_request_seconds_bucket" in metrics
    assert "usage_ledger_records_recorded_total" in metrics


def test_unexpected_errors_are_a_bare_500_with_a_request_id(client, services, monkeypatch):
    def broken(*_a, **_k):
        raise RuntimeError("SELECT secret FROM somewhere")

    monkeypatch.setattr(services.store, "check", broken)
    assert client.get("/readyz").status_code == 503
    monkeypatch.setattr(services.store, "list_users", broken)
    r = client.get("/api/v1/ledger/users", headers=bearer(OPERATOR_TOKEN))
    assert r.status_code == 500
    assert r.json() == {"error": "Internal server error"}
    assert "SELECT" not in r.text and r.headers["x-request-id"]
