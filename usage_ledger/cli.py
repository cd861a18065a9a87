"""`usage-ledger`: serve, migrate, demo, users, keys, ingest, export (API.md §8).

Settings come from the environment (USAGE_LEDGER_*); every command that touches the database migrates it first.
"""

from __future__ import annotations

import secrets
import sys
import time
import uuid
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated, Callable, Iterator, NoReturn, Optional

import sqlalchemy as sa
import typer
import uvicorn
from alembic.runtime.migration import MigrationContext
from alembic.util.exc import CommandError
from fastapi import FastAPI
from pydantic import ValidationError
from rich import box
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from . import demo as demo_data
from .api.errors import ApiError
from .api.keys import CreateKey, create_key_for
from .api.ledger import UserIn
from .app import create_app
from .keys import KEY_TYPES
from .money import CURRENCY_CODES
from .services import Services
from .settings import Settings
from .store.base import Conflict, StoreError, UsageFilter, User
from .store.sql import SqlStore
from .timeutil import TimeParseError, iso_ms, now_ms, parse_instant
from .transfer import TransferError, export_usage, ingest_file

app = typer.Typer(name="usage-ledger", no_args_is_help=True, pretty_exceptions_show_locals=False,
                  help="Metering and billing-usage ledger for AI inference APIs, wire-compatible with Venice.ai.")
users_app = typer.Typer(no_args_is_help=True, help="Users of the ledger.")
keys_app = typer.Typer(no_args_is_help=True, help="A user's API keys.")
app.add_typer(users_app, name="users")
app.add_typer(keys_app, name="keys")
rollups_app = typer.Typer(no_args_is_help=True, help="The aggregates that pages and analytics read.")
app.add_typer(rollups_app, name="rollups")

Currency = Enum("Currency", {code: code for code in CURRENCY_CODES}, type=str)
KeyType = Enum("KeyType", {kind: kind for kind in KEY_TYPES}, type=str)


class Format(str, Enum):
    csv = "csv"
    jsonl = "jsonl"


# -- start-up ---------------------------------------------------------------------------------------------------

def _fail(message: str) -> NoReturn:
    typer.echo(f"usage-ledger: error: {message}", err=True)
    raise typer.Exit(1)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _invalid(exc: ValidationError, env: bool = False) -> str:
    def name(loc: tuple) -> str:
        return f"USAGE_LEDGER_{loc[0]}".upper() if env else ".".join(map(str, loc))

    return "; ".join(f"{name(e['loc'])}: {e['msg'].removeprefix('Value error, ')}" for e in exc.errors())


@contextmanager
def _startup() -> Iterator[None]:
    """A start-up problem is one line on stderr and exit code 1, never a trace (API.md §8)."""
    try:
        yield
    except ValidationError as exc:
        _fail(_invalid(exc, env=True))
    except sa.exc.SQLAlchemyError as exc:
        _fail(f"cannot use the database: {_first_line(getattr(exc, 'orig', None) or exc)}")
    except (ValueError, StoreError, CommandError, OSError) as exc:  # CatalogError and a weak token are ValueErrors
        _fail(_first_line(exc))


@contextmanager
def _services(settings: Settings | None = None) -> Iterator[Services]:
    """Settings, the store migrated to the current revision, and the catalogue."""
    with _startup():
        settings = settings or Settings()
        store = SqlStore(settings.database_url)
        store.migrate()
        services = Services.build(settings, store=store)
    try:
        yield services
    finally:
        store.close()


class _Server(uvicorn.Server):
    """uvicorn's server, saying so on stdout once it listens: scripts and tests wait for that line."""

    def __init__(self, config: uvicorn.Config, announce: str) -> None:
        super().__init__(config)
        self.announce = announce

    async def startup(self, sockets=None) -> None:
        await super().startup(sockets)
        if self.started:
            typer.echo(self.announce)


