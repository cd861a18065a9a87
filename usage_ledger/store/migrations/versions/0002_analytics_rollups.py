"""Analytics rollups: spend and units by (user, day|hour, sku, currency) and by (user, key, day|hour, currency).

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# Frozen copies of usage_ledger.store.rollups' rebuild statements as of this revision, so that the migration keeps
# meaning the same thing when the rollups change later.
_SCALE = ("(CASE WHEN sku LIKE '%-mtoken' OR sku LIKE '%-mchar' THEN 1000000 "
          "WHEN sku LIKE '%-kchar' THEN 1000 ELSE 1 END)")
_SPEND = "SUM(CASE WHEN amount < 0 THEN -amount ELSE 0 END)"


def _backfill(ms: str) -> tuple[str, ...]:
    """`ms` reads usage_rows.ts as epoch milliseconds on this engine."""
    hour, day = f"{ms} / 3600000", f"{ms} / 86400000"
    return (
        "DELETE FROM rollup_key_daily",
        f"INSERT INTO rollup_key_daily (uid, kid, day, currency, n, spend, units_milli) SELECT uid, COALESCE(kid, 0), "
        f"{day}, currency, COUNT(*), {_SPEND}, SUM(units / 1000 * {_SCALE} / 1000) FROM usage_rows "
        f"WHERE amount <= 0 GROUP BY uid, COALESCE(kid, 0), {day}, currency",
        f"INSERT INTO rollup_key_hourly (uid, kid, hour, currency, spend, units_milli) SELECT uid, COALESCE(kid, 0), "
        f"{hour}, currency, {_SPEND}, SUM(units / 1000 * {_SCALE} / 1000) FROM usage_rows WHERE amount <= 0 "
        f"GROUP BY uid, COALESCE(kid, 0), {hour}, currency",
        f"INSERT INTO rollup_sku_daily (uid, day, sku, currency, spend, units) SELECT uid, {day}, sku, currency, "
        f"{_SPEND}, SUM(units) FROM usage_rows WHERE amount <= 0 GROUP BY uid, {day}, sku, currency",
        f"INSERT INTO rollup_sku_hourly (uid, hour, sku, currency, spend, units) SELECT uid, {hour}, sku, currency, "
        f"{_SPEND}, SUM(units) FROM usage_rows WHERE amount <= 0 GROUP BY uid, {hour}, sku, currency",
    )


def _money(name: str) -> sa.Column:
    return sa.Column(name, sa.BigInteger(), nullable=False)


def upgrade() -> None:
    op.add_column("rollup_key_daily", sa.Column("units_milli", sa.BigInteger(), nullable=False, server_default="0"))
    op.create_table(
        "rollup_key_hourly",
        sa.Column("uid", sa.BigInteger(), nullable=False), sa.Column("kid", sa.BigInteger(), nullable=False),
        sa.Column("hour", sa.BigInteger(), nullable=False), sa.Column("currency", sa.SmallInteger(), nullable=False),
        _money("spend"), _money("units_milli"),
        sa.PrimaryKeyConstraint("uid", "kid", "hour", "currency"),
        sqlite_with_rowid=False,
    )
    for name, grain in (("rollup_sku_daily", "day"), ("rollup_sku_hourly", "hour")):
        op.create_table(
            name,
            sa.Column("uid", sa.BigInteger(), nullable=False), sa.Column(grain, sa.BigInteger(), nullable=False),
            sa.Column("sku", sa.String(256), nullable=False), sa.Column("currency", sa.SmallInteger(), nullable=False),
            _money("spend"), _money("units"),
            sa.PrimaryKeyConstraint("uid", grain, "sku", "currency"),
            sqlite_with_rowid=False,
        )
    postgres = op.get_bind().dialect.name == "postgresql"
    for statement in _backfill("(EXTRACT(EPOCH FROM ts) * 1000)::bigint" if postgres else "ts"):
        op.execute(sa.text(statement.replace("%", "%%") if postgres else statement))


def downgrade() -> None:
    for name in ("rollup_sku_hourly", "rollup_sku_daily", "rollup_key_hourly"):
        op.drop_table(name)
    with op.batch_alter_table("rollup_key_daily") as batch:
        batch.drop_column("units_milli")
