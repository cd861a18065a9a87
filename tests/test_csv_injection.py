"""Formula injection (issue 6, API.md §3): in every CSV the service writes (GET /billing/usage, GET
/billing/usage-history and `usage-ledger export`), a text cell that begins with = + - @, a tab or a carriage return
gets a leading `'`; numeric cells (negative amounts included) are written as the numbers they are, untouched; and
the export still re-imports to the very same rows.
"""

from __future__ import annotations

import csv
import io
from decimal import Decimal

import pytest
from typer.testing import CliRunner

from conftest import bearer, exact_body
from usage_ledger.cli import app
from usage_ledger.usage import CSV_HEADER

DANGEROUS = ["=", "+", "-", "@", "\t", "\r"]
PAYLOADS = [f"{p}cmd|' /C calc'!A0" for p in DANGEROUS] + ["=HYPERLINK(\"http://x\")", "-5", "+1", "@SUM(A1)",
                                                           "'=already quoted", "''=twice", "'", "safe", ""]
TEXT_COLUMNS = {"sku": 1, "notes": 6, "inferenceDetails.requestId": 7}


def guarded(value: str) -> str:
    """What the CSV must hold for a text value: a leading ' wherever a spreadsheet would otherwise see a formula
    (after any quotes the value itself begins with, so that the re-import can tell them apart)."""
    return "'" + value if value.lstrip("'").startswith(tuple(DANGEROUS)) else value


@pytest.fixture
def alice(api):
    api.user("alice")
    secret = api.key("alice")["apiKey"]
    records = []
    for n, payload in enumerate(PAYLOADS):
        records.append({"userId": "alice", "sku": payload or "empty", "units": Decimal(n + 1),
                        "pricePerUnitUsd": Decimal("0.000123"), "notes": payload, "requestId": payload or "r",
                        "idempotencyKey": f"csv-{n}", "timestamp": f"2025-01-01T00:00:{n:02d}.000Z"})
    answer = api.record(*records)
    assert answer["errors"] == 0, answer
    api.credit("alice", "USD", "5", "refund-like")  # a positive amount beside the negative ones
    return secret


def cells(text: str) -> list[list[str]]:
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert tuple(rows[0]) == CSV_HEADER
    return rows[1:]


def check(rows: list[list[str]]) -> None:
    assert len(rows) == len(PAYLOADS) + 1
    for row in rows:
        for column in TEXT_COLUMNS.values():
            value = row[column]
            if value.lstrip("'").startswith(tuple(DANGEROUS)):
                assert value.startswith("'"), (column, value)
        # Numbers are numbers: never quoted, the negative amounts included.
        for column in (2, 3, 4):
            assert not row[column].startswith("'") and Decimal(row[column]) == Decimal(row[column].strip())
    payload_rows = [row for row in rows if row[1] != "credit"]
    assert sorted(row[6] for row in payload_rows) == sorted(guarded(p) for p in PAYLOADS)
    assert all(Decimal(row[4]) < 0 and row[4].startswith("-") for row in payload_rows)
    assert [row[4] for row in rows if row[1] == "credit"] == ["5"]


def test_billing_usage_csv(client, alice):
    r = client.get("/api/v1/billing/usage", params={"limit": 500}, headers={**bearer(alice), "Accept": "text/csv"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    check(cells(r.text))


def test_usage_history_csv(client, alice):
    rows, params = [], {"pageSize": 10}
    while True:
        r = client.get("/api/v1/billing/usage-history", params=params, headers={**bearer(alice), "Accept": "text/csv"})
        assert r.status_code == 200
        rows += cells(r.text)
        if "x-next-cursor" not in r.headers:
            break
        params = {"cursor": r.headers["x-next-cursor"]}
    check(rows)


def test_cli_export_and_its_round_trip(client, api, alice, settings, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("USAGE_LEDGER_DATABASE_URL", settings.database_url)
    runner = CliRunner()
    out = tmp_path / "alice.csv"
    result = runner.invoke(app, ["export", "--user", "alice", "-o", str(out)])
    assert result.exit_code == 0, result.output
    exported = out.read_bytes().decode()
    check(cells(exported))
    # Re-imported, the guarded cells come back as they were recorded, not with the guard kept or a quote lost.
    api.user("bob")
    bob = api.key("bob")["apiKey"]
    result = runner.invoke(app, ["ingest", str(out), "--user", "bob"])
    assert result.exit_code == 0 and "errors 0" in result.stdout, result.output
    history = "/api/v1/billing/usage-history"
    assert exact_body(client.get(history, headers=bearer(bob)))["data"] == \
        exact_body(client.get(history, headers=bearer(alice)))["data"]
