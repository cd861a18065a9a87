"""Shared fixtures: a migrated store in a temporary SQLite file, the app over it, and a few users and keys."""

from __future__ import annotations

from typing import Iterator

import pytest
from fastapi.testclient import TestClient

from usage_ledger.app import create_app
from usage_ledger.catalog import Catalog
from usage_ledger.services import Services
from usage_ledger.settings import Settings
from usage_ledger.store.sql import SqlStore
from usage_ledger.usage import dumps

from pgutil import ScratchDatabase

OPERATOR_TOKEN = "test-operator-token-0123456789abcdef"


@pytest.fixture(scope="session")
def catalog() -> Catalog:
    return Catalog.load()


def make_settings(tmp_path, **overrides) -> Settings:
    values = dict(database_url=f"sqlite:///{tmp_path / 'ledger.db'}", operator_token=OPERATOR_TOKEN,
                  auth_failure_limit=0, key_rate_limit_per_minute=0)
    values.update(overrides)
    return Settings(_env_file=None, **values)


ENGINES = ("sqlite", "postgresql")


@pytest.fixture(scope="session")
def pg_database() -> Iterator[ScratchDatabase]:
    """One PostgreSQL database for the run (created on first use, migrated once, dropped at the end)."""
    db = ScratchDatabase()
    yield db
    db.drop()


def clean_postgres(db: ScratchDatabase) -> str:
    """The run's PostgreSQL database, migrated and emptied: each test starts from nothing, as on SQLite."""
    if db.url is None:
        store = SqlStore(db.ensure())
        store.migrate()
        store.close()
    db.ensure()
    db.truncate()
    return db.url


@pytest.fixture(params=ENGINES)
def database_url(request, tmp_path) -> str:
    """Every store and API test runs on both engines; the PostgreSQL half skips, saying why, without a server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    return clean_postgres(request.getfixturevalue("pg_database"))


@pytest.fixture
def settings(tmp_path, database_url) -> Settings:
    return make_settings(tmp_path, database_url=database_url)


@pytest.fixture
def store(settings) -> SqlStore:
    s = SqlStore(settings.database_url)
    s.migrate()
    yield s
    s.close()


@pytest.fixture
def services(settings, store, catalog) -> Services:
    return Services.build(settings, store=store, catalog=catalog)


@pytest.fixture
def client(services) -> TestClient:
    with TestClient(create_app(services), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def alice(api) -> "Tenant":
    """A fresh user with an ADMIN key: the Authorization headers, and `.id` (modules may define their own)."""
    return new_tenant(api, "alice")


@pytest.fixture(scope="module", params=ENGINES)
def module_client(request, tmp_path_factory) -> Iterator[TestClient]:
    """One app per test module and engine, for modules whose tests each work as users of their own (faster than
    an app per test; the module overrides `client` with it)."""
    with app_client(tmp_path_factory.mktemp(request.module.__name__.removeprefix("test_")), engine=request.param) as c:
        yield c


class Api:
    """Drives the service the way a platform and a user would: over HTTP."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.op = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}

    def user(self, user_id: str, name: str = "") -> str:
        r = self.client.post("/api/v1/ledger/users", json={"userId": user_id, "name": name}, headers=self.op)
        assert r.status_code == 201, r.text
        return user_id

    def key(self, user_id: str, kind: str = "ADMIN", description: str = "", **extra) -> dict:
        r = self.client.post(f"/api/v1/ledger/users/{user_id}/api_keys",
                             json={"apiKeyType": kind, "description": description, **extra}, headers=self.op)
        assert r.status_code == 200, r.text
        return r.json()["data"]

    def record(self, *records: dict) -> dict:
        # usage.dumps writes Decimals as exact JSON numbers, as a platform's own encoder would.
        r = self.client.post("/api/v1/ledger/records", content=dumps({"records": list(records)}),
                             headers={**self.op, "Content-Type": "application/json"})
        assert r.status_code == 200, r.text
        return r.json()

    def credit(self, user_id: str, currency: str, amount: str, key: str) -> dict:
        r = self.client.post("/api/v1/ledger/credits", headers={**self.op, "Content-Type": "application/json"}, content=(
            f'{{"userId": "{user_id}", "currency": "{currency}", "amount": {amount}, "idempotencyKey": "{key}"}}'),
            )
        assert r.status_code == 200, r.text
        return r.json()


@pytest.fixture
def api(client) -> Api:
    return Api(client)


def bearer(secret: str) -> dict:
    return {"Authorization": f"Bearer {secret}"}


# --- Helpers for the HTTP-level billing, auth, schema and property tests --------------------------------------

import json as _json
from contextlib import contextmanager
from decimal import Decimal
from typing import Iterator

import orjson


def exact_json(value) -> bytes:
    """JSON text with every Decimal written as the exact plain number it is (never through a float)."""
    def default(v):
        if isinstance(v, Decimal):
            return orjson.Fragment(format(v, "f").encode())
        raise TypeError(type(v).__name__)
    return orjson.dumps(value, default=default)


def exact_body(response) -> object:
    """A JSON answer parsed with Decimal numbers, so that amounts are compared exactly."""
    return _json.loads(response.content, parse_float=Decimal)


def post_records(client: TestClient, records: list[dict]) -> dict:
    """POST /ledger/records with exact decimals; the answer's JSON (status 200 asserted)."""
    r = client.post("/api/v1/ledger/records", content=exact_json({"records": records}),
                    headers={"Authorization": f"Bearer {OPERATOR_TOKEN}", "Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    return r.json()


@contextmanager
def app_client(directory, catalog: Catalog | None = None, engine: str = "sqlite", **overrides) -> Iterator[TestClient]:
    """A client over its own app and database (a file in `directory`, or a scratch PostgreSQL database of its own),
    built with settings overrides (see make_settings)."""
    directory.mkdir(parents=True, exist_ok=True)
    scratch = ScratchDatabase() if engine == "postgresql" else None
    if scratch:
        overrides["database_url"] = scratch.ensure()
    settings = make_settings(directory, **overrides)
    store = SqlStore(settings.database_url)
    try:
        store.migrate()
        services = Services.build(settings, store=store, catalog=catalog or Catalog.load())
        with TestClient(create_app(services), raise_server_exceptions=False) as c:
            yield c
    finally:
        store.close()
        if scratch:
            scratch.drop()


import uuid as _uuid  # noqa: E402  (appended helpers)


class Tenant(dict):
    """A fresh user with an ADMIN key. The dict itself is the key's Authorization header (pass it as `headers=`);
    `.id` is the user id and `.key` the created key (id, apiKey, ...)."""

    def __init__(self, user_id: str, key: dict) -> None:
        super().__init__(bearer(key["apiKey"]))
        self.id, self.key = user_id, key


def new_tenant(api: Api, prefix: str = "user", **key) -> Tenant:
    """A user of a unique id, so that tests can share one app (a module-scoped `client`) without seeing each other;
    `key` holds fields of its ADMIN key (description, ...)."""
    user_id = api.user(f"{prefix}-{_uuid.uuid4().hex[:12]}")
    return Tenant(user_id, api.key(user_id, **key))
