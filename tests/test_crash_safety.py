"""Crash safety (issue 6): the real `usage-ledger serve` is SIGKILLed at random moments under concurrent ingest and
restarted on the same SQLite file; clients retry what got no answer. At the end:

- every record of a batch answered 200 is stored exactly once (its rows read back through the user's ADMIN key);
- a batch whose request got no answer and was retried landed exactly once: its retry reports all its records
  `recorded` (the killed transaction left nothing) or all `duplicate` (it had committed before the kill), never a mix;
- each balance equals the sum of its currency's rows, and the maintained rollups equal a rebuild from the rows.
"""

from __future__ import annotations

import json
import random
import sqlite3
import threading
import time
from collections import Counter, defaultdict
from decimal import Decimal

import httpx

from conftest import exact_json
from ledger_process import LedgerProcess
from usage_ledger.store.sql import SqlStore

KILLS = 6
CLIENTS = 3
BATCH = 40
USERS = [f"crash-u{i}" for i in range(4)]
CREDITS = {"crash-u0": ("DIEM", "0.05"), "crash-u1": ("BUNDLED_CREDITS", "0.03"), "crash-u2": ("USD", "0.02")}
MODEL = "zai-org-glm-5-1"  # an event with prompt and completion tokens is two rows: input and output
DEADLINE_S = 120  # generous: a loaded CI machine may restart the server slowly


def _record(rng: random.Random, client: int, batch: int, n: int) -> tuple[dict, int]:
    """A record with a unique note (so its rows can be counted) and the number of rows it makes."""
    tag = f"crash:c{client}:b{batch}:r{n}"
    user = rng.choice(USERS)
    if n % 3 == 0:
        return ({"userId": user, "model": MODEL, "requestId": tag, "promptTokens": rng.randint(1, 5000),
                 "completionTokens": rng.randint(1, 2000), "notes": tag}, 2)
    return ({"userId": user, "sku": f"crash-sku-{n % 5}", "units": rng.randint(1, 10**6),
             "pricePerUnitUsd": Decimal("0.000001"), "notes": tag, "idempotencyKey": tag}, 1)


class Traffic:
    """Client threads that send batches until told to stop, retrying a batch until it is answered."""

    def __init__(self, server: LedgerProcess) -> None:
        self.server = server
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.expected_rows: dict[str, int] = {}  # note -> rows its record makes
        self.first_try: list[list[str]] = []  # statuses of batches answered 200 at their first attempt
        self.retried: list[list[str]] = []  # statuses of the answer to batches that had an unanswered attempt
        self.unanswered_attempts = 0
        self.in_flight = 0  # batches sent and cut off by a kill (not merely refused while the server was down)
        self.errors: list[str] = []
        self.deadline = time.monotonic() + DEADLINE_S

    def run(self, client: int) -> None:
        rng = random.Random(client)
        headers = {**self.server.operator, "Content-Type": "application/json"}
        try:
            with httpx.Client(base_url=self.server.base_url, timeout=10) as http:
                batch = 0
                while not self.stop.is_set():
                    records = [_record(rng, client, batch, n) for n in range(BATCH)]
                    body = exact_json({"records": [r for r, _ in records]})
                    with self.lock:
                        self.expected_rows.update({r["notes"]: rows for r, rows in records})
                    missed, cut_off = 0, False
                    while True:
                        assert time.monotonic() < self.deadline, "the batch was never answered"
                        try:
                            answer = http.post("/api/v1/ledger/records", content=body, headers=headers)
                        except httpx.TransportError as exc:  # killed mid-request, or down while it restarts
                            missed += 1
                            cut_off = cut_off or not isinstance(exc, httpx.ConnectError)
                            time.sleep(0.05)
                            continue
                        assert answer.status_code == 200, answer.text
                        break
                    statuses = [r["status"] + r.get("error", "") for r in answer.json()["results"]]
                    with self.lock:
                        self.unanswered_attempts += missed
                        self.in_flight += cut_off
                        (self.retried if missed else self.first_try).append(statuses)
                    batch += 1
        except BaseException as exc:  # reported by the test, not lost in the thread
            self.errors.append(repr(exc))


def _walk(http: httpx.Client, secret: str) -> list[dict]:
    rows, params = [], {"pageSize": 1000}
    while True:
        page = http.get("/api/v1/billing/usage-history", params=params, headers={"Authorization": f"Bearer {secret}"})
        assert page.status_code == 200, page.text
        body = json.loads(page.content, parse_float=Decimal)
        rows += body["data"]
        if body["nextCursor"] is None:
            return rows
        params = {"cursor": body["nextCursor"]}


