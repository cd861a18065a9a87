"""The naive peer: what a developer writes by hand over the same usage_rows table, kept here only for comparison.

Pages: a COUNT(*) for the total, then ORDER BY ... LIMIT/OFFSET (what fastapi templates and LiteLLM do).
Analytics: GROUP BY over the raw rows of the range, once per breakdown (by day, by model and day, by key and day).

The statements are written in the store's notation (`?`, `@ts` for a timestamp parameter in epoch ms) and turned into
the engine's SQL by Engine.sql(); the day is the engine's own hand-written UTC day of ts (Engine.utc_day).
"""

from __future__ import annotations

from typing import Any

from usage_ledger.money import SPEND_CURRENCIES

from .engines import Engine

_COLUMNS = ("id, ts, sku, price, units, amount, currency, notes, request_id, exec_ms, prompt_tokens, "
            "completion_tokens")


def _where(uid: int, currency: int | None, start: int | None, end: int | None) -> tuple[str, list]:
    clause, params = ["uid = ?"], [uid]
    if currency is not None:
        clause.append("currency = ?")
        params.append(currency)
    if start is not None:
        clause.append("ts >= @ts")
        params.append(start)
    if end is not None:
        clause.append("ts < @ts")
        params.append(end)
    return " AND ".join(clause), params


def page(engine: Engine, c: Any, uid: int, *, currency: int | None, start: int | None, end: int | None,
         descending: bool, page_number: int, limit: int) -> tuple[int, list]:
    where, params = _where(uid, currency, start, end)
    total = c.execute(engine.sql(f"SELECT COUNT(*) FROM usage_rows WHERE {where}"), params).fetchone()[0]
    order = "ts DESC, id DESC" if descending else "ts, id"
    rows = c.execute(engine.sql(f"SELECT {_COLUMNS} FROM usage_rows WHERE {where} ORDER BY {order} LIMIT ? OFFSET ?"),
                     [*params, limit, (page_number - 1) * limit]).fetchall()
    return total, rows


def analytics(engine: Engine, c: Any, uid: int, start: int, end: int) -> dict[str, list]:
    """Spend by day, by (day, model SKU) and by (day, key) over the raw debit rows of [start, end)."""
    where, params = _where(uid, None, start, end)
    where += f" AND amount < 0 AND currency IN ({', '.join(str(x) for x in SPEND_CURRENCIES)})"
    day, sql = engine.utc_day("ts"), engine.sql
    return {
        "byDate": c.execute(sql(f"SELECT {day} AS d, currency, SUM(-amount) FROM usage_rows WHERE {where} "
                                f"GROUP BY d, currency"), params).fetchall(),
        "byModel": c.execute(sql(f"SELECT {day} AS d, sku, currency, SUM(-amount), SUM(units) FROM usage_rows "
                                 f"WHERE {where} GROUP BY d, sku, currency"), params).fetchall(),
        "byKey": c.execute(sql(f"SELECT {day} AS d, kid, currency, SUM(-amount), SUM(units) FROM usage_rows "
                               f"WHERE {where} GROUP BY d, kid, currency"), params).fetchall(),
    }
