"""Who may call what (API.md §1, §6): credentials, roles, isolation between users, the failed-auth block, keys."""

from __future__ import annotations

import itertools
import json
import re
import time
from datetime import datetime, timezone
from decimal import Decimal

import pytest

import usage_ledger.keys as keys_module
from conftest import OPERATOR_TOKEN, Api, app_client, bearer, new_tenant, post_records
from usage_ledger.api import deps

FAILED = {"error": "Authentication failed"}
ADMIN_REQUIRED = {"error": "Admin API key required"}
_keys = itertools.count(1)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def iso(ms: int) -> str:
    dt = datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def priced(user: str, notes: str, *, ts: str = "2024-01-01T00:00:00Z", currency: str = "USD",
           amount: str = "-1", **extra) -> dict:
    return {"userId": user, "sku": "test-sku", "units": Decimal(1), "pricePerUnitUsd": Decimal(1),
            "amount": Decimal(amount), "currency": currency, "timestamp": ts, "notes": notes,
            "idempotencyKey": f"a{next(_keys)}", **extra}


# Every user-facing route, as (method, path, keyword arguments for the client).
USER_ROUTES = [
    ("GET", "/api/v1/billing/usage", {}),
    ("GET", "/api/v1/billing/usage-history", {}),
    ("GET", "/api/v1/billing/balance", {}),
    ("GET", "/api/v1/api_keys", {}),
    ("POST", "/api/v1/api_keys", {"json": {"apiKeyType": "ADMIN", "description": "made by an intruder"}}),
    ("PATCH", "/api/v1/api_keys", {"json": {"id": "{victim}", "description": "changed by an intruder"}}),
    ("DELETE", "/api/v1/api_keys?id={victim}", {}),
    ("GET", "/api/v1/api_keys/{victim}", {}),
]


@pytest.fixture
def client(module_client):
    """One app for the module (see conftest): every test works as users of its own."""
    return module_client


@pytest.fixture
def victim(api) -> dict:
    """A fresh user's ADMIN key (the key every route's {victim} placeholder points at), with its `userId`."""
    tenant = new_tenant(api, "victim", description="victim's key")
    return {**tenant.key, "userId": tenant.id}


def call(client, method: str, path: str, kwargs: dict, headers: dict | None, victim_id: str = "x"):
    kwargs = {k: ({**v, "id": victim_id} if isinstance(v, dict) and v.get("id") == "{victim}" else v)
              for k, v in kwargs.items()}
    return client.request(method, path.replace("{victim}", victim_id), headers=headers or {}, **kwargs)


def assert_victim_untouched(client, victim: dict) -> None:
    """The victim's key still works, is still described as it was, and no key was added."""
    r = client.get("/api/v1/api_keys", headers=bearer(victim["apiKey"]))
    assert r.status_code == 200
    assert [(k["id"], k["description"]) for k in r.json()["data"]] == [(victim["id"], "victim's key")]


# --- 401 for every bad credential on every route ----------------------------------------------------------------

BAD_HEADERS = {
    "no header": None,
    "empty": {"Authorization": ""},
    "scheme only": {"Authorization": "Bearer"},
    "scheme and space": {"Authorization": "Bearer "},
    "no scheme": {"Authorization": "ul_abcdefabcdefabcdefabcdefabcdefabcdefabcdefa"},
    "basic scheme": {"Authorization": "Basic dXNlcjpwYXNz"},
    "token scheme": {"Authorization": "Token ul_abcdef"},
    "unknown key": {"Authorization": "Bearer ul_thisKeyWasNeverIssued0000000000000000000000"},
    "too long": {"Authorization": "Bearer " + "x" * 600},
    "operator token": {"Authorization": f"Bearer {OPERATOR_TOKEN}"},
}


def assert_refused_everywhere(client, victim: dict, headers: dict | None, expected: dict = FAILED) -> None:
    """Every user route answers 401 with `expected` to these headers, and nothing of the victim's changes."""
    for method, path, kwargs in USER_ROUTES:
        r = call(client, method, path, kwargs, headers, victim["id"])
        assert r.status_code == 401, (method, path, r.text)
        assert r.json() == expected, (method, path)
        assert r.headers["content-type"] == "application/json"
    assert_victim_untouched(client, victim)