def _serve(asgi: FastAPI, host: str, port: int, name: str, access_log: bool = False) -> None:
    server = _Server(uvicorn.Config(asgi, host=host, port=port, access_log=access_log),
                     f"{name} serving on http://{host}:{port}")
    server.run()
    if not server.started:  # uvicorn has logged why (a port in use, ...)
        raise typer.Exit(1)


HostOption = Annotated[str, typer.Option(help="Address to listen on.")]
PortOption = Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")]
DemoFile = Annotated[Path, typer.Option("--db", help="Demo database file, replaced on each run.")]
NoServe = Annotated[bool, typer.Option("--no-serve", help="Build the demo and print how to use it, do not serve.")]
# Off by default: a log line per request cost a quarter of the server's time in the benchmark; /metrics counts them.
AccessLog = Annotated[bool, typer.Option("--access-log", help="Log every request (uvicorn's access log).")]


@app.command()
def serve(host: HostOption = "127.0.0.1", port: PortOption = 8000,
          workers: Annotated[int, typer.Option(min=1, help="Processes; above 1 needs PostgreSQL.")] = 1,
          access_log: AccessLog = False) -> None:
    """Apply pending migrations, then serve the API."""
    with _startup():
        settings = Settings()
        if workers > 1 and settings.database_url.startswith("sqlite"):
            _fail("--workers above 1 needs PostgreSQL: SQLite has a single writer, so serve it with one worker")
        settings.require_operator_token()
    with _services(settings) as services:
        if workers > 1:  # each worker process builds its own services from the same environment
            uvicorn.run("usage_ledger.app:create_app", factory=True, host=host, port=port, workers=workers,
                        access_log=access_log)
        else:
            _serve(create_app(services), host, port, "usage-ledger", access_log)


def _revision(store: SqlStore) -> str | None:
    with store.engine.connect() as c:
        return MigrationContext.configure(c).get_current_revision()


@app.command()
def migrate() -> None:
    """Apply pending database migrations (safe to repeat)."""
    with _startup():
        store = SqlStore(Settings().database_url)
        before = _revision(store)
        store.migrate()
        after = _revision(store)
    store.close()
    change = "up to date" if before == after else f"was {before or 'empty'}"
    typer.echo(f"database at revision {after} ({change})")


def _sqlite_file(url: str) -> Path | None:
    return Path(url.removeprefix("sqlite:///")).resolve() if url.startswith("sqlite:///") else None


@app.command()
def demo(host: HostOption = "127.0.0.1", port: PortOption = 8000, db: DemoFile = Path("usage-ledger-demo.db"),
         no_serve: NoServe = False) -> None:
    """Build a fresh database of demo data in its own file, print how to query it, and serve it."""
    with _startup():
        env = Settings()
        if _sqlite_file(env.database_url) == db.resolve():
            _fail(f"{db} is the configured database (USAGE_LEDGER_DATABASE_URL); the demo replaces its file")
        # The demo's models come from the packaged catalogue, whatever USAGE_LEDGER_CATALOG says.
        settings = Settings(database_url=f"sqlite:///{db.resolve()}", catalog=None,
                            operator_token=env.operator_token or secrets.token_urlsafe(32))
        settings.require_operator_token()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
    with _services(settings) as services:
        data = demo_data.build(services)
        base = f"http://{host}:{port}"
        typer.echo(f"Demo database: {db.resolve()} (user {data.user_id}, {data.rows:,} usage rows)")
        typer.echo(f"Operator token: {settings.operator_token}")
        typer.echo(f"ADMIN API key:  {data.admin_key}")
        typer.echo("Try:")
        typer.echo(f'  curl -H "Authorization: Bearer {data.admin_key}" "{base}/api/v1/billing/usage?limit=5"')
        typer.echo(f"Dashboard: {base}/ (paste the ADMIN key)")
        if not no_serve:
            _serve(create_app(services), host, port, "usage-ledger demo")


