"""Fuzzing the HTTP API (issue 6) with schemathesis against the service's own /openapi.json, in process (ASGI).

On SQLite and on PostgreSQL (a scratch database; skipped, saying why, when no server answers). Every operation of
the description is exercised with real credentials: the operator token on /ledger/*, a user's
ADMIN key on /billing and /api_keys, and a throwaway ADMIN key (of a user of its own, made for each case) on the
operation that deletes, so that a generated DELETE can never revoke the key the other cases use. The checks: no
5xx, every response conforms to the schema documented for its status, and every status is documented.

CI runs a bounded number of examples per operation (FUZZ_EXAMPLES, default 25); docs/RELIABILITY.md gives the command
and result of a larger run (FUZZ_EXAMPLES=1000).
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import uuid
from decimal import Decimal
from pathlib import Path

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

from conftest import Api, OPERATOR_TOKEN, make_settings
from pgutil import ScratchDatabase
from usage_ledger.app import create_app
from usage_ledger.catalog import Catalog
from usage_ledger.services import Services
from usage_ledger.store.sql import SqlStore

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "25"))
CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance]
# POST /ledger/records also takes NDJSON, described as a string: sent as its UTF-8 text.
schemathesis.serializer.alias("application/x-ndjson", "text/plain")


class World:
    """One app and database per engine for the whole module, with users, keys and rows for the fuzzer to find."""

    def __init__(self, directory: Path, database_url: str | None = None) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        settings = make_settings(directory, **({"database_url": database_url} if database_url else {}))
        self.store = SqlStore(settings.database_url)
        self.store.migrate()
        self.app = create_app(Services.build(settings, store=self.store, catalog=Catalog.load()))
        self.client = TestClient(self.app, raise_server_exceptions=False)
        self.api = Api(self.client)
        self.api.user("fuzz-user")
        self.admin = self.api.key("fuzz-user", description="fuzz admin")["apiKey"]
        self.api.credit("fuzz-user", "DIEM", "1", "fuzz-top-up")
        self.api.record(*[{"userId": "fuzz-user", "model": "zai-org-glm-5-1", "requestId": f"fuzz-{n}",
                           "promptTokens": 100 + n, "completionTokens": 10 + n} for n in range(30)],
                        *[{"userId": "fuzz-user", "sku": "fuzz-sku", "units": n + 1, "pricePerUnitUsd": Decimal("0.01"),
                           "currency": "USD", "idempotencyKey": f"fuzz-priced-{n}"} for n in range(5)])

    def throwaway_key(self) -> str:
        user = self.api.user(f"fuzz-throwaway-{uuid.uuid4().hex[:12]}")
        return self.api.key(user)["apiKey"]

    def credential(self, method: str, path: str) -> str:
        if path.startswith("/api/v1/ledger/"):
            return OPERATOR_TOKEN
        if method.upper() == "DELETE":
            return self.throwaway_key()
        return self.admin

    def close(self) -> None:
        self.client.close()
        self.store.close()


# Schemathesis parametrizes at collection, so the apps are built when the module is imported: SQLite in a directory
# of its own, PostgreSQL in a scratch database (tests/pgutil.py) when a server answers; both removed at the end.
_DIRECTORY = Path(tempfile.mkdtemp(prefix="usage-ledger-fuzz-"))
atexit.register(shutil.rmtree, _DIRECTORY, True)
_SCRATCH = ScratchDatabase()
atexit.register(_SCRATCH.drop)
try:
    _PG_URL, PG_MISSING = _SCRATCH.ensure(), None
except pytest.skip.Exception as exc:
    _PG_URL, PG_MISSING = None, str(exc)
WORLDS = {"sqlite": World(_DIRECTORY / "sqlite")}
if _PG_URL:
    WORLDS["postgresql"] = World(_DIRECTORY / "postgresql", _PG_URL)


@pytest.fixture(scope="module", autouse=True)
def _teardown():
    yield
    for world in WORLDS.values():
        world.close()
    _SCRATCH.drop()


def fuzz(case, world: World) -> None:
    case.headers = {**(case.headers or {}),
                    "Authorization": f"Bearer {world.credential(case.method, case.operation.path)}"}
    case.call_and_validate(checks=CHECKS)


bounded = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
sqlite_schema = schemathesis.openapi.from_asgi("/openapi.json", WORLDS["sqlite"].app)


@sqlite_schema.parametrize()
@bounded
def test_every_operation_on_sqlite(case):
    fuzz(case, WORLDS["sqlite"])


if "postgresql" in WORLDS:
    postgres_schema = schemathesis.openapi.from_asgi("/openapi.json", WORLDS["postgresql"].app)

    @postgres_schema.parametrize()
    @bounded
    def test_every_operation_on_postgresql(case):
        fuzz(case, WORLDS["postgresql"])
else:
    @pytest.mark.skip(reason=PG_MISSING)
    def test_every_operation_on_postgresql():
        pass


def test_the_description_covers_every_route():
    """Each route of the app is in /openapi.json, so the fuzzer reaches every operation."""
    world = WORLDS["sqlite"]
    described = world.client.get("/openapi.json").json()["paths"]
    operations = {(m.upper(), p) for p, ops in described.items() for m in ops}
    for route in world.app.routes:
        if getattr(route, "include_in_schema", False) and route.path.startswith("/api/v1/"):
            for method in route.methods - {"HEAD"}:
                assert (method, route.path) in operations
    assert ("DELETE", "/api/v1/api_keys") in operations