@pytest.mark.parametrize("case", list(BAD_HEADERS))
def test_bad_credentials_are_401_on_every_route(client, victim, case):
    assert_refused_everywhere(client, victim, BAD_HEADERS[case])


def test_a_non_bearer_scheme_with_a_valid_secret_is_401(client, victim):
    assert_refused_everywhere(client, victim, {"Authorization": f"Basic {victim['apiKey']}"})
    assert_refused_everywhere(client, victim, {"Authorization": victim["apiKey"]})


def test_a_revoked_key_is_401(client, api, victim):
    spare = api.key(victim["userId"], description="spare")
    assert client.get("/api/v1/billing/balance", headers=bearer(spare["apiKey"])).status_code == 200
    r = client.delete("/api/v1/api_keys", params={"id": spare["id"]}, headers=bearer(victim["apiKey"]))
    assert r.json() == {"success": True}
    assert_refused_everywhere(client, victim, bearer(spare["apiKey"]))


def test_a_key_revoked_through_itself_is_401_from_then_on(client, victim):
    h = bearer(victim["apiKey"])
    assert client.delete("/api/v1/api_keys", params={"id": victim["id"]}, headers=h).json() == {"success": True}
    r = client.get("/api/v1/api_keys", headers=h)
    assert (r.status_code, r.json()) == (401, FAILED)


def test_an_expired_key_is_401(client, api, victim, monkeypatch):
    expires = now_ms() + 60_000
    short = api.key(victim["userId"], description="short-lived", expiresAt=iso(expires))
    assert client.get("/api/v1/billing/balance", headers=bearer(short["apiKey"])).status_code == 200
    monkeypatch.setattr(deps, "now_ms", lambda: expires - 1)
    assert client.get("/api/v1/billing/balance", headers=bearer(short["apiKey"])).status_code == 200
    monkeypatch.setattr(deps, "now_ms", lambda: expires)
    for method, path, kwargs in USER_ROUTES:
        r = call(client, method, path, kwargs, bearer(short["apiKey"]), victim["id"])
        assert (r.status_code, r.json()) == (401, FAILED), (method, path)
    monkeypatch.undo()
    r = client.get("/api/v1/api_keys", headers=bearer(victim["apiKey"]))
    assert sorted(k["description"] for k in r.json()["data"]) == ["short-lived", "victim's key"]


def test_an_inference_key_is_401_admin_key_required(client, api, victim):
    inference = api.key(victim["userId"], kind="INFERENCE", description="inference")
    for method, path, kwargs in USER_ROUTES:
        r = call(client, method, path, kwargs, bearer(inference["apiKey"]), victim["id"])
        assert (r.status_code, r.json()) == (401, ADMIN_REQUIRED), (method, path)
    r = client.get("/api/v1/api_keys", headers=bearer(victim["apiKey"]))
    assert sorted(k["description"] for k in r.json()["data"]) == ["inference", "victim's key"]


def test_a_bearer_scheme_is_case_insensitive_and_the_key_works_everywhere(client, victim):
    for scheme in ("Bearer", "bearer", "BEARER"):
        for method, path, kwargs in USER_ROUTES[:4]:
            r = call(client, method, path, kwargs, {"Authorization": f"{scheme} {victim['apiKey']}"})
            assert r.status_code == 200, (scheme, path, r.text)


LEDGER_ROUTES = [  # "{user}" is the victim's user id
    ("POST", "/api/v1/ledger/records", {"json": {"records": [{"userId": "{user}", "sku": "s", "units": 1,
                                                              "pricePerUnitUsd": 1, "idempotencyKey": "x"}]}}),
    ("POST", "/api/v1/ledger/credits", {"json": {"userId": "{user}", "currency": "USD", "amount": 5,
                                                 "idempotencyKey": "free-money"}}),
    ("POST", "/api/v1/ledger/users", {"json": {"userId": "intruder"}}),
    ("GET", "/api/v1/ledger/users", {}),
    ("GET", "/api/v1/ledger/users/{user}", {}),
    ("GET", "/api/v1/ledger/users/{user}/balance", {}),
    ("POST", "/api/v1/ledger/users/{user}/api_keys", {"json": {"apiKeyType": "ADMIN", "description": "x"}}),
]