def test_sigkill_under_concurrent_ingest_loses_and_doubles_nothing(tmp_path):
    url = f"sqlite:///{tmp_path / 'crash.db'}"
    server = LedgerProcess(tmp_path, url, auth_failure_limit="0", key_rate_limit_per_minute="0")
    rng = random.Random()
    secrets: dict[str, str] = {}
    threads: list[threading.Thread] = []
    traffic = Traffic(server)
    try:
        server.start()
        with server.client() as http:
            for i, user in enumerate(USERS):
                assert http.post("/api/v1/ledger/users", json={"userId": user}, headers=server.operator).status_code == 201
                secrets[user] = http.post(f"/api/v1/ledger/users/{user}/api_keys", headers=server.operator,
                                          json={"apiKeyType": "ADMIN", "description": ""}).json()["data"]["apiKey"]
                if user in CREDITS:
                    currency, amount = CREDITS[user]
                    r = http.post("/api/v1/ledger/credits", headers=server.operator, json={
                        "userId": user, "currency": currency, "amount": amount, "idempotencyKey": f"top-{i}"})
                    assert r.status_code == 200, r.text

        threads = [threading.Thread(target=traffic.run, args=(c,), daemon=True) for c in range(CLIENTS)]
        for t in threads:
            t.start()
        for _ in range(KILLS):
            time.sleep(rng.uniform(0.3, 1.5))  # a random moment of steady load
            server.kill()
            time.sleep(rng.uniform(0.0, 0.3))  # clients meet a dead port for a while
            server.start()
        time.sleep(0.5)  # the clients retry what was unanswered, then send a little more
        traffic.stop.set()
        for t in threads:
            t.join(timeout=DEADLINE_S)
        assert not traffic.errors, traffic.errors
        assert not any(t.is_alive() for t in threads)

        # A batch is one transaction: answered first time, all recorded; retried, all recorded or all duplicate.
        assert all(set(s) == {"recorded"} for s in traffic.first_try), [s for s in traffic.first_try if set(s) != {"recorded"}][:3]
        assert all(set(s) in ({"recorded"}, {"duplicate"}) for s in traffic.retried), traffic.retried

        with server.client() as http:
            rows_by_user = {user: _walk(http, secrets[user]) for user in USERS}
            balances = {user: json.loads(http.get("/api/v1/billing/balance", headers={
                "Authorization": f"Bearer {secrets[user]}"}).content, parse_float=Decimal)["balances"]
                for user in USERS}

        stored = Counter(row["notes"] for rows in rows_by_user.values() for row in rows if row["sku"] != "credit")
        assert stored == Counter(traffic.expected_rows), "a record was lost, doubled or half-written"
        for user, rows in rows_by_user.items():
            sums: dict[str, Decimal] = defaultdict(Decimal)
            for row in rows:
                sums[row["currency"]] += row["amount"]
            assert balances[user] == {"diem": sums["DIEM"], "usd": sums["USD"],
                                      "bundledCredits": sums["BUNDLED_CREDITS"]}, user
            assert sums["VCU"] == 0
        server.kill()

        store = SqlStore(url)
        try:
            maintained = store.rollup_contents()
            store.rebuild_rollups()
            assert store.rollup_contents() == maintained
        finally:
            store.close()
        with sqlite3.connect(tmp_path / "crash.db") as db:
            assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert "Traceback" not in server.logs()
        committed_before_kill = sum(1 for s in traffic.retried if s[0] == "duplicate")
        batches = len(traffic.first_try) + len(traffic.retried)
        print(f"\ncrash safety: {server.starts - 1} SIGKILLs; {batches} batches of {BATCH}: "
              f"{len(traffic.expected_rows)} records, {sum(stored.values())} rows; "
              f"{traffic.unanswered_attempts} unanswered attempts; {len(traffic.retried)} batches retried, "
              f"{traffic.in_flight} of them cut off in flight; on retry {committed_before_kill} were duplicates "
              f"(committed before the kill), {len(traffic.retried) - committed_before_kill} recorded")
        assert server.starts - 1 >= 5
    finally:
        traffic.stop.set()
        server.kill()
        for t in threads:
            t.join(timeout=5)
