"""The rollups: narrow aggregates of usage_rows, one per question, kept in the same transaction as the rows.

Each is declared once here; ingest folds new rows into it (fold) and `usage-ledger rollups rebuild` recomputes it
from the rows with the same expressions (rebuild_sql), so the two can be checked against each other.
"""

from __future__ import annotations

from operator import add, itemgetter
from dataclasses import dataclass
from typing import Iterable

from ..catalog import unit_scale
from ..timeutil import MS_PER_DAY, MS_PER_HOUR

# catalog.unit_scale in SQL: natural units per billing unit, by the SKU's suffix.
_SCALE_SQL = ("(CASE WHEN sku LIKE '%-mtoken' OR sku LIKE '%-mchar' THEN 1000000 "
              "WHEN sku LIKE '%-kchar' THEN 1000 ELSE 1 END)")


def natural_milli(sku: str, units_nano: int) -> int:
    """Natural units (tokens, characters, seconds, images) in thousandths; the division order keeps int64 safe."""
    return units_nano // 1000 * unit_scale(sku) // 1000


# Each key and value: its SQL over usage_rows (for rebuilds) and its position in fields() (for ingest).
_KEYS: dict[str, tuple[str, int]] = {
    "uid": ("uid", 0),
    "hour": (f"ms(ts) / {MS_PER_HOUR}", 1),
    "day": (f"ms(ts) / {MS_PER_DAY}", 2),
    "currency": ("currency", 3),
    "sku": ("sku", 4),
    "kid": ("COALESCE(kid, 0)", 5),  # 0: usage without a key
}
_VALUES: dict[str, tuple[str, int]] = {
    "n": ("COUNT(*)", 6),
    "spend": ("SUM(CASE WHEN amount < 0 THEN -amount ELSE 0 END)", 7),
    "units": ("SUM(units)", 8),
    "units_milli": (f"SUM(units / 1000 * {_SCALE_SQL} / 1000)", 9),
}


def fields(row) -> tuple:
    """Everything any rollup keys or sums a row by, computed once per row (the values mirror _VALUES' SQL)."""
    return (row.uid, row.ts // MS_PER_HOUR, row.ts // MS_PER_DAY, row.currency, row.sku, row.kid or 0, 1,
            -row.amount if row.amount < 0 else 0, row.units, natural_milli(row.sku, row.units))


@dataclass(frozen=True)
class Rollup:
    table: str
    keys: tuple[str, ...]
    values: tuple[str, ...]
    debits_only: bool  # credits and refunds are not usage: left out of the spend-by-model/key rollups

    def __post_init__(self) -> None:
        assert len(self.values) >= 2, "fold() reads the values as a tuple"

    def fold(self, rows: Iterable[tuple]) -> list[tuple]:
        """Sums of `rows` (each a fields() tuple; debits only where the rollup says so) by this rollup's keys, as
        upsert parameters."""
        key_of = itemgetter(*(_KEYS[k][1] for k in self.keys))
        values_of = itemgetter(*(_VALUES[v][1] for v in self.values))  # every rollup sums two values or more
        sums: dict[tuple, tuple[int, ...]] = {}
        for row in rows:
            key = key_of(row)
            bucket = sums.get(key)
            sums[key] = values_of(row) if bucket is None else tuple(map(add, bucket, values_of(row)))
        return [(*key, *values) for key, values in sums.items()]

    @property
    def columns(self) -> tuple[str, ...]:
        return (*self.keys, *self.values)

    def on_conflict(self) -> str:
        """What an upsert of fold()'s output adds to an existing row."""
        updates = ", ".join(f"{v} = {self.table}.{v} + excluded.{v}" for v in self.values)
        return f"ON CONFLICT ({', '.join(self.keys)}) DO UPDATE SET {updates}"

    def rebuild_sql(self) -> list[str]:
        keys = [_KEYS[k][0] for k in self.keys]
        where = " WHERE amount <= 0" if self.debits_only else ""
        return [f"DELETE FROM {self.table}",
                f"INSERT INTO {self.table} ({', '.join((*self.keys, *self.values))}) "
                f"SELECT {', '.join(keys)}, {', '.join(_VALUES[v][0] for v in self.values)} FROM usage_rows{where} "
                f"GROUP BY {', '.join(keys)}"]


# Pages and byDate count every row per (user, hour|day, currency); spend by model and key come from their own
# narrow tables, daily for UTC and hourly where a timezone cuts days elsewhere.
PAGE_HOURLY = Rollup("rollup_hourly", ("uid", "hour", "currency"), ("n", "spend"), debits_only=False)
PAGE_DAILY = Rollup("rollup_daily", ("uid", "day", "currency"), ("n", "spend"), debits_only=False)
KEY_DAILY = Rollup("rollup_key_daily", ("uid", "kid", "day", "currency"), ("n", "spend", "units_milli"), True)
KEY_HOURLY = Rollup("rollup_key_hourly", ("uid", "kid", "hour", "currency"), ("spend", "units_milli"), True)
SKU_DAILY = Rollup("rollup_sku_daily", ("uid", "day", "sku", "currency"), ("spend", "units"), True)
SKU_HOURLY = Rollup("rollup_sku_hourly", ("uid", "hour", "sku", "currency"), ("spend", "units"), True)
ROLLUPS = (PAGE_HOURLY, PAGE_DAILY, KEY_DAILY, KEY_HOURLY, SKU_DAILY, SKU_HOURLY)