@pytest.mark.parametrize("route", LEDGER_ROUTES, ids=[f"{m} {p}" for m, p, _ in LEDGER_ROUTES])
def test_ledger_routes_refuse_a_user_key(client, victim, route):
    method, path, kwargs = route
    kwargs = json.loads(json.dumps(kwargs).replace("{user}", victim["userId"]))
    r = client.request(method, path.replace("{user}", victim["userId"]), headers=bearer(victim["apiKey"]),
                       **kwargs)
    assert r.status_code == 401, r.text
    assert r.json() == FAILED
    # Nothing happened: no rows, no credit, no user, no key.
    assert client.get("/api/v1/billing/usage", headers=bearer(victim["apiKey"])).json()["pagination"]["total"] == 0
    assert client.get("/api/v1/billing/balance", headers=bearer(victim["apiKey"])).json()["balances"]["usd"] == 0
    assert client.get("/api/v1/ledger/users/intruder", headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"}
                      ).status_code == 404
    assert_victim_untouched(client, victim)


# --- one user never sees another's ----------------------------------------------------------------------------


CURRENCIES = ["USD", "DIEM", "BUNDLED_CREDITS", "VCU"]
# (notes suffix, day of January 2024, currency) of each user's rows; both users get the same ones.
SHARED_ROWS = [(str(i), 1 + i % 3, CURRENCIES[i % 4]) for i in range(12)]


@pytest.fixture
def two_users(client, api) -> tuple[dict, dict]:
    """alice and bob with interleaved rows in every currency at the same timestamps, and an ADMIN key each."""
    tenants = {user: new_tenant(api, user) for user in ("alice", "bob")}
    post_records(client, [priced(tenants[user].id, f"{user}-{n}", ts=f"2024-01-0{day}T{int(n) % 10:02d}:00:00Z",
                                 currency=currency, requestId=f"req-{user}-{n}")
                          for n, day, currency in SHARED_ROWS for user in ("alice", "bob")])
    api.credit(tenants["bob"].id, "USD", "100", "bob-credit")  # recorded now, notes ""
    return tenants["alice"], tenants["bob"]


def expected_notes(user: str, currency: str | None = None, first_day: int = 1, last_day: int = 31) -> set[str]:
    return {f"{user}-{n}" for n, day, cur in SHARED_ROWS
            if (currency is None or cur == currency) and first_day <= day <= last_day}


USAGE_FILTERS = [  # (query, what alice should get: the arguments of expected_notes)
    ({}, {}),
    ({"sortOrder": "asc"}, {}),
    ({"currency": "USD"}, {"currency": "USD"}),
    ({"currency": "VCU"}, {"currency": "VCU"}),
    ({"currency": "DIEM"}, {"currency": "DIEM"}),
    ({"currency": "BUNDLED_CREDITS"}, {"currency": "BUNDLED_CREDITS"}),
    ({"startDate": "2024-01-02"}, {"first_day": 2}),
    ({"endDate": "2024-01-01"}, {"last_day": 1}),
    ({"startDate": "2024-01-02", "endDate": "2024-01-02", "currency": "DIEM"},
     {"first_day": 2, "last_day": 2, "currency": "DIEM"}),
    ({"startDate": "2000-01-01", "endDate": "2100-01-01"}, {}),
]


@pytest.mark.parametrize("params, expected", USAGE_FILTERS)
def test_billing_usage_shows_only_the_callers_rows(client, two_users, params, expected):
    alice, bob = two_users
    r = client.get("/api/v1/billing/usage", params={"limit": 500, **params}, headers=alice)
    assert r.status_code == 200
    notes = [row["notes"] for row in r.json()["data"]]
    assert sorted(notes) == sorted(expected_notes("alice", **expected))
    assert r.json()["pagination"]["total"] == len(notes)
    assert "bob" not in r.text
    # And bob, through his own key, gets his own rows (the credit has no date in 2024-01, notes "").
    r = client.get("/api/v1/billing/usage", params={"limit": 500, **params}, headers=bob)
    assert {row["notes"] for row in r.json()["data"]} - {""} == expected_notes("bob", **expected)
    assert "alice" not in r.text


