"""The rollups: narrow aggregates of usage_rows, one per question, kept in the same transaction as the rows.

Each is declared once here; ingest folds new rows into it (fold) and `usage-ledger rollups rebuild` recomputes it
from the rows with the same expressions (rebuild_sql), so the two can be checked against each other.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Iterable

from ..timeutil import MS_PER_DAY, MS_PER_HOUR

# Natural units per billing unit, by SKU suffix (millions of tokens or characters, thousands of characters).
_SCALE_SQL = ("(CASE WHEN sku LIKE '%-mtoken' OR sku LIKE '%-mchar' THEN 1000000 "
              "WHEN sku LIKE '%-kchar' THEN 1000 ELSE 1 END)")


def unit_scale(sku: str) -> int:
    if sku.endswith(("-mtoken", "-mchar")):
        return 1_000_000
    if sku.endswith("-kchar"):
        return 1000
    return 1


def natural_milli(sku: str, units_nano: int) -> int:
    """Natural units (tokens, characters, seconds, images) in thousandths; the division order keeps int64 safe."""
    return units_nano // 1000 * unit_scale(sku) // 1000


_KEYS: dict[str, tuple[str, Callable]] = {
    "uid": ("uid", lambda r: r.uid),
    "hour": (f"ms(ts) / {MS_PER_HOUR}", lambda r: r.ts // MS_PER_HOUR),
    "day": (f"ms(ts) / {MS_PER_DAY}", lambda r: r.ts // MS_PER_DAY),
    "currency": ("currency", lambda r: r.currency),
    "sku": ("sku", lambda r: r.sku),
    "kid": ("COALESCE(kid, 0)", lambda r: r.kid or 0),  # 0: usage without a key
}
_VALUES: dict[str, tuple[str, Callable]] = {
    "n": ("COUNT(*)", lambda r: 1),
    "spend": ("SUM(CASE WHEN amount < 0 THEN -amount ELSE 0 END)", lambda r: -r.amount if r.amount < 0 else 0),
    "units": ("SUM(units)", lambda r: r.units),
    "units_milli": (f"SUM(units / 1000 * {_SCALE_SQL} / 1000)", lambda r: natural_milli(r.sku, r.units)),
}


@dataclass(frozen=True)
class Rollup:
    table: str
    keys: tuple[str, ...]
    values: tuple[str, ...]
    debits_only: bool  # credits and refunds are not usage: left out of the spend-by-model/key rollups

    def fold(self, rows: Iterable) -> list[tuple]:
        key_fns = [_KEYS[k][1] for k in self.keys]
        value_fns = [_VALUES[v][1] for v in self.values]
        sums: dict[tuple, list[int]] = defaultdict(lambda: [0] * len(value_fns))
        for row in rows:
            if self.debits_only and row.amount > 0:
                continue
            bucket = sums[tuple(f(row) for f in key_fns)]
            for i, f in enumerate(value_fns):
                bucket[i] += f(row)
        return [(*key, *values) for key, values in sums.items()]

    def upsert_sql(self) -> str:
        columns = (*self.keys, *self.values)
        updates = ", ".join(f"{v} = {self.table}.{v} + excluded.{v}" for v in self.values)
        return (f"INSERT INTO {self.table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))}) "
                f"ON CONFLICT ({', '.join(self.keys)}) DO UPDATE SET {updates}")

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
