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


# -- the hand-written CSV line against Python's csv module ------------------------------------------------------

from hypothesis import given, settings as hsettings, strategies as st  # noqa: E402

from usage_ledger.money import CURRENCY_NAMES, render  # noqa: E402
from usage_ledger.store.base import UsageRow  # noqa: E402
from usage_ledger.timeutil import iso_ms  # noqa: E402
from usage_ledger.usage import csv_line, csv_text  # noqa: E402

_TEXT = st.text(alphabet=st.sampled_from(list("ab ,\"'\r\n\t=+-@;é\u2028")), max_size=12)
_COUNT = st.none() | st.integers(0, 2**53)


@hsettings(max_examples=400, deadline=None)
@given(st.builds(UsageRow, id=st.integers(1, 2**40), ts=st.integers(0, 4_102_444_800_000), sku=_TEXT,
                 price=st.integers(0, 2**62), units=st.integers(0, 2**62), amount=st.integers(-2**62, 2**62),
                 currency=st.sampled_from(sorted(CURRENCY_NAMES)), notes=_TEXT, request_id=st.none() | _TEXT,
                 exec_ms=_COUNT, prompt_tokens=_COUNT, completion_tokens=_COUNT))
def test_csv_line_is_what_csv_writer_writes(row):
    expected = io.StringIO()
    csv.writer(expected, lineterminator="\r\n").writerow(
        [iso_ms(row.ts), guarded(row.sku), render(row.price), render(row.units), render(row.amount),
         CURRENCY_NAMES[row.currency], guarded(row.notes), "" if row.request_id is None else guarded(row.request_id),
         *("" if v is None else str(v) for v in (row.exec_ms, row.prompt_tokens, row.completion_tokens))])
    assert csv_line(row) == expected.getvalue()
    parsed = next(csv.reader(io.StringIO(csv_text([row]).split("\r\n", 1)[1], newline="")))
    assert parsed[1] == guarded(row.sku) and parsed[6] == guarded(row.notes)


@hsettings(max_examples=300, deadline=None)
@given(st.integers(-2**62, 2**62))
def test_iso_ms_matches_datetime(ms):
    from datetime import datetime, timedelta, timezone
    ms = abs(ms) % 253_402_300_800_000  # datetime stops at year 9999
    expected = datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(milliseconds=ms)
    assert iso_ms(ms) == expected.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"