@pytest.mark.parametrize("params", [{"limit": 1, "page": 2}, {"limit": 5, "page": 3}, {"limit": 7, "page": 2},
                                    {"limit": 500, "page": 2}])
def test_pages_hold_only_the_callers_rows(client, two_users, params):
    alice, _ = two_users
    r = client.get("/api/v1/billing/usage", params=params, headers=alice)
    body = r.json()
    assert body["pagination"]["total"] == 12
    expected_len = max(0, min(params["limit"], 12 - (params["page"] - 1) * params["limit"]))
    assert len(body["data"]) == expected_len
    assert all(row["notes"].startswith("alice-") for row in body["data"])


@pytest.mark.parametrize("params", [{}, {"currency": "USD"}, {"currency": "VCU"}, {"startTimestamp": "2024-01-02"},
                                    {"endTimestamp": "2024-01-02"}, {"pageSize": 10}])
def test_usage_history_shows_only_the_callers_rows(client, two_users, params):
    alice, _ = two_users
    notes, r = [], client.get("/api/v1/billing/usage-history", params=params, headers=alice)
    while True:
        assert r.status_code == 200
        notes += [row["notes"] for row in r.json()["data"]]
        if r.json()["nextCursor"] is None:
            break
        r = client.get("/api/v1/billing/usage-history", params={"cursor": r.json()["nextCursor"]}, headers=alice)
    assert notes and all(n.startswith("alice-") for n in notes)
    assert len(notes) == len(set(notes))


def test_balance_is_the_callers_own(client, two_users):
    alice, bob = two_users
    a = client.get("/api/v1/billing/balance", headers=alice).json()["balances"]
    b = client.get("/api/v1/billing/balance", headers=bob).json()["balances"]
    assert (a["usd"], a["diem"], a["bundledCredits"]) == (-3, -3, -3)
    assert (b["usd"], b["diem"], b["bundledCredits"]) == (97, -3, -3)


def test_keys_of_another_user_are_invisible_and_untouchable(client, api):
    alice = new_tenant(api, "alice", description="alice's").key
    bob = new_tenant(api, "bob", description="bob's").key
    a = bearer(alice["apiKey"])
    listed = client.get("/api/v1/api_keys", headers=a)
    assert [k["id"] for k in listed.json()["data"]] == [alice["id"]]
    assert bob["id"] not in listed.text and bob["apiKey"][-6:] not in listed.text
    assert client.get(f"/api/v1/api_keys/{bob['id']}", headers=a).status_code == 404
    r = client.patch("/api/v1/api_keys", json={"id": bob["id"], "description": "hijacked"}, headers=a)
    assert (r.status_code, r.json()) == (404, {"error": "Not found"})
    r = client.delete("/api/v1/api_keys", params={"id": bob["id"]}, headers=a)
    assert (r.status_code, r.json()) == (404, {"error": "Not found"})
    # bob's key is as it was, and still works.
    r = client.get(f"/api/v1/api_keys/{bob['id']}", headers=bearer(bob["apiKey"]))
    assert r.status_code == 200 and r.json()["data"]["description"] == "bob's"


def test_an_unknown_key_id_is_404(client, victim):
    h = bearer(victim["apiKey"])
    missing = "00000000-0000-4000-8000-000000000000"
    assert client.get(f"/api/v1/api_keys/{missing}", headers=h).json() == {"error": "Not found"}
    assert client.patch("/api/v1/api_keys", json={"id": missing, "description": "x"}, headers=h).status_code == 404
    assert client.delete("/api/v1/api_keys", params={"id": missing}, headers=h).status_code == 404


# --- the failed-auth block ------------------------------------------------------------------------------------


@pytest.fixture
def guarded(tmp_path):
    """An app that blocks an address after 20 failed authentications within 30 s."""
    with app_client(tmp_path / "guarded", auth_failure_limit=20, auth_failure_window_seconds=30,
                    auth_block_seconds=30) as c:
        api = Api(c)
        api.user("alice")
        yield c, bearer(api.key("alice")["apiKey"])


