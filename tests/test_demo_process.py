"""The real command as a user runs it: `usage-ledger demo` and `usage-ledger serve` in their own process, over TCP."""

from __future__ import annotations

import re
import subprocess
import time
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from conftest import exact_body, make_settings
from ledger_process import clean_env, cli, free_port, stop
from usage_ledger import demo
from usage_ledger.services import Services
from usage_ledger.store.base import UsageFilter
from usage_ledger.store.sql import SqlStore
from usage_ledger.usage import csv_text

START_TIMEOUT_S = 60
STRONG_TOKEN = "process-test-operator-token-0123456789"


@contextmanager
def running(args: list[str], cwd: Path, env: dict[str, str], port: int) -> Iterator[str]:
    """Starts the command, yields its stdout once it says it is serving on `port`, and always stops it."""
    base_env = clean_env()
    out_path, err_path = cwd / "stdout.txt", cwd / "stderr.txt"
    # Files, not pipes: nobody drains a pipe while the server logs, and a full pipe would stall it.
    with out_path.open("wb") as out, err_path.open("wb") as err:
        process = subprocess.Popen([*cli(), *args, "--port", str(port)], cwd=cwd, env={**base_env, **env},
                                   stdout=out, stderr=err)
        try:
            deadline = time.monotonic() + START_TIMEOUT_S
            while f"serving on http://127.0.0.1:{port}" not in out_path.read_text():
                assert process.poll() is None, f"exited {process.returncode}: {err_path.read_text()}"
                assert time.monotonic() < deadline, f"not serving after {START_TIMEOUT_S} s: {err_path.read_text()}"
                time.sleep(0.1)
            yield out_path.read_text()
        finally:
            stop(process)
    assert "Traceback" not in err_path.read_text()


def test_demo_serves_thousands_of_rows_in_all_currencies(tmp_path):
    port = free_port()
    with running(["demo"], tmp_path, {}, port) as out:
        token = re.search(r"^Operator token:\s+(\S+)$", out, re.M)[1]
        secret = re.search(r"^ADMIN API key:\s+(\S+)$", out, re.M)[1]
        assert len(token) == 43
        base = f"http://127.0.0.1:{port}"
        assert f'curl -H "Authorization: Bearer {secret}" "{base}/api/v1/billing/usage?limit=5"' in out
        with httpx.Client(base_url=base, timeout=30) as http:
            user = {"Authorization": f"Bearer {secret}"}
            page = http.get("/api/v1/billing/usage", params={"limit": 5}, headers=user)
            assert page.status_code == 200 and len(page.json()["data"]) == 5
            assert page.json()["pagination"]["total"] >= 2000
            for currency in ("DIEM", "BUNDLED_CREDITS", "USD", "VCU"):
                r = http.get("/api/v1/billing/usage", params={"currency": currency, "limit": 1}, headers=user)
                assert r.status_code == 200 and r.json()["pagination"]["total"] > 0, (currency, r.text)
                assert r.json()["data"][0]["currency"] == currency

            record = {"userId": "demo", "model": "llama-3.3-70b", "requestId": "chatcmpl-over-tcp",
                      "promptTokens": 339, "completionTokens": 227, "notes": "API Inference"}
            answer = http.post("/api/v1/ledger/records", json={"records": [record]},
                               headers={"Authorization": f"Bearer {token}"})
            assert answer.status_code == 200 and answer.json()["recorded"] == 1, answer.text
            newest = http.get("/api/v1/billing/usage", params={"limit": 2}, headers=user).json()["data"]
            assert {row["sku"] for row in newest} == {"llama-3.3-70b-llm-input-mtoken",
                                                      "llama-3.3-70b-llm-output-mtoken"}
            assert {row["inferenceDetails"]["requestId"] for row in newest} == {"chatcmpl-over-tcp"}
            assert http.post("/api/v1/ledger/records", json={"records": [record]},
                             headers=user).status_code == 401  # an ADMIN key is not the operator
    assert (tmp_path / "usage-ledger-demo.db").exists()
    assert not (tmp_path / "usage-ledger.db").exists()  # the default database is never touched


