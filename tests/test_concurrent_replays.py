"""Concurrent replays (issue 6): 8 clients send the same 10,000 records at once (10 requests of 1,000 records each)
to a real `usage-ledger serve` process over HTTP: exactly 10,000 rows are stored and every balance is charged once.

On SQLite, and on PostgreSQL (a scratch database of tests/pgutil.py) when a server answers. Half the clients send the
ten requests in order and half start from the middle, so the same keys race both at the same moment and later on.
"""

from __future__ import annotations

import json
import threading
from collections import defaultdict
from decimal import Decimal

import httpx
import pytest

from conftest import exact_json
from ledger_process import LedgerProcess
from pgutil import ScratchDatabase
from usage_ledger.money import CURRENCY_NAMES, to_nano
from usage_ledger.store.sql import SqlStore

CLIENTS = 8
RECORDS = 10_000
PER_REQUEST = 1000
USERS = [f"replay-u{i:02d}" for i in range(20)]
# Some users have DIEM or bundled credits to spend first, so a replay that charged twice would show in any currency.
CREDITS = {user: ("DIEM" if i % 3 == 0 else "BUNDLED_CREDITS", "0.5") for i, user in enumerate(USERS) if i % 3 != 2}
PRICE = Decimal("0.000001")


def _records() -> list[dict]:
    out = []
    for n in range(RECORDS):
        units = 1 + (n * 7919) % 100_000
        out.append({"userId": USERS[n % len(USERS)], "sku": f"replay-sku-{n % 7}", "units": units,
                    "pricePerUnitUsd": PRICE, "notes": f"replay-{n}", "idempotencyKey": f"replay-{n}",
                    "timestamp": 1_780_000_000_000 + n * 1000})
    return out


def _replay(server: LedgerProcess, url: str) -> None:
    records = _records()
    bodies = [exact_json({"records": records[i:i + PER_REQUEST]}) for i in range(0, RECORDS, PER_REQUEST)]
    with server.client() as http:
        for user in USERS:
            assert http.post("/api/v1/ledger/users", json={"userId": user}, headers=server.operator).status_code == 201
            if user in CREDITS:
                currency, amount = CREDITS[user]
                assert http.post("/api/v1/ledger/credits", headers=server.operator, json={
                    "userId": user, "currency": currency, "amount": amount, "idempotencyKey": "top-up"}).status_code == 200

    start = threading.Barrier(CLIENTS)
    answers: list[dict] = []
    failures: list[str] = []
    lock = threading.Lock()

    def client(i: int) -> None:
        order = list(range(len(bodies)))
        if i % 2:
            order = order[len(order) // 2:] + order[:len(order) // 2]
        try:
            with httpx.Client(base_url=server.base_url, timeout=120) as http:
                start.wait(timeout=30)
                for n in order:
                    r = http.post("/api/v1/ledger/records", content=bodies[n],
                                  headers={**server.operator, "Content-Type": "application/json"})
                    assert r.status_code == 200, r.text
                    with lock:
                        answers.append(r.json())
        except BaseException as exc:
            failures.append(repr(exc))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not failures, failures
    assert len(answers) == CLIENTS * len(bodies)
    assert sum(a["errors"] for a in answers) == 0
    assert sum(a["recorded"] for a in answers) == RECORDS
    assert sum(a["duplicates"] for a in answers) == (CLIENTS - 1) * RECORDS

    # Charged once: each user's balance is its credit less the cost of its records, exactly, and each currency's
    # balance is the sum of that currency's rows.
    cost: dict[str, int] = defaultdict(int)
    for r in records:
        cost[r["userId"]] += to_nano(PRICE * r["units"], "amount")
    with server.client() as http:
        for user in USERS:
            balance = json.loads(http.get(f"/api/v1/ledger/users/{user}/balance", headers=server.operator).content,
                                 parse_float=Decimal)["balances"]
            credit = Decimal(CREDITS[user][1]) if user in CREDITS else Decimal(0)
            assert sum(balance.values()) == credit - Decimal(cost[user]).scaleb(-9), user

    store = SqlStore(url)
    try:
        with store.engine.connect() as c:
            rows = c.exec_driver_sql("SELECT COUNT(*) FROM usage_rows WHERE sku <> 'credit'").scalar_one()
            notes = c.exec_driver_sql("SELECT COUNT(DISTINCT notes) FROM usage_rows WHERE sku <> 'credit'").scalar_one()
            sums = c.exec_driver_sql("SELECT u.user_id, r.currency, SUM(r.amount) FROM usage_rows r "
                                     "JOIN users u ON u.uid = r.uid GROUP BY u.user_id, r.currency").fetchall()
        assert (rows, notes) == (RECORDS, RECORDS)
        for user_id, currency, total in sums:
            uid = store.get_user(user_id).uid
            assert store.balances(uid)[currency] == total, (user_id, CURRENCY_NAMES[currency])
        maintained = store.rollup_contents()
        store.rebuild_rollups()
        assert store.rollup_contents() == maintained
    finally:
        store.close()


def test_eight_clients_replaying_10000_records_on_sqlite(tmp_path):
    url = f"sqlite:///{tmp_path / 'replays.db'}"
    with LedgerProcess(tmp_path, url, auth_failure_limit="0") as server:
        _replay(server, url)
    assert "Traceback" not in server.logs()


@pytest.fixture
def scratch_postgres():
    scratch = ScratchDatabase()
    try:
        yield scratch.ensure()  # skips, saying why, when no PostgreSQL server answers
    finally:
        scratch.drop()


def test_eight_clients_replaying_10000_records_on_postgresql(tmp_path, scratch_postgres):
    with LedgerProcess(tmp_path, scratch_postgres, auth_failure_limit="0") as server:
        _replay(server, scratch_postgres)
    assert "Traceback" not in server.logs()
