"""The PostgreSQL half of the suite: a fresh database per test run on the server at USAGE_LEDGER_TEST_POSTGRES_URL."""

from __future__ import annotations

import os
import uuid

import psycopg
import pytest

ADMIN_URL = os.environ.get("USAGE_LEDGER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
# Tables a test may write; meta (the cursor secret) and alembic_version stay.
LEDGER_TABLES = ("usage_rows", "idempotency_keys", "balances", "rollup_hourly", "rollup_daily", "rollup_key_daily",
                 "rollup_key_hourly", "rollup_sku_daily", "rollup_sku_hourly", "api_keys", "users")


def _with_database(url: str, name: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{name}"


class ScratchDatabase:
    """Created on first use, dropped at the end of the run."""

    def __init__(self) -> None:
        self.name = f"usage_ledger_test_{uuid.uuid4().hex[:12]}"
        self.url: str | None = None
        self.unavailable: str | None = None

    def ensure(self) -> str:
        if self.unavailable:
            pytest.skip(self.unavailable)
        if self.url is None:
            try:
                with psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=3) as conn:
                    conn.execute(f'CREATE DATABASE "{self.name}"')
            except psycopg.Error as exc:
                self.unavailable = (f"PostgreSQL half skipped: no server at {ADMIN_URL} "
                                    f"({str(exc).strip().splitlines()[0]}); set USAGE_LEDGER_TEST_POSTGRES_URL")
                pytest.skip(self.unavailable)
            self.url = _with_database(ADMIN_URL, self.name)
        return self.url

    def truncate(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f"TRUNCATE {', '.join(LEDGER_TABLES)} RESTART IDENTITY CASCADE")

    def drop(self) -> None:
        if self.url is None:
            return
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        self.url = None
