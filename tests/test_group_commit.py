"""store.write_shared: batches queued behind SQLite's single writer share one commit, each keeps its own outcome,
and one batch's failure never undoes another's. PostgreSQL runs each in its own transaction; same results."""

from __future__ import annotations

import threading
import time
from decimal import Decimal

import pytest
import sqlalchemy as sa

from usage_ledger.ledger import prepare_batch, write_batch
from usage_ledger.store.base import UsageFilter
from usage_ledger.timeutil import now_ms


def _records(prefix: str, n: int) -> list[dict]:
    return [{"userId": "u1", "sku": "s", "units": Decimal(1), "pricePerUnitUsd": Decimal("0.001"),
             "idempotencyKey": f"{prefix}{i}"} for i in range(n)]


def _run_threads(targets) -> list[BaseException]:
    errors: list[BaseException] = []

    def guarded(target):
        try:
            target()
        except BaseException as exc:  # collected: a failed writer must fail the test, not vanish in its thread
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(t,)) for t in targets]
    for t in threads:
        t.start()
    return threads, errors


def _queued(store, count: int) -> None:
    deadline = time.monotonic() + 10
    while len(store._queue) < count:
        assert time.monotonic() < deadline, "the writers never queued"
        time.sleep(0.005)


def test_concurrent_batches_each_get_their_own_outcomes(store, catalog):
    uid = store.create_user("u1", "", now_ms()).uid
    results: dict[int, list[str]] = {}

    def writer(n: int):
        def run():
            batch = prepare_batch(_records(f"b{n}-", 50) + _records("shared-", 10), catalog)
            results[n] = [o.status for o in store.write_shared(lambda tx: write_batch(tx, batch))]
        return run

    threads, errors = _run_threads([writer(n) for n in range(8)])
    for t in threads:
        t.join()
    assert not errors
    assert all(statuses[:50] == ["recorded"] * 50 for statuses in results.values())
    # the ten shared keys are recorded by exactly one batch, duplicates everywhere else
    assert sum(statuses[50:].count("recorded") for statuses in results.values()) == 10
    assert sum(statuses[50:].count("duplicate") for statuses in results.values()) == 70
    assert store.count(UsageFilter(uid)) == 8 * 50 + 10
    assert store.balances(uid) == {1: -410 * 1_000_000}


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_queued_batches_share_one_commit_and_a_failure_stays_in_its_own(store, catalog):
    uid = store.create_user("u1", "", now_ms()).uid
    commits = []
    sa.event.listen(store.engine, "commit", lambda conn: commits.append(1))
    outcomes: dict[str, list[str]] = {}

    def good(name: str):
        batch = prepare_batch(_records(name, 20), catalog)
        return lambda: outcomes.__setitem__(name, [o.status for o in store.write_shared(
            lambda tx: write_batch(tx, batch))])

    def failing():
        batch = prepare_batch(_records("bad", 20), catalog)

        def work(tx):
            write_batch(tx, batch)  # its rows are written, then the job fails: its savepoint must undo them
            raise RuntimeError("boom")
        store.write_shared(work)

    # Hold the writer while five batches queue behind it, as requests do behind a commit in progress.
    with store._write_lock:
        threads, errors = _run_threads([good("a"), good("b"), failing, good("c"), good("d")])
        _queued(store, 5)
    for t in threads:
        t.join()
    assert [type(e) for e in errors] == [RuntimeError]
    assert sorted(outcomes) == ["a", "b", "c", "d"]
    assert all(statuses == ["recorded"] * 20 for statuses in outcomes.values())
    assert len(commits) == 1
    assert store.count(UsageFilter(uid)) == 80
    assert store.balances(uid) == {1: -80 * 1_000_000}


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_failed_commit_fails_every_batch_of_the_group(store, catalog):
    uid = store.create_user("u1", "", now_ms()).uid

    def refuse_commit(conn):
        raise sa.exc.OperationalError("COMMIT", (), Exception("disk I/O error"))

    sa.event.listen(store.engine, "commit", refuse_commit)
    batches = [prepare_batch(_records(name, 5), catalog) for name in "abc"]
    with store._write_lock:
        threads, errors = _run_threads([lambda b=b: store.write_shared(lambda tx: write_batch(tx, b))
                                        for b in batches])
        _queued(store, 3)
    for t in threads:
        t.join()
    sa.event.remove(store.engine, "commit", refuse_commit)
    assert len(errors) == 3 and all("could not be committed" in str(e) for e in errors)
    assert store.count(UsageFilter(uid)) == 0
    assert store.balances(uid) == {}


def test_a_write_the_store_cannot_commit_answers_503_and_stores_nothing(client, services):
    api_ops = {"Authorization": f"Bearer {services.settings.operator_token}"}
    assert client.post("/api/v1/ledger/users", json={"userId": "u1"}, headers=api_ops).status_code == 201

    def refuse_commit(conn):
        raise sa.exc.OperationalError("COMMIT", (), Exception("disk I/O error"))

    sa.event.listen(services.store.engine, "commit", refuse_commit)
    try:
        r = client.post("/api/v1/ledger/records", json={"records": [
            {"userId": "u1", "sku": "s", "units": 1, "pricePerUnitUsd": 1, "idempotencyKey": "k1"}]}, headers=api_ops)
    finally:
        sa.event.remove(services.store.engine, "commit", refuse_commit)
    assert r.status_code == 503
    assert r.json() == {"error": "The ledger is unavailable, nothing was stored: retry"}
    assert r.headers["retry-after"] == "1"
    retried = client.post("/api/v1/ledger/records", json={"records": [
        {"userId": "u1", "sku": "s", "units": 1, "pricePerUnitUsd": 1, "idempotencyKey": "k1"}]}, headers=api_ops)
    assert retried.json()["recorded"] == 1


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_when_sqlite_rolls_the_whole_transaction_back_every_batch_of_the_group_fails(store, catalog):
    # Disk full or an I/O error makes SQLite roll back the transaction itself, taking the batches before the failing
    # one with it: none may be reported recorded.
    uid = store.create_user("u1", "", now_ms()).uid
    outcomes: dict[str, list[str]] = {}

    def good(name: str):
        batch = prepare_batch(_records(name, 5), catalog)
        return lambda: outcomes.__setitem__(name, [o.status for o in store.write_shared(
            lambda tx: write_batch(tx, batch))])

    def rolled_back(tx):
        tx._c.exec_driver_sql("ROLLBACK")  # what SQLite does on SQLITE_FULL
        raise sa.exc.OperationalError("INSERT", (), Exception("database or disk is full"))

    with store._write_lock:
        threads, errors = _run_threads([good("a"), lambda: store.write_shared(rolled_back), good("c")])
        _queued(store, 3)
    for t in threads:
        t.join()
    assert outcomes == {} and len(errors) == 3
    assert store.count(UsageFilter(uid)) == 0 and store.balances(uid) == {}
