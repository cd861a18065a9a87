"""Every JSON answer validates against Venice's own response schemas (tests/data/venice-billing-openapi.yaml), and
/openapi.json describes our routes and parameters truthfully (API.md §3, §4, §6, §7, §9)."""

from __future__ import annotations

import copy
import itertools
import json
from decimal import Decimal
from pathlib import Path

import jsonschema
import pytest
import yaml

from conftest import OPERATOR_TOKEN, Tenant, app_client, new_tenant, post_records

SPEC = yaml.safe_load((Path(__file__).parent / "data" / "venice-billing-openapi.yaml").read_text(encoding="utf-8"))
_keys = itertools.count(1)


# --- OpenAPI 3.0 schema → JSON Schema -------------------------------------------------------------------------

def to_json_schema(node, components: dict | None = None):
    """OpenAPI 3.0 → JSON Schema: `$ref`s resolved, `nullable: true` turned into a union with null (a branch that
    is only `nullable`, as in `anyOf: [..., {nullable: true, title: 'null'}]`, becomes `{"type": "null"}`), and the
    boolean `exclusiveMinimum` into its numeric form. additionalProperties: false is kept as it is."""
    components = SPEC["components"]["schemas"] if components is None else components
    if isinstance(node, list):
        return [to_json_schema(item, components) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        name = node["$ref"].removeprefix("#/components/schemas/")
        return to_json_schema(components[name], components)
    out = {key: to_json_schema(value, components) for key, value in node.items()
           if key not in ("nullable", "example", "deprecated")}
    if node.get("properties") is not None:  # property names are not schemas: convert their values only
        out["properties"] = {name: to_json_schema(value, components) for name, value in node["properties"].items()}
    if node.get("exclusiveMinimum") is True:
        out["exclusiveMinimum"] = out.pop("minimum")
    if node.get("nullable") is True:
        if "type" in out:
            out["type"] = [out["type"], "null"]
            if "enum" in out:
                out["enum"] = [*out["enum"], None]
        elif not ({"anyOf", "oneOf", "allOf", "enum"} & set(out)):
            out["type"] = "null"
        else:
            out = {"anyOf": [out, {"type": "null"}]}
    return out


def response_schema(path: str, method: str = "get", status: str = "200") -> dict:
    content = SPEC["paths"][path][method]["responses"][status]["content"]["application/json"]["schema"]
    schema = to_json_schema(content)
    jsonschema.Draft202012Validator.check_schema(schema)
    return schema


def validate(response, schema: dict) -> None:
    assert response.headers["content-type"] == "application/json"
    instance = json.loads(response.content)
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(instance), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


USAGE_SCHEMA = response_schema("/billing/usage")
HISTORY_SCHEMA = response_schema("/billing/usage-history")
# The one allowed difference (API.md §4): /usage-history accepts and shows legacy VCU rows, so that no row is hidden;
# Venice's enum for that endpoint lists only the consumable currencies.
HISTORY_SCHEMA["properties"]["data"]["items"]["properties"]["currency"]["enum"].append("VCU")
BALANCE_SCHEMA = response_schema("/billing/balance")
KEY_LIST_SCHEMA = response_schema("/api_keys")
KEY_CREATED_SCHEMA = response_schema("/api_keys", "post")
KEY_UPDATED_SCHEMA = response_schema("/api_keys", "patch")
KEY_DELETED_SCHEMA = response_schema("/api_keys", "delete")
DETAILED_ERROR = to_json_schema(SPEC["components"]["schemas"]["DetailedError"])
STANDARD_ERROR = to_json_schema(SPEC["components"]["schemas"]["StandardError"])


def test_the_conversion_handles_nullable_the_way_openapi_means_it():
    schema = to_json_schema({"type": "object", "nullable": True, "properties": {
        "a": {"type": "string", "nullable": True, "enum": ["X"]},
        "b": {"anyOf": [{"type": "number"}, {"nullable": True, "title": "null"}]}},
        "additionalProperties": False})
    v = jsonschema.Draft202012Validator(schema)
    assert v.is_valid(None) and v.is_valid({"a": None, "b": None}) and v.is_valid({"a": "X", "b": 1})
    assert not v.is_valid({"a": "Y"}) and not v.is_valid({"b": "1"}) and not v.is_valid({"c": 1})
    # Venice's row schema really is strict where it says so:
    history = jsonschema.Draft202012Validator(HISTORY_SCHEMA)
    assert not history.is_valid({"data": [], "nextCursor": None, "extra": 1})
    assert not history.is_valid({"data": [], "nextCursor": ""})
    assert not jsonschema.Draft202012Validator(USAGE_SCHEMA).is_valid({"data": [], "pagination": {"page": 1}})


# --- data -----------------------------------------------------------------------------------------------------

def priced(user: str, ts: str, currency: str, amount: str, **extra) -> dict:
    return {"userId": user, "sku": "test-sku", "units": Decimal("0.000227"), "pricePerUnitUsd": Decimal("2.8"),
            "amount": Decimal(amount), "currency": currency, "timestamp": ts, "idempotencyKey": f"s{next(_keys)}",
            **extra}


@pytest.fixture
def client(module_client):
    """One app for the module (see conftest): every test works as users of its own."""
    return module_client


@pytest.fixture
def alice(client, api) -> Tenant:
    """alice, an ADMIN key, and rows of every shape: each currency, with full, partial and no inferenceDetails."""
    alice = new_tenant(api, "alice")
    post_records(client, [
        priced(alice.id, "2024-01-01T00:00:00Z", "USD", "-0.0006356", requestId="chatcmpl-1",
               inferenceExecutionTime=2964, promptTokens=339, completionTokens=227, notes="API Inference"),
        priced(alice.id, "2024-01-01T00:00:01Z", "DIEM", "-0.0006356", requestId="req-2"),
        priced(alice.id, "2024-01-01T00:00:02Z", "BUNDLED_CREDITS", "-1"),
        priced(alice.id, "2024-01-01T00:00:03Z", "VCU", "-0.5", requestId="req-4", promptTokens=0),
        priced(alice.id, "2024-01-01T00:00:04Z", "USD", "25", notes="credit"),
    ])
    return alice


@pytest.fixture
def empty(api) -> Tenant:
    return new_tenant(api, "nobody")


# --- /billing/usage and /billing/usage-history ----------------------------------------------------------------

@pytest.mark.parametrize("params", [{}, {"sortOrder": "asc"}, {"currency": "USD"}, {"currency": "VCU"},
                                    {"currency": "DIEM"}, {"currency": "BUNDLED_CREDITS"}, {"limit": 1, "page": 2},
                                    {"page": 99}, {"startDate": "2030-01-01"}])
def test_billing_usage_matches_venices_schema(client, alice, params):
    r = client.get("/api/v1/billing/usage", params=params, headers=alice)
    assert r.status_code == 200
    validate(r, USAGE_SCHEMA)


def test_billing_usage_rows_cover_every_shape(client, alice):
    data = client.get("/api/v1/billing/usage", headers=alice).json()["data"]
    assert {row["currency"] for row in data} == {"USD", "DIEM", "BUNDLED_CREDITS", "VCU"}
    details = [row["inferenceDetails"] for row in data]
    assert None in details
    assert {"requestId": "chatcmpl-1", "inferenceExecutionTime": 2964, "promptTokens": 339,
            "completionTokens": 227} in details
    assert {"requestId": "req-2", "inferenceExecutionTime": None, "promptTokens": None,
            "completionTokens": None} in details


def test_an_empty_billing_usage_matches_venices_schema(client, empty):
    validate(client.get("/api/v1/billing/usage", headers=empty), USAGE_SCHEMA)


@pytest.mark.parametrize("params", [{}, {"pageSize": 10}, {"currency": "VCU"}, {"currency": "DIEM"},
                                    {"startTimestamp": "2030-01-01"}])
def test_usage_history_matches_venices_schema(client, alice, params):
    validate(client.get("/api/v1/billing/usage-history", params=params, headers=alice), HISTORY_SCHEMA)


def test_usage_history_pages_with_and_without_a_cursor_match(client, api):
    h = new_tenant(api, "many")
    post_records(client, [priced(h.id, f"2024-01-01T00:00:{i:02d}Z", "USD", "-1") for i in range(15)])
    first = client.get("/api/v1/billing/usage-history", params={"pageSize": 10}, headers=h)
    validate(first, HISTORY_SCHEMA)
    assert first.json()["nextCursor"]
    last = client.get("/api/v1/billing/usage-history", params={"cursor": first.json()["nextCursor"]}, headers=h)
    validate(last, HISTORY_SCHEMA)
    assert last.json()["nextCursor"] is None


def test_an_empty_usage_history_matches_venices_schema(client, empty):
    validate(client.get("/api/v1/billing/usage-history", headers=empty), HISTORY_SCHEMA)


# --- /billing/balance and /api_keys ---------------------------------------------------------------------------

def test_balance_matches_venices_schema(client, api, alice, empty):
    validate(client.get("/api/v1/billing/balance", headers=empty), BALANCE_SCHEMA)
    validate(client.get("/api/v1/billing/balance", headers=alice), BALANCE_SCHEMA)
    api.credit(alice.id, "DIEM", "5", "diem-credit")
    r = client.get("/api/v1/billing/balance", headers=alice)
    validate(r, BALANCE_SCHEMA)
    assert r.json()["consumptionCurrency"] == "DIEM"


def test_key_answers_match_venices_schemas(client, alice):
    created = client.post("/api/v1/api_keys", headers=alice, json={
        "apiKeyType": "INFERENCE", "description": "limited", "consumptionLimit": {"usd": 50, "diem": 10},
        "limitPeriod": "MONTH", "modelPrivacy": "PRIVATE_ONLY", "expiresAt": "2099-01-01"})
    assert created.status_code == 200
    validate(created, KEY_CREATED_SCHEMA)
    plain = client.post("/api/v1/api_keys", headers=alice, json={"apiKeyType": "ADMIN", "description": ""})
    validate(plain, KEY_CREATED_SCHEMA)
    key_id = created.json()["data"]["id"]
    post_records(client, [priced(alice.id, "2024-01-01T00:00:09Z", "USD", "-1", apiKeyId=key_id)])

    validate(client.get("/api/v1/api_keys", headers=alice), KEY_LIST_SCHEMA)
    validate(client.get("/api/v1/api_keys", params={"page": 1, "limit": 1}, headers=alice), KEY_LIST_SCHEMA)
    validate(client.get("/api/v1/api_keys", params={"page": 9, "limit": 1}, headers=alice), KEY_LIST_SCHEMA)
    for change in ({"description": "renamed"}, {"expiresAt": ""}, {"expiresAt": None},
                   {"consumptionLimit": {"usd": None, "diem": 0.5}}, {"limitPeriod": "LIFETIME", "modelPrivacy": "ALL"}):
        r = client.patch("/api/v1/api_keys", json={"id": key_id, **change}, headers=alice)
        assert r.status_code == 200, (change, r.text)
        validate(r, KEY_UPDATED_SCHEMA)
    r = client.delete("/api/v1/api_keys", params={"id": key_id}, headers=alice)
    validate(r, KEY_DELETED_SCHEMA)


# --- errors ---------------------------------------------------------------------------------------------------

def assert_detailed_error(r) -> None:
    assert r.status_code == 400
    validate(r, DETAILED_ERROR)
    details = r.json()["details"]  # the zod format() shape that DetailedError's example shows
    assert isinstance(details["_errors"], list)
    for name, value in details.items():
        if name != "_errors":
            assert list(value) == ["_errors"] and value["_errors"] and all(isinstance(x, str) for x in value["_errors"])


@pytest.mark.parametrize("method, path, kwargs", [
    ("GET", "/api/v1/billing/usage", {"params": {"limit": 0}}),
    ("GET", "/api/v1/billing/usage", {"params": {"startDate": "x", "currency": "EUR"}}),
    ("GET", "/api/v1/billing/usage-history", {"params": {"pageSize": 9}}),
    ("GET", "/api/v1/billing/usage-history", {"params": {"cursor": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}}),
    ("GET", "/api/v1/api_keys", {"params": {"limit": 0}}),
    ("POST", "/api/v1/api_keys", {"json": {"apiKeyType": "ROOT"}}),
    ("POST", "/api/v1/api_keys", {"content": b"{not json", "headers": {"Content-Type": "application/json"}}),
    ("PATCH", "/api/v1/api_keys", {"json": {"description": "no id"}}),
    ("DELETE", "/api/v1/api_keys", {}),
])
def test_400s_are_detailed_errors(client, alice, method, path, kwargs):
    headers = {**alice, **kwargs.pop("headers", {})}
    assert_detailed_error(client.request(method, path, headers=headers, **kwargs))


@pytest.mark.parametrize("path", ["/api/v1/billing/usage", "/api/v1/billing/usage-history", "/api/v1/billing/balance",
                                  "/api/v1/api_keys"])
def test_401s_are_standard_errors(client, path):
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": f"Bearer {OPERATOR_TOKEN}"}):
        r = client.get(path, headers=headers)
        assert r.status_code == 401
        validate(r, STANDARD_ERROR)


def test_404_and_429_are_standard_errors(client, alice, tmp_path):
    validate(client.get("/api/v1/billing/usage/", headers=alice), STANDARD_ERROR)
    validate(client.get("/api/v1/api_keys/00000000-0000-4000-8000-000000000000", headers=alice), STANDARD_ERROR)
    with app_client(tmp_path / "guarded", auth_failure_limit=2) as c:
        for _ in range(2):
            c.get("/api/v1/billing/balance")
        r = c.get("/api/v1/billing/balance")
        assert r.status_code == 429
        validate(r, STANDARD_ERROR)


# --- /openapi.json --------------------------------------------------------------------------------------------

@pytest.fixture
def openapi(client) -> dict:
    r = client.get("/openapi.json")
    assert r.status_code == 200
    return r.json()


ROUTES = {
    "/api/v1/billing/usage": {"get"},
    "/api/v1/billing/usage-history": {"get"},
    "/api/v1/billing/balance": {"get"},
    "/api/v1/billing/usage-analytics": {"get"},
    "/api/v1/api_keys": {"get", "post", "patch", "delete"},
    "/api/v1/api_keys/{key_id}": {"get"},
    "/api/v1/ledger/records": {"post"},
    "/api/v1/ledger/credits": {"post"},
    "/api/v1/ledger/users": {"get", "post"},
    "/api/v1/ledger/users/{userId}": {"get"},
    "/api/v1/ledger/users/{userId}/api_keys": {"post"},
    "/api/v1/ledger/users/{userId}/balance": {"get"},
    "/healthz": {"get"},
    "/readyz": {"get"},
    "/metrics": {"get"},
}


def test_openapi_lists_every_route_with_its_full_path(client, openapi):
    paths = openapi["paths"]
    for path, methods in ROUTES.items():
        assert path in paths, path
        assert methods <= set(paths[path]), (path, set(paths[path]))
    # Every route the app serves is described, under its full path.
    served = {route.path for route in client.app.routes if getattr(route, "include_in_schema", False)}
    assert served <= set(paths)
    assert all(p.startswith("/api/v1/") or p in ("/healthz", "/readyz", "/metrics") for p in paths), list(paths)
    for path, operations in paths.items():
        if path.startswith("/api/v1/"):
            for operation in operations.values():
                assert operation["security"] == [{"BearerAuth": []}], path


def _param(openapi: dict, path: str, name: str) -> dict:
    """A query parameter's schema with the `| null` branch of an optional one folded away."""
    found = [p for p in openapi["paths"][path]["get"]["parameters"] if p["name"] == name and p["in"] == "query"]
    assert len(found) == 1, (path, name)
    schema = copy.deepcopy(found[0]["schema"])
    branches = [b for b in schema.pop("anyOf", []) if b.get("type") != "null"]
    if branches:
        assert len(branches) == 1
        schema.update(branches[0])
    return schema


def test_openapi_describes_billing_usage_parameters_with_their_bounds(openapi):
    path = "/api/v1/billing/usage"
    names = {p["name"] for p in openapi["paths"][path]["get"]["parameters"] if p["in"] == "query"}
    assert names == {"currency", "startDate", "endDate", "limit", "page", "sortOrder"}
    assert set(_param(openapi, path, "currency")["enum"]) == {"USD", "VCU", "DIEM", "BUNDLED_CREDITS"}
    limit = _param(openapi, path, "limit")
    assert (limit["type"], limit["minimum"], limit["maximum"], limit["default"]) == ("integer", 1, 500, 200)
    page = _param(openapi, path, "page")
    assert (page["type"], page["minimum"], page["default"]) == ("integer", 1, 1)
    order = _param(openapi, path, "sortOrder")
    assert (set(order["enum"]), order["default"]) == ({"asc", "desc"}, "desc")
    for name in ("startDate", "endDate"):
        assert _param(openapi, path, name)["type"] == "string"
    headers = openapi["paths"][path]["get"]["responses"]["200"]["headers"]
    assert {"x-pagination-limit", "x-pagination-page", "x-pagination-total", "x-pagination-total-pages",
            "Content-Disposition"} <= set(headers)
    assert "text/csv" in openapi["paths"][path]["get"]["responses"]["200"]["content"]


def test_openapi_describes_usage_history_parameters_with_their_bounds(openapi):
    path = "/api/v1/billing/usage-history"
    names = {p["name"] for p in openapi["paths"][path]["get"]["parameters"] if p["in"] == "query"}
    assert names == {"currency", "startTimestamp", "endTimestamp", "pageSize", "cursor"}
    assert set(_param(openapi, path, "currency")["enum"]) == {"USD", "VCU", "DIEM", "BUNDLED_CREDITS"}
    size = _param(openapi, path, "pageSize")
    assert (size["type"], size["minimum"], size["maximum"]) == ("integer", 10, 1000)
    cursor = _param(openapi, path, "cursor")
    assert (cursor["type"], cursor["maxLength"], cursor["pattern"]) == ("string", 512, "^[A-Za-z0-9_-]+$")
    for name in ("startTimestamp", "endTimestamp"):
        assert (_param(openapi, path, name)["type"], _param(openapi, path, name)["maxLength"]) == ("string", 40)
    headers = openapi["paths"][path]["get"]["responses"]["200"]["headers"]
    assert {"x-next-cursor", "Content-Disposition"} <= set(headers)


def test_openapi_documents_the_error_answers(openapi):
    usage = openapi["paths"]["/api/v1/billing/usage"]["get"]["responses"]
    assert {"200", "400", "401", "429"} <= set(usage)
    keys = openapi["paths"]["/api/v1/api_keys"]
    assert {"200", "400", "401"} <= set(keys["delete"]["responses"])
    assert "404" in openapi["paths"]["/api/v1/api_keys/{key_id}"]["get"]["responses"]
