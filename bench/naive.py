"""The naive peer: what a developer writes by hand over the same usage_rows table, kept here only for comparison.

Pages: a COUNT(*) for the total, then ORDER BY ... LIMIT/OFFSET (what fastapi templates and LiteLLM do).
Analytics: GROUP BY over the raw rows of the range, once per breakdown (by day, by model and day, by key and day).
"""

from __future__ import annotations

from typing import Any

from usage_ledger.money import SPEND_CURRENCIES
from usage_ledger.timeutil import MS_PER_DAY

_COLUMNS = ("id, ts, sku, price, units, amount, currency, notes, request_id, exec_ms, prompt_tokens, "
            "completion_tokens")


def _where(uid: int, currency: int | None, start: int | None, end: int | None) -> tuple[str, list]:
    clause, params = ["uid = ?"], [uid]
    if currency is not None:
        clause.append("currency = ?")
        params.append(currency)
    if start is not None:
        clause.append("ts >= ?")
        params.append(start)
    if end is not None:
        clause.append("ts < ?")
        params.append(end)
    return " AND ".join(clause), params


def page(c: Any, uid: int, *, currency: int | None, start: int | None, end: int | None, descending: bool,
         page_number: int, limit: int) -> tuple[int, list]:
    where, params = _where(uid, currency, start, end)
    total = c.execute(f"SELECT COUNT(*) FROM usage_rows WHERE {where}", params).fetchone()[0]
    order = "ts DESC, id DESC" if descending else "ts, id"
    rows = c.execute(f"SELECT {_COLUMNS} FROM usage_rows WHERE {where} ORDER BY {order} LIMIT ? OFFSET ?",
                     [*params, limit, (page_number - 1) * limit]).fetchall()
    return total, rows


def analytics(c: Any, uid: int, start: int, end: int) -> dict[str, list]:
    """Spend by day, by (day, model SKU) and by (day, key) over the raw debit rows of [start, end)."""
    where, params = _where(uid, None, start, end)
    where += f" AND amount < 0 AND currency IN ({', '.join(str(x) for x in SPEND_CURRENCIES)})"
    day = f"ts / {MS_PER_DAY}"
    return {
        "byDate": c.execute(f"SELECT {day} AS d, currency, SUM(-amount) FROM usage_rows WHERE {where} "
                            f"GROUP BY d, currency", params).fetchall(),
        "byModel": c.execute(f"SELECT {day} AS d, sku, currency, SUM(-amount), SUM(units) FROM usage_rows "
                             f"WHERE {where} GROUP BY d, sku, currency", params).fetchall(),
        "byKey": c.execute(f"SELECT {day} AS d, kid, currency, SUM(-amount), SUM(units) FROM usage_rows "
                           f"WHERE {where} GROUP BY d, kid, currency", params).fetchall(),
    }