@rollups_app.command("rebuild")
def rollups_rebuild() -> None:
    """Recompute every rollup exactly from the usage rows (after a restore, or to check them)."""
    with _services() as services:
        started = time.perf_counter()
        services.store.rebuild_rollups()
        typer.echo(f"rollups rebuilt from the usage rows in {time.perf_counter() - started:.1f} s")


# -- users and keys ---------------------------------------------------------------------------------------------

def _print_table(table: Table) -> None:
    console = Console()
    if not console.is_terminal:  # piped: no screen to fit, and a cut id could not be copied
        console.width = max(console.width, 200)
    console.print(table)


def _user(store: SqlStore, user_id: str) -> User:
    user = store.get_user(user_id)
    if user is None:
        _fail(f"no user '{user_id}'")
    return user


def _when(ms: int | None) -> str:
    return "" if ms is None else iso_ms(ms)[:16].replace("T", " ")


UserOption = Annotated[str, typer.Option("--user", help="The user's id.")]


@users_app.command("create")
def users_create(user_id: Annotated[Optional[str], typer.Option("--id", help="User id (a uuid when absent).")] = None,
                 name: Annotated[str, typer.Option(help="Display name.")] = "") -> None:
    """Create a user."""
    try:
        body = UserIn(userId=user_id, name=name)
    except ValidationError as exc:
        _fail(_invalid(exc))
    with _services() as services:
        try:
            user = services.store.create_user(body.userId or str(uuid.uuid4()), body.name, now_ms())
        except Conflict:
            _fail(f"user '{body.userId}' already exists")
    typer.echo(f"created user {user.user_id}")


@users_app.command("list")
def users_list() -> None:
    """List users."""
    table = Table("ID", "Name", "Created", box=box.SIMPLE_HEAD)
    with _services() as services:
        offset = 0
        while users := services.store.list_users(offset, 500)[0]:
            for user in users:
                table.add_row(user.user_id, user.name, _when(user.created_at))
            offset += len(users)
    _print_table(table)


@keys_app.command("create")
def keys_create(user: UserOption, key_type: Annotated[KeyType, typer.Option("--type")] = KeyType.ADMIN,
                description: Annotated[str, typer.Option(help="At most 64 characters.")] = "") -> None:
    """Create an API key; its secret is printed once."""
    try:
        body = CreateKey(apiKeyType=key_type.value, description=description)
    except ValidationError as exc:
        _fail(_invalid(exc))
    with _services() as services:
        try:
            created = create_key_for(services, _user(services.store, user).uid, body)["data"]
        except ApiError as exc:
            _fail(exc.body["error"])
    typer.echo(f"created {created['apiKeyType']} key {created['id']} for user {user}")
    typer.echo(f"secret (shown once): {created['apiKey']}")


@keys_app.command("list")
def keys_list(user: UserOption) -> None:
    """List a user's active API keys."""
    table = Table("ID", "Type", "Description", "Last 6", "Created", "Last used", "Expires", box=box.SIMPLE_HEAD)
    table.columns[0].overflow = "fold"  # squeezed, an id wraps rather than losing characters
    with _services() as services:
        for key in services.store.list_keys(_user(services.store, user).uid):
            table.add_row(key.id, key.api_key_type, key.description, key.last6, _when(key.created_at),
                          _when(key.last_used_at), _when(key.expires_at))
    _print_table(table)


@keys_app.command("revoke")
def keys_revoke(user: UserOption, key_id: Annotated[str, typer.Argument(help="The key's id.")]) -> None:
    """Revoke an API key: it stays in the history but is no longer accepted."""
    with _services() as services:
        if not services.store.revoke_key(_user(services.store, user).uid, key_id, now_ms()):
            _fail(f"user '{user}' has no active key '{key_id}'")
    typer.echo(f"revoked key {key_id}")


# -- files ------------------------------------------------------------------------------------------------------

