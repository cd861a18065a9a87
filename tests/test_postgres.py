"""What only PostgreSQL has: user-first keys, concurrent writers, migrations on a server, batched round trips."""

from __future__ import annotations

import threading
from decimal import Decimal

import psycopg
import pytest
import sqlalchemy as sa

from pgutil import ScratchDatabase
from usage_ledger.ledger import record_batch
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
            with pg_store.write() as tx:
                outcomes.append([o.status for o in record_batch(tx, records, catalog)])
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
    with pg_store.write() as tx:
        assert {o.status for o in record_batch(tx, records, catalog)} == {"recorded"}
    # executemany runs pipelined: one call per table, never one per row.
    assert len(statements) < 25, statements
