"""What only PostgreSQL has: user-first keys, concurrent writers, migrations on a server, batched round trips."""

from __future__ import annotations

import threading
from decimal import Decimal

import psycopg
import pytest
import sqlalchemy as sa

from pgutil import ScratchDatabase
from usage_ledger.ledger import record
from usage_ledger.store.base import UsageFilter
from usage_ledger.store.sql import SqlStore
from usage_ledger.timeutil import now_ms

REFERENCE_TABLES = {"users", "api_keys", "meta", "alembic_version"}


@pytest.fixture
def pg_store():
    db = ScratchDatabase()
    store = SqlStore(db.ensure())
    try:
        yield store
    finally:
        store.close()
        db.drop()


def test_migrate_on_an_empty_and_an_up_to_date_database(pg_store):
    assert pg_store.pending_migrations()
    pg_store.migrate()
    assert not pg_store.pending_migrations()
    pg_store.migrate()  # nothing to do, no error
    assert pg_store.meta("cursor_secret")


def test_every_ledger_key_starts_with_the_user(pg_store):
    pg_store.migrate()
    with psycopg.connect(pg_store.url) as conn:
        rows = conn.execute("""
            SELECT t.relname, c.conname, a.attname
            FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid
            JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = c.conkey[1]
            WHERE c.contype IN ('p', 'u') AND t.relnamespace = 'public'::regnamespace""").fetchall()
    ledger = {(table, name, first) for table, name, first in rows if table not in REFERENCE_TABLES}
    assert {table for table, _, _ in ledger} >= {"usage_rows", "idempotency_keys", "balances", "rollup_hourly",
                                                 "rollup_daily", "rollup_key_daily", "rollup_sku_daily"}
    assert {first for _, _, first in ledger} == {"uid"}, ledger


def test_concurrent_replays_from_several_connections_record_once(pg_store, catalog):
    pg_store.migrate()
    uid = pg_store.create_user("u1", "", now_ms()).uid
    records = [{"userId": "u1", "sku": "s", "units": Decimal(1), "pricePerUnitUsd": Decimal("0.001"),
                "idempotencyKey": f"k{i}"} for i in range(500)]
    outcomes, errors = [], []

    def replay() -> None:
        try:
            outcomes.append([o.status for o in record(pg_store, records, catalog)])
        except Exception as exc:  # collected: a failed writer must fail the test, not vanish in its thread
            errors.append(exc)

    threads = [threading.Thread(target=replay) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(o.count("recorded") for o in outcomes) == [0, 0, 0, 0, 0, 500]
    assert pg_store.count(UsageFilter(uid)) == 500
    assert pg_store.balances(uid) == {1: -500_000_000}  # USD, charged once


def test_a_batch_of_1000_records_is_a_handful_of_statements(pg_store, catalog):
    pg_store.migrate()
    pg_store.create_user("u1", "", now_ms())
    statements = []
    sa.event.listen(pg_store.engine, "before_cursor_execute", lambda *a, **k: statements.append(a[2]))
    records = [{"userId": "u1", "requestId": f"r{i}", "model": "zai-org-glm-5-1", "promptTokens": 100,
                "completionTokens": 10} for i in range(1000)]
    assert {o.status for o in record(pg_store, records, catalog)} == {"recorded"}
    # executemany runs pipelined: one call per table, never one per row.
    assert len(statements) < 25, statements


def test_serve_with_several_workers_on_postgresql(tmp_path):
    """`serve --workers 2`: two processes over one database, each answering what the other recorded."""
    import subprocess
    import time

    import httpx

    from ledger_process import STRONG_TOKEN, clean_env, cli, free_port, stop

    db = ScratchDatabase()
    url, port = db.ensure(), free_port()
    process = subprocess.Popen([*cli(), "serve", "--port", str(port), "--workers", "2"], cwd=tmp_path,
                               env=clean_env(database_url=url, operator_token=STRONG_TOKEN),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    op = {"Authorization": f"Bearer {STRONG_TOKEN}"}
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            deadline = time.monotonic() + 60
            while True:
                assert process.poll() is None, process.stderr.read().decode()
                try:
                    if http.get("/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "not serving after 60 s"
                time.sleep(0.2)
            assert http.post("/api/v1/ledger/users", json={"userId": "u1"}, headers=op).status_code == 201
            key = http.post("/api/v1/ledger/users/u1/api_keys", json={"apiKeyType": "ADMIN", "description": ""},
                            headers=op).json()["data"]["apiKey"]
            for batch in range(4):  # new connections: spread over both workers
                records = [{"userId": "u1", "sku": "s", "units": 1, "pricePerUnitUsd": 0.5,
                            "idempotencyKey": f"{batch}-{i}"} for i in range(100)]
                with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as fresh:
                    assert fresh.post("/api/v1/ledger/records", json={"records": records},
                                      headers=op).json()["recorded"] == 100
            page = http.get("/api/v1/billing/usage?limit=1", headers={"Authorization": f"Bearer {key}"}).json()
            assert page["pagination"]["total"] == 400
    finally:
        stop(process, timeout=20)
        db.drop()