def test_serve_a_fresh_database_over_tcp(tmp_path):
    port = free_port()
    env = {"USAGE_LEDGER_DATABASE_URL": f"sqlite:///{tmp_path / 'served.db'}",
           "USAGE_LEDGER_OPERATOR_TOKEN": STRONG_TOKEN}
    with running(["serve"], tmp_path, env, port), \
            httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
        op = {"Authorization": f"Bearer {STRONG_TOKEN}"}
        assert http.get("/readyz").status_code == 200
        assert http.post("/api/v1/ledger/users", json={"userId": "alice"}, headers=op).status_code == 201
        key = http.post("/api/v1/ledger/users/alice/api_keys", json={"apiKeyType": "ADMIN", "description": ""},
                        headers=op).json()["data"]["apiKey"]
        answer = http.post("/api/v1/ledger/records", headers={**op, "Content-Type": "application/x-ndjson"},
                           content=b'{"userId": "alice", "sku": "custom", "units": 0.000001, "pricePerUnitUsd": 2.8, '
                                   b'"requestId": "req-1", "currency": "USD", "amount": -0.0000028}\n')
        assert answer.json()["recorded"] == 1, answer.text
        rows = exact_body(http.get("/api/v1/billing/usage", headers={"Authorization": f"Bearer {key}"}))["data"]
        assert [(r["sku"], r["units"], r["amount"], r["currency"], r["inferenceDetails"]["requestId"])
                for r in rows] == [("custom", Decimal("0.000001"), Decimal("-0.0000028"), "USD", "req-1")]


# -- the demo data itself ---------------------------------------------------------------------------------------

@pytest.fixture
def demo_services(tmp_path, catalog):
    stores = []

    def build(name: str) -> Services:
        (tmp_path / name).mkdir()
        settings = make_settings(tmp_path / name)
        stores.append(SqlStore(settings.database_url))
        stores[-1].migrate()
        return Services.build(settings, store=stores[-1], catalog=catalog)

    yield build
    for store in stores:
        store.close()


def test_demo_data_is_deterministic_and_varied(demo_services):
    now = 1_780_000_000_000
    first, second = demo_services("a"), demo_services("b")
    data = demo.build(first, now=now)
    demo.build(second, now=now)

    def rows(services: Services):
        f = UsageFilter(services.store.get_user(demo.USER_ID).uid)
        return services.store.usage_after(f, None, 100_000, services.store.max_row_id())

    assert csv_text(rows(first)) == csv_text(rows(second))
    all_rows = rows(first)
    assert data.rows == len(all_rows) >= 2000
    assert min(r.ts for r in all_rows) >= now - demo.DAYS * 86_400_000 and max(r.ts for r in all_rows) <= now
    skus = {r.sku for r in all_rows}
    for suffix in ("-llm-input-mtoken", "-llm-output-mtoken", "-llm-input-cached-mtoken", "-llm-cache-write-mtoken",
                   "-image-unit", "-tts-mchar", "-asr-second", "-embedding-input-mtoken"):
        assert any(sku.endswith(suffix) for sku in skus), suffix
    assert {r.currency for r in all_rows} == {1, 2, 3, 4}
    assert sum(r.sku == "credit" for r in all_rows) >= 4
    assert all(r.request_id.startswith(("chatcmpl-", "embd-", "img-", "tts-", "asr-")) for r in all_rows
               if r.sku != "credit")
    # The spend order moves on as balances run out: DIEM first, then bundled credits, then USD.
    first_debit = {c: min(r.ts for r in all_rows if r.currency == c and r.amount < 0) for c in (1, 2, 3)}
    assert first_debit[2] < first_debit[3] < first_debit[1]
    uid = first.store.get_user(demo.USER_ID).uid
    keys = first.store.list_keys(uid)
    assert sorted((k.api_key_type, k.description) for k in keys) == sorted(demo.KEYS)
    spending_keys = {kid for kid, _ in first.store.key_spend_since(uid, 0)}
    assert spending_keys == {k.kid for k in keys} | {0}  # every key spends, and some usage has no key (kid 0)
