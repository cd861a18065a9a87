"""Secrets (issue 6): key secrets are never stored or logged in clear, credentials are compared in constant time, and
`serve` demands a strong operator token while `demo` makes its own.

Keys are created through the real server (the operator's route and the user's own POST /api_keys) and through the
CLI (`usage-ledger keys create`); then the SQLite database file, its -wal and -shm, the server's captured stdout and
stderr, the CLI's stderr and every later API answer are searched for each secret (and for the operator token): none
holds one. The database does hold each secret's SHA-256, which shows that the search looked in the right place.
"""

from __future__ import annotations

import hashlib
import hmac
import subprocess
from pathlib import Path

import pytest

from conftest import OPERATOR_TOKEN, bearer
from ledger_process import LedgerProcess, cli, clean_env
from usage_ledger.keys import new_secret


def _database_bytes(db: Path) -> bytes:
    return b"".join(p.read_bytes() for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm")) if p.exists())


def _assert_nowhere(secret: str, haystacks: dict[str, bytes]) -> None:
    needles = {secret.encode(), secret.removeprefix("ul_").encode(), secret.encode().hex().encode()}
    for name, haystack in haystacks.items():
        for needle in needles:
            assert needle not in haystack, f"a secret in clear in {name}"


def test_secrets_are_never_stored_or_logged_in_clear(tmp_path):
    db = tmp_path / "secrets.db"
    url = f"sqlite:///{db}"
    server = LedgerProcess(tmp_path, url, auth_failure_limit="0")
    secrets: list[str] = []
    answers: list[bytes] = []
    try:
        server.start()
        with server.client() as http:
            assert http.post("/api/v1/ledger/users", json={"userId": "keeper"}, headers=server.operator).status_code == 201
            created = http.post("/api/v1/ledger/users/keeper/api_keys", headers=server.operator,
                                json={"apiKeyType": "ADMIN", "description": "by the operator"}).json()["data"]
            secrets.append(created["apiKey"])
            mine = http.post("/api/v1/api_keys", headers=bearer(secrets[0]),
                             json={"apiKeyType": "INFERENCE", "description": "by the user"}).json()["data"]
            secrets.append(mine["apiKey"])
            assert mine["id"] and len(mine["apiKey"]) == 46

            cli_run = subprocess.run([*cli(), "keys", "create", "--user", "keeper", "--description", "by the CLI"],
                                     cwd=tmp_path, env=clean_env(database_url=url), capture_output=True, timeout=60)
            assert cli_run.returncode == 0, cli_run.stderr
            shown = [line for line in cli_run.stdout.decode().splitlines() if line.startswith("secret (shown once): ")]
            assert len(shown) == 1
            secrets.append(shown[0].removeprefix("secret (shown once): "))
            assert secrets[2] not in cli_run.stderr.decode()

            # Use every key, right and wrong, so that whatever the server logs about authentication is logged.
            for secret in secrets:
                answers.append(http.get("/api/v1/billing/balance", headers=bearer(secret)).content)
            answers.append(http.get("/api/v1/billing/balance", headers=bearer(secrets[0][:-1] + "x")).content)
            answers.append(http.get("/api/v1/api_keys", headers=bearer(secrets[0])).content)
            answers.append(http.get("/api/v1/billing/usage", headers=bearer(secrets[0])).content)
            answers.append(http.get("/metrics").content)
            answers.append(http.get("/api/v1/ledger/users/keeper", headers=server.operator).content)
            listed = http.get("/api/v1/api_keys", headers=bearer(secrets[0])).json()["data"]
            assert {k["last6Chars"] for k in listed} == {s[-6:] for s in secrets}  # last6 is fine

        running = {"database (running)": _database_bytes(db), "answers": b"".join(answers)}
        server.stop()
        at_rest = {"database (stopped)": _database_bytes(db), "server log": server.logs().encode()}
        for secret in secrets:
            _assert_nowhere(secret, {**running, **at_rest})
            assert hashlib.sha256(secret.encode()).digest() in running["database (running)"] + at_rest[
                "database (stopped)"], "the search looked at the wrong file"
        _assert_nowhere(server.token, {**running, **at_rest})
        assert "Traceback" not in server.logs()
    finally:
        server.kill()


def test_secrets_carry_256_random_bits():
    made = {new_secret() for _ in range(1000)}
    assert len(made) == 1000
    assert all(s.startswith("ul_") and len(s) == 46 for s in made)


def test_credentials_are_compared_in_constant_time(client, api, monkeypatch):
    api.user("timing")
    secret = api.key("timing")["apiKey"]
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a, b):
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    assert client.get("/api/v1/ledger/users", headers=bearer(OPERATOR_TOKEN)).status_code == 200
    assert (OPERATOR_TOKEN.encode(), OPERATOR_TOKEN.encode()) in compared
    compared.clear()
    assert client.get("/api/v1/ledger/users", headers=bearer(OPERATOR_TOKEN[:-1] + "x")).status_code == 401
    assert len(compared) == 1
    compared.clear()
    assert client.get("/api/v1/billing/balance", headers=bearer(secret)).status_code == 200
    digest = hashlib.sha256(secret.encode()).digest()
    assert (digest, digest) in compared


@pytest.mark.parametrize("token,why", [(None, "is not set"), ("", "is not set"), ("x" * 31, "too short")])
def test_serve_refuses_a_missing_or_short_operator_token(tmp_path, token, why):
    env = clean_env(database_url=f"sqlite:///{tmp_path / 'refused.db'}")
    if token is not None:
        env["USAGE_LEDGER_OPERATOR_TOKEN"] = token
    run = subprocess.run([*cli(), "serve", "--port", "1"], cwd=tmp_path, env=env, capture_output=True, timeout=60)
    assert run.returncode != 0
    err = run.stderr.decode().strip()
    assert len(err.splitlines()) == 1 and "USAGE_LEDGER_OPERATOR_TOKEN" in err and why in err, err
    assert "Traceback" not in err and run.stdout == b""
    assert not (tmp_path / "refused.db").exists()  # refused before touching the database


def test_demo_works_without_an_operator_token(tmp_path):
    run = subprocess.run([*cli(), "demo", "--no-serve", "--db", str(tmp_path / "demo.db")], cwd=tmp_path,
                         env=clean_env(), capture_output=True, timeout=120)
    assert run.returncode == 0, run.stderr
    token = next(line.split()[-1] for line in run.stdout.decode().splitlines() if line.startswith("Operator token:"))
    assert len(token) >= 32