def test_the_21st_failed_attempt_within_the_window_is_429(guarded):
    client, good = guarded
    bad = {"Authorization": "Bearer ul_wrong"}
    for attempt in range(20):
        r = client.get("/api/v1/billing/usage", headers=bad)
        assert r.status_code == 401, attempt
    r = client.get("/api/v1/billing/usage", headers=bad)
    assert r.status_code == 429
    assert r.headers["content-type"] == "application/json"
    assert isinstance(r.json()["error"], str)
    assert 1 <= int(r.headers["Retry-After"]) <= 30
    assert r.headers["x-ratelimit-remaining-requests"] == "0"
    assert r.headers["x-ratelimit-limit-requests"] == "20"
    assert r.headers["x-ratelimit-reset-requests"] == r.headers["Retry-After"]
    # The block is on the address: a valid key and the operator are refused too, on every credentialed route.
    assert client.get("/api/v1/billing/balance", headers=good).status_code == 429
    assert client.get("/api/v1/api_keys", headers=good).status_code == 429
    assert client.get("/api/v1/ledger/users", headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"}).status_code == 429
    # The probes and the description are never blocked.
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
        assert client.get(path).status_code == 200, path


def test_twenty_failures_less_one_do_not_block(guarded):
    client, good = guarded
    for _ in range(19):
        assert client.get("/api/v1/billing/usage", headers={"Authorization": "Basic x"}).status_code == 401
    assert client.get("/api/v1/billing/usage", headers=good).status_code == 200
    assert client.get("/healthz").status_code == 200


class FakeClock:
    """Stands in for the `time` module inside usage_ledger.keys: a monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = time.monotonic()

    def monotonic(self) -> float:
        return self.now

    def __getattr__(self, name):
        return getattr(time, name)


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(keys_module, "time", fake)
    return fake


def test_the_block_ends_after_its_time(guarded, clock):
    client, good = guarded
    for _ in range(20):
        client.get("/api/v1/billing/usage")
    clock.now += 29
    r = client.get("/api/v1/billing/usage", headers=good)
    assert (r.status_code, r.headers["Retry-After"]) == (429, "1")
    clock.now += 1.5
    assert client.get("/api/v1/billing/usage", headers=good).status_code == 200


def test_failures_outside_the_window_do_not_add_up(guarded, clock):
    client, good = guarded
    for _ in range(19):
        client.get("/api/v1/billing/usage")
    clock.now += 31
    for _ in range(19):
        client.get("/api/v1/billing/usage")
    assert client.get("/api/v1/billing/usage", headers=good).status_code == 200
    client.get("/api/v1/billing/usage")  # the 20th within the window
    assert client.get("/api/v1/billing/usage", headers=good).status_code == 429


# --- keys: secrets, listing, usage ----------------------------------------------------------------------------


def test_the_secret_is_shown_once_and_last6_matches_it(client, victim):
    h = bearer(victim["apiKey"])
    r = client.post("/api/v1/api_keys", json={"apiKeyType": "INFERENCE", "description": "new"}, headers=h)
    assert r.status_code == 200
    created = r.json()["data"]
    secret = created["apiKey"]
    assert len(secret) >= 43  # at least 32 random bytes, URL-safe
    listed = client.get("/api/v1/api_keys", headers=h)
    one = client.get(f"/api/v1/api_keys/{created['id']}", headers=h)
    patched = client.patch("/api/v1/api_keys", json={"id": created["id"], "description": "renamed"}, headers=h)
    for answer in (listed, one, patched):
        assert answer.status_code == 200
        assert secret not in answer.text and secret[:-6] not in answer.text
        assert "apiKey\"" not in answer.text
    entry = next(k for k in listed.json()["data"] if k["id"] == created["id"])
    assert entry["last6Chars"] == secret[-6:]
    assert one.json()["data"]["last6Chars"] == secret[-6:]
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", created["id"])
    two = client.post("/api/v1/api_keys", json={"apiKeyType": "INFERENCE", "description": "new"}, headers=h)
    assert two.json()["data"]["apiKey"] != secret


def test_revoked_keys_are_not_listed(client, api, victim):
    h = bearer(victim["apiKey"])
    gone = api.key(victim["userId"], description="to revoke")
    kept = api.key(victim["userId"], description="kept")
    assert client.delete("/api/v1/api_keys", params={"id": gone["id"]}, headers=h).json() == {"success": True}
    ids = [k["id"] for k in client.get("/api/v1/api_keys", headers=h).json()["data"]]
    assert sorted(ids) == sorted([victim["id"], kept["id"]])
    assert client.get(f"/api/v1/api_keys/{gone['id']}", headers=h).status_code == 404
    assert client.delete("/api/v1/api_keys", params={"id": gone["id"]}, headers=h).status_code == 404


def test_delete_without_an_id_is_a_400_naming_id(client, victim):
    r = client.delete("/api/v1/api_keys", headers=bearer(victim["apiKey"]))
    assert r.status_code == 400
    assert r.json()["error"] == "Invalid request parameters" and r.json()["details"]["id"]["_errors"]


def test_page_and_limit_are_honoured(client, api, victim):
    h = bearer(victim["apiKey"])
    for i in range(6):
        api.key(victim["userId"], description=f"k{i}")
    everything = [k["id"] for k in client.get("/api/v1/api_keys", headers=h).json()["data"]]
    assert len(everything) == 7
    pages = [[k["id"] for k in client.get("/api/v1/api_keys", params={"page": p, "limit": 3}, headers=h).json()["data"]]
             for p in range(1, 5)]
    assert [len(p) for p in pages] == [3, 3, 1, 0]
    assert sum(pages, []) == everything
    assert len(client.get("/api/v1/api_keys", params={"limit": 2}, headers=h).json()["data"]) == 2
    for bad in ({"page": 0, "limit": 3}, {"limit": 0}, {"limit": 501}, {"page": "x"}):
        r = client.get("/api/v1/api_keys", params=bad, headers=h)
        assert r.status_code == 400, bad
        assert set(r.json()["details"]) - {"_errors"} <= {"page", "limit"}


def test_trailing_seven_days_sums_are_the_keys_recorded_spend(client, api, victim):
    h = bearer(victim["apiKey"])
    spender = api.key(victim["userId"], description="spender")
    other = api.key(victim["userId"], description="other")
    now = now_ms()
    on = {"apiKeyId": spender["id"]}
    post_records(client, [
        priced(victim["userId"], "usd", ts=iso(now), amount="-1.5", **on),
        priced(victim["userId"], "usd six days ago", ts=iso(now - 6 * 86_400_000), amount="-0.25", **on),
        priced(victim["userId"], "bundled", ts=iso(now), currency="BUNDLED_CREDITS", amount="-0.1", **on),
        priced(victim["userId"], "diem", ts=iso(now), currency="DIEM", amount="-3", **on),
        priced(victim["userId"], "vcu", ts=iso(now), currency="VCU", amount="-0.12345678", **on),
        priced(victim["userId"], "refund: not spend", ts=iso(now), amount="0.7", **on),
        priced(victim["userId"], "eight days ago: too old", ts=iso(now - 8 * 86_400_000), amount="-100", **on),
        priced(victim["userId"], "another key", ts=iso(now), amount="-50", apiKeyId=other["id"]),
        priced(victim["userId"], "no key", ts=iso(now), amount="-60"),
    ])
    keys = {k["id"]: k for k in client.get("/api/v1/api_keys", headers=h).json()["data"]}
    # usd includes bundled credits: 1.5 + 0.25 + 0.1
    assert keys[spender["id"]]["usage"] == {"trailingSevenDays": {"usd": "1.8500", "diem": "3.0000",
                                                                  "vcu": "0.1235"}}
    assert keys[other["id"]]["usage"] == {"trailingSevenDays": {"usd": "50.0000", "diem": "0.0000",
                                                               "vcu": "0.0000"}}
    assert keys[victim["id"]]["usage"] == {"trailingSevenDays": {"usd": "0.0000", "diem": "0.0000",
                                                                "vcu": "0.0000"}}
    one = client.get(f"/api/v1/api_keys/{spender['id']}", headers=h).json()["data"]
    assert one["usage"] == keys[spender["id"]]["usage"]
