"""The `usage-ledger` command in-process (CliRunner): migrate, users, keys, ingest, export, serve's start-up checks."""

from __future__ import annotations

import csv
import io
import json
import re
from decimal import Decimal

import pytest
from typer.testing import CliRunner

from conftest import OPERATOR_TOKEN, bearer, exact_body
from usage_ledger import cli as cli_module
from usage_ledger.cli import app
from usage_ledger.keys import secret_hash
from usage_ledger.store.base import UsageFilter
from usage_ledger.store.sql import SqlStore
from usage_ledger.transfer import usage_chunks
from usage_ledger.usage import CSV_HEADER

HISTORY = "/api/v1/billing/usage-history"
STRONG_TOKEN = "s" * 40


@pytest.fixture
def cli(settings, monkeypatch, tmp_path):
    """Runs the command against the `settings` fixture's database (the one `api` and `client` serve)."""
    monkeypatch.chdir(tmp_path)  # no stray .env, and any default database lands here
    for name in ("USAGE_LEDGER_OPERATOR_TOKEN", "USAGE_LEDGER_CATALOG", "USAGE_LEDGER_CURSOR_SECRET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("USAGE_LEDGER_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("COLUMNS", "200")
    runner = CliRunner()

    def run(*args, code: int = 0):
        result = runner.invoke(app, [str(a) for a in args])
        assert result.exit_code == code, (result.output, result.exception)
        # Every exit, failures included, is a deliberate one: never an exception escaping as a trace.
        assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
        return result

    return run


def one_line_error(result, *fragments: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


# -- migrate, users, keys ---------------------------------------------------------------------------------------

def test_migrate_on_an_empty_then_an_up_to_date_database(cli, monkeypatch, tmp_path):
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    monkeypatch.setenv("USAGE_LEDGER_DATABASE_URL", url)
    first = cli("migrate").stdout
    second = cli("migrate").stdout
    revision = re.search(r"database at revision (\w+) \(was empty\)", first)
    assert revision, first
    assert f"database at revision {revision[1]} (up to date)" in second
    store = SqlStore(url)
    assert not store.pending_migrations()
    store.close()


def test_users_and_keys(cli, client):
    assert cli("users", "create", "--id", "alice", "--name", "Alice Ltd").stdout.strip() == "created user alice"
    one_line_error(cli("users", "create", "--id", "alice", code=1), "already exists")
    one_line_error(cli("users", "create", "--id", "not valid", code=1), "userId")
    generated = re.fullmatch(r"created user (\S+)\n", cli("users", "create").stdout)[1]
    listed = cli("users", "list").stdout
    assert "alice" in listed and "Alice Ltd" in listed and generated in listed

    created = cli("keys", "create", "--user", "alice", "--description", "Production").stdout
    admin_id, admin_secret = re.search(r"created ADMIN key (\S+) for user alice\nsecret \(shown once\): (\S+)",
                                       created).groups()
    inference = cli("keys", "create", "--user", "alice", "--type", "INFERENCE", "--description", "Batch jobs").stdout
    inference_id = re.search(r"created INFERENCE key (\S+)", inference)[1]
    one_line_error(cli("keys", "create", "--user", "nobody", code=1), "no user 'nobody'")
    one_line_error(cli("keys", "create", "--user", "alice", "--description", "x" * 65, code=1), "description")

    listed = cli("keys", "list", "--user", "alice").stdout
    for text in (admin_id, "ADMIN", "Production", admin_secret[-6:], inference_id, "INFERENCE", "Batch jobs"):
        assert text in listed
    assert admin_secret not in listed

    # The printed secret is the key: the API accepts it until it is revoked.
    assert client.get("/api/v1/billing/balance", headers=bearer(admin_secret)).status_code == 200
    assert cli("keys", "revoke", "--user", "alice", admin_id).stdout.strip() == f"revoked key {admin_id}"
    assert client.get("/api/v1/billing/balance", headers=bearer(admin_secret)).status_code == 401
    assert admin_id not in cli("keys", "list", "--user", "alice").stdout
    one_line_error(cli("keys", "revoke", "--user", "alice", admin_id, code=1), "no active key")


# -- ingest -----------------------------------------------------------------------------------------------------

def jsonl(*lines) -> str:
    return "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)


def test_ingest_jsonl_counts_duplicates_and_errors_by_line(cli, api, client, tmp_path):
    api.user("alice")
    secret = api.key("alice")["apiKey"]
    path = tmp_path / "records.jsonl"
    path.write_text(jsonl(
        {"userId": "alice", "model": "llama-3.3-70b", "requestId": "chatcmpl-1", "promptTokens": 339,
         "completionTokens": 227, "timestamp": "2025-03-01T10:00:00Z"},
        '{"userId": "alice", "sku": "custom", "units": 0.000001, "pricePerUnitUsd": 2.8, "idempotencyKey": "k1", '
        '"timestamp": "2025-03-01T10:00:01Z"}',
        '{"userId": "alice", "sku": ',
        "",
        {"userId": "bob", "sku": "custom", "units": 1, "pricePerUnitUsd": 1, "idempotencyKey": "k2"},
        {"userId": "alice", "model": "llama-3.3-70b", "requestId": "chatcmpl-2", "promptTokens": 10,
         "timestamp": "2025-03-01T10:00:02Z"},
    ))
    # Batches of 2: line numbers must survive the split into transactions.
    first = cli("ingest", path, "--batch", 2).stdout
    assert "recorded 3, duplicates 0, errors 2" in first
    assert "line 3: not valid JSON" in first and "line 5: unknown userId 'bob'" in first
    again = cli("ingest", path).stdout
    assert "recorded 0, duplicates 3, errors 2" in again

    rows = exact_body(client.get(HISTORY, headers=bearer(secret)))["data"]
    assert [(r["sku"], r["units"]) for r in rows] == [
        ("llama-3.3-70b-llm-input-mtoken", Decimal("0.000339")),
        ("llama-3.3-70b-llm-output-mtoken", Decimal("0.000227")),
        ("custom", Decimal("0.000001")),
        ("llama-3.3-70b-llm-input-mtoken", Decimal("0.00001"))]
    assert rows[2]["amount"] == Decimal("-0.0000028")


def test_ingest_jsonl_user_option_fills_records_without_one(cli, api, client, tmp_path):
    api.user("alice")
    secret = api.key("alice")["apiKey"]
    path = tmp_path / "records.ndjson"
    path.write_text(jsonl({"sku": "custom", "units": 2, "pricePerUnitUsd": 1, "idempotencyKey": "a"}))
    assert "line 1: userId is required" in cli("ingest", path).stdout
    assert "recorded 1, duplicates 0, errors 0" in cli("ingest", path, "--user", "alice").stdout
    one_line_error(cli("ingest", path, "--user", "nobody", code=1), "no user 'nobody'")
    assert len(client.get(HISTORY, headers=bearer(secret)).json()["data"]) == 1


@pytest.mark.parametrize("name, content, args, message", [
    ("other.csv", b"a,b,c\r\n1,2,3\r\n", ["--user", "alice"], "not a billing usage CSV"),
    ("empty.csv", b"", ["--user", "alice"], "not a billing usage CSV"),
    ("usage.csv", ",".join(CSV_HEADER).encode() + b"\r\n", [], "--user"),
    ("records.jsonl", b'{"userId": "alice"}\n\xff\xfe\n', [], "line 2 is not UTF-8"),
])
def test_ingest_refuses_a_file_it_cannot_parse(cli, api, tmp_path, name, content, args, message):
    api.user("alice")
    path = tmp_path / name
    path.write_bytes(content)
    one_line_error(cli("ingest", path, *args, code=1), message)


def test_ingest_of_a_missing_file_fails(cli, tmp_path):
    assert "does not exist" in cli("ingest", tmp_path / "missing.jsonl", code=2).output


# -- export -----------------------------------------------------------------------------------------------------

def api_csv(client, secret: str, **params) -> bytes:
    """Every page of the usage-history walk as CSV, concatenated with the header once."""
    headers = {**bearer(secret), "Accept": "text/csv"}
    response = client.get(HISTORY, params={"pageSize": 10, **params}, headers=headers)
    body = response.content
    while cursor := response.headers.get("x-next-cursor"):
        response = client.get(HISTORY, params={"cursor": cursor}, headers=headers)
        assert response.status_code == 200
        header, rest = response.content.split(b"\r\n", 1)
        assert header.decode() == ",".join(CSV_HEADER)
        body += rest
    return body


def csv_rows(data: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(data.decode(), newline="")))[1:]


TRICKY_NOTES = ['comma, "quotes" and\nnewline', "line\r\nbreak", "ünïcödé 日本語 — ok", '=HYPERLINK("http://x")',
                "+1 bonus", "-5 refund", "@SUM(A1)", "\ttab first", "'apostrophe first", ""]


def tricky_records(user: str) -> list[dict]:
    ts = "2025-03-01T10:00:{:02d}.{:03d}Z"
    out = [
        {"userId": user, "model": "llama-3.3-70b", "requestId": "chatcmpl-a", "promptTokens": 339,
         "completionTokens": 227, "inferenceExecutionTime": 2964, "timestamp": ts.format(0, 504),
         "notes": "API Inference"},
        {"userId": user, "model": "deepseek-v3.2", "requestId": "chatcmpl-b", "promptTokens": 1000,
         "cachedPromptTokens": 400, "completionTokens": 50, "timestamp": ts.format(1, 0)},
        {"userId": user, "sku": "legacy-sku", "units": Decimal(1), "pricePerUnitUsd": Decimal("0.5"),
         "amount": Decimal("-0.5"), "currency": "VCU", "idempotencyKey": "vcu", "timestamp": ts.format(2, 0)},
        {"userId": user, "sku": "refund", "units": Decimal(1), "pricePerUnitUsd": Decimal(0), "amount": Decimal("0.25"),
         "currency": "BUNDLED_CREDITS", "idempotencyKey": "refund", "timestamp": ts.format(2, 0)},
        {"userId": user, "sku": "=cmd|' /C calc'!A0", "units": Decimal("0.000001"), "pricePerUnitUsd": Decimal("2.8"),
         "requestId": "-request", "promptTokens": 5, "idempotencyKey": "guarded", "timestamp": ts.format(3, 0)},
        {"userId": user, "sku": "custom", "units": Decimal("3"), "pricePerUnitUsd": Decimal("0.001"),
         "inferenceExecutionTime": 12, "idempotencyKey": "no-request", "timestamp": ts.format(4, 0)},
    ]
    # Two rows with identical cells: both are rows, and both must come back.
    out += [{"userId": user, "sku": "twin", "units": Decimal("0.5"), "pricePerUnitUsd": Decimal(1),
             "idempotencyKey": f"twin-{i}", "timestamp": ts.format(5, 0)} for i in range(2)]
    out += [{"userId": user, "sku": "custom", "units": Decimal(i + 1), "pricePerUnitUsd": Decimal("0.000003"),
             "notes": notes, "idempotencyKey": f"note-{i}", "timestamp": ts.format(6 + i, 0)}
            for i, notes in enumerate(TRICKY_NOTES)]
    return out


def test_export_equals_the_api_csv_and_round_trips_through_ingest(cli, api, client, tmp_path):
    api.user("alice")
    secret = api.key("alice")["apiKey"]
    api.credit("alice", "DIEM", "0.01", "diem")  # some rows in DIEM, the rest in USD
    results = api.record(*tricky_records("alice"))
    assert results["errors"] == 0, results

    exported = tmp_path / "alice.csv"
    assert "exported 22 rows" in cli("export", "--user", "alice", "-o", exported).stderr
    served = api_csv(client, secret)
    assert exported.read_bytes() == served
    rows = csv_rows(served)
    assert len(rows) == 22 and {row[5] for row in rows} == {"DIEM", "USD", "VCU", "BUNDLED_CREDITS"}
    assert {row[6] for row in rows} >= {'comma, "quotes" and\nnewline', "'=HYPERLINK(\"http://x\")", "'-5 refund"}
    assert cli("export", "--user", "alice").stdout_bytes == served  # stdout carries the same bytes

    api.user("other")
    other_secret = api.key("other")["apiKey"]
    assert "recorded 22, duplicates 0, errors 0" in cli("ingest", exported, "--user", "other", "--batch", 7).stdout
    again = tmp_path / "other.csv"
    cli("export", "--user", "other", "-o", again)
    assert again.read_bytes() == served
    assert api_csv(client, other_secret) == served
    # The CSV alone would hide a kept formula guard ("'=x" exports as "'=x" either way): compare the rows themselves.
    assert exact_body(client.get(HISTORY, headers=bearer(other_secret)))["data"] == \
        exact_body(client.get(HISTORY, headers=bearer(secret)))["data"]
    assert "recorded 0, duplicates 22, errors 0" in cli("ingest", again, "--user", "other").stdout


def test_export_jsonl_is_the_api_rows(cli, api, client):
    api.user("alice")
    secret = api.key("alice")["apiKey"]
    api.record(*tricky_records("alice"))
    lines = cli("export", "--user", "alice", "--format", "jsonl").stdout_bytes.splitlines()
    assert [json.loads(line, parse_float=Decimal) for line in lines] == \
        exact_body(client.get(HISTORY, headers=bearer(secret)))["data"]


def test_export_filters_like_the_api(cli, api, client):
    api.user("alice")
    secret = api.key("alice")["apiKey"]
    api.credit("alice", "DIEM", "0.01", "diem")
    api.record(*tricky_records("alice"))
    bounds = {"start": "2025-03-01T10:00:01Z", "end": "2025-03-01T10:00:08Z"}
    for currency in ("USD", "DIEM", "VCU"):
        exported = cli("export", "--user", "alice", "--start", bounds["start"], "--end", bounds["end"],
                       "--currency", currency).stdout_bytes
        served = api_csv(client, secret, startTimestamp=bounds["start"], endTimestamp=bounds["end"], currency=currency)
        assert exported == served
        stamps = {row[0] for row in csv_rows(exported)}
        assert stamps and all("2025-03-01T10:00:01" <= stamp < "2025-03-01T10:00:08" for stamp in stamps), stamps
        assert {row[5] for row in csv_rows(exported)} == {currency}
    header_only = (",".join(CSV_HEADER) + "\r\n").encode()
    assert cli("export", "--user", "alice", "--start", "2030-01-01").stdout_bytes == header_only
    assert "must be after --start" in cli("export", "--user", "alice", "--start", "2025-03-02", "--end", "2025-03-01",
                                          code=2).output
    assert "--start" in cli("export", "--user", "alice", "--start", "yesterday", code=2).output


def test_export_chunks_keep_ties_in_order(api, store):
    """Rows sharing a timestamp (one event's SKUs) may straddle a chunk boundary; none is lost or repeated."""
    api.user("alice")
    api.record(*tricky_records("alice"))
    f = UsageFilter(store.get_user("alice").uid)
    everything = store.usage_after(f, None, 1000, store.max_row_id())
    for size in (1, 2, 3, 7):
        chunks = list(usage_chunks(store, f, chunk=size))
        assert all(len(chunk) <= size for chunk in chunks)
        assert [row for chunk in chunks for row in chunk] == everything


# -- serve's start-up checks ------------------------------------------------------------------------------------

@pytest.mark.parametrize("env, args, message", [
    ({}, [], "USAGE_LEDGER_OPERATOR_TOKEN is not set"),
    ({"USAGE_LEDGER_OPERATOR_TOKEN": "short-token"}, [], "USAGE_LEDGER_OPERATOR_TOKEN is too short"),
    ({"USAGE_LEDGER_OPERATOR_TOKEN": STRONG_TOKEN, "USAGE_LEDGER_DATABASE_URL": "sqlite:///./ledger.db"},
     ["--workers", "2"], "needs PostgreSQL"),
    ({"USAGE_LEDGER_OPERATOR_TOKEN": STRONG_TOKEN, "USAGE_LEDGER_DATABASE_URL": "mysql://db"}, [],
     "USAGE_LEDGER_DATABASE_URL"),
    ({"USAGE_LEDGER_OPERATOR_TOKEN": STRONG_TOKEN, "USAGE_LEDGER_CATALOG": "missing.toml"}, [], "catalogue"),
    ({"USAGE_LEDGER_OPERATOR_TOKEN": STRONG_TOKEN, "USAGE_LEDGER_DATABASE_URL": "sqlite:///missing-dir/x.db"}, [],
     "cannot use the database"),
    ({"USAGE_LEDGER_OPERATOR_TOKEN": STRONG_TOKEN,
      "USAGE_LEDGER_DATABASE_URL": "postgresql://ledger:hunter2@127.0.0.1:1/ledger"}, [], "cannot use"),
])
def test_serve_start_up_errors_are_one_line(cli, monkeypatch, env, args, message):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    # Should a check let a bad configuration through, fail here rather than serve (and hang) inside the test.
    monkeypatch.setattr(cli_module, "_serve", lambda *a: pytest.fail("serve started despite " + message))
    monkeypatch.setattr(cli_module.uvicorn, "run", lambda *a, **k: pytest.fail("serve started despite " + message))
    result = cli("serve", *args, code=1)
    one_line_error(result, message)
    assert "hunter2" not in result.output


def test_demo_no_serve_prints_credentials_and_keeps_to_its_own_file(cli, monkeypatch, tmp_path):
    default_db = tmp_path / "default.db"
    monkeypatch.setenv("USAGE_LEDGER_DATABASE_URL", f"sqlite:///{default_db}")
    monkeypatch.setenv("USAGE_LEDGER_OPERATOR_TOKEN", OPERATOR_TOKEN)
    secrets = []
    for _ in range(2):
        out = cli("demo", "--no-serve", "--port", 9999).stdout
        assert f"Operator token: {OPERATOR_TOKEN}" in out
        secrets.append(re.search(r"ADMIN API key:\s+(\S+)", out)[1])
        assert (f'curl -H "Authorization: Bearer {secrets[-1]}" '
                f'"http://127.0.0.1:9999/api/v1/billing/usage?limit=5"') in out
    assert not default_db.exists()
    store = SqlStore(f"sqlite:///{tmp_path / 'usage-ledger-demo.db'}")
    try:
        # Rebuilt, not appended to: one user with its three keys, and only the second run's key exists.
        assert store.list_users(0, 10)[1] == 1
        assert len(store.list_keys(store.get_user("demo").uid)) == 3
        assert store.key_by_hash(secret_hash(secrets[0])) is None
        assert store.key_by_hash(secret_hash(secrets[1])) is not None
    finally:
        store.close()
    one_line_error(cli("demo", "--no-serve", "--db", default_db, code=1), "configured database")
    assert not default_db.exists()


def test_rollups_rebuild_restores_what_ingest_maintained(cli, api, store):
    api.user("u1")
    api.record(*[{"userId": "u1", "sku": f"m{i % 3}-image-unit", "units": 1, "pricePerUnitUsd": 0.5,
                  "idempotencyKey": str(i), "timestamp": 1_790_812_800_000 + i * 5_000_000} for i in range(50)])
    api.credit("u1", "USD", "3", "top-up")
    maintained = store.rollup_contents()
    with store.engine.begin() as c:  # damage them, as a bad restore would
        c.exec_driver_sql("DELETE FROM rollup_daily")
        c.exec_driver_sql("UPDATE rollup_sku_hourly SET spend = spend + 1")
    assert store.rollup_contents() != maintained
    assert "rollups rebuilt" in cli("rollups", "rebuild").stdout
    assert store.rollup_contents() == maintained