@contextmanager
def _progress(description: str, total: int, *columns) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr (stdout may carry the export), shown only on a terminal; yields `done(n)`."""
    console = Console(stderr=True)
    with Progress(TextColumn("{task.description}"), BarColumn(), *columns, TimeRemainingColumn(), console=console,
                  disable=not console.is_terminal) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n: progress.update(task, completed=n)


InputFile = Annotated[Path, typer.Argument(
    exists=True, dir_okay=False, readable=True,
    help="JSONL records (those of POST /api/v1/ledger/records) or a CSV export of GET /api/v1/billing/usage.")]
IngestUser = Annotated[Optional[str], typer.Option(
    "--user", help="Owner of CSV rows (required for CSV); the userId of JSONL records that have none.")]
BatchSize = Annotated[int, typer.Option(min=1, max=10_000, help="Records per write transaction.")]


@app.command()
def ingest(file: InputFile, user: IngestUser = None, batch: BatchSize = 1000) -> None:
    """Record a file of usage; re-running it reports its records as duplicates."""
    with _services() as services:
        if user is not None:
            _user(services.store, user)
        with _progress(f"ingest {file.name}", file.stat().st_size, DownloadColumn()) as done:
            try:
                summary = ingest_file(services.store, services.catalog, file, user_id=user, batch_size=batch,
                                      progress=done)
            except TransferError as exc:
                _fail(str(exc))
    typer.echo(f"recorded {summary.recorded}, duplicates {summary.duplicates}, errors {summary.errors}")
    for line, why in summary.first_errors:
        typer.echo(f"  line {line}: {why}")
    if summary.errors > len(summary.first_errors):
        typer.echo(f"  ... and {summary.errors - len(summary.first_errors)} more")


def _instant(text: str | None, option: str) -> int | None:
    try:
        return None if text is None else parse_instant(text)
    except TimeParseError as exc:
        raise typer.BadParameter(f"{text!r} {exc}", param_hint=option) from None


Start = Annotated[Optional[str], typer.Option(help="Inclusive: ISO 8601, or a date (its first millisecond).")]
End = Annotated[Optional[str], typer.Option(help="Exclusive: ISO 8601, or a date (its first millisecond).")]
CurrencyOption = Annotated[Optional[Currency], typer.Option(help="Only rows in this currency.")]
FormatOption = Annotated[Format, typer.Option(
    "--format", help="csv: the CSV of GET /api/v1/billing/usage; jsonl: its JSON rows, one a line.")]
Output = Annotated[Optional[Path], typer.Option("-o", "--output", help="File to write (default: stdout).")]


@app.command()
def export(user: UserOption, start: Start = None, end: End = None, currency: CurrencyOption = None,
           fmt: FormatOption = Format.csv, output: Output = None) -> None:
    """Write a user's usage rows, oldest first."""
    start_ms, end_ms = _instant(start, "--start"), _instant(end, "--end")
    if start_ms is not None and end_ms is not None and end_ms <= start_ms:
        raise typer.BadParameter("must be after --start", param_hint="--end")
    with _services() as services:
        code = None if currency is None else CURRENCY_CODES[currency.value]
        f = UsageFilter(_user(services.store, user).uid, code, start_ms, end_ms)
        with _progress("export", services.store.count(f), MofNCompleteColumn()) as done:
            if output is None:
                written = export_usage(services.store, f, sys.stdout.buffer, fmt.value, done)
            else:
                # Written aside and renamed at the end: an interrupted export never looks like a complete one.
                partial = output.with_name(output.name + ".part")
                try:
                    with partial.open("wb") as out:
                        written = export_usage(services.store, f, out, fmt.value, done)
                    partial.replace(output)
                except OSError as exc:
                    _fail(f"cannot write {output}: {exc.strerror or exc}")
    typer.echo(f"exported {written} rows" + (f" to {output}" if output else ""), err=True)


if __name__ == "__main__":
    app()
