"""Exact money: integer nano-units (10^-9) everywhere, Decimal only at the edges.

Floats never touch an amount: JSON bodies are parsed with Decimal, rows store integers, and rendering writes the
shortest exact decimal ("0.000227", never "2.27e-4" and never float noise).
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

NANO = 10**9
SCALE_DIGITS = 9

# Stored as small integers; the names are what the API shows.
CURRENCY_CODES = {"USD": 1, "DIEM": 2, "BUNDLED_CREDITS": 3, "VCU": 4}
CURRENCY_NAMES = {code: name for name, code in CURRENCY_CODES.items()}
# API.md §2: a record is charged in the first currency of this order whose balance covers it, else USD.
SPEND_ORDER = ("DIEM", "BUNDLED_CREDITS", "USD")
# What analytics counts as spend: VCU is legacy and never charged.
SPEND_CURRENCIES = (CURRENCY_CODES["USD"], CURRENCY_CODES["BUNDLED_CREDITS"], CURRENCY_CODES["DIEM"])
# The largest magnitude an int64 column holds, in nano-units (about 9.2 billion).
MAX_NANO = 2**63 - 1


class MoneyError(ValueError):
    pass


def to_nano(value: Decimal | int | str, what: str = "value") -> int:
    """The exact integer nano-units of a decimal; refuses what cannot be held exactly."""
    try:
        d = value if isinstance(value, Decimal) else Decimal(value)
    except (InvalidOperation, TypeError, ValueError):
        raise MoneyError(f"{what} must be a number") from None
    if not d.is_finite():
        raise MoneyError(f"{what} must be a finite number")
    scaled = d.scaleb(SCALE_DIGITS)
    if scaled != scaled.to_integral_value():
        raise MoneyError(f"{what} has more than {SCALE_DIGITS} decimal places")
    n = int(scaled)
    if abs(n) > MAX_NANO:
        raise MoneyError(f"{what} is too large")
    return n


def nano_to_decimal(n: int) -> Decimal:
    return Decimal(n).scaleb(-SCALE_DIGITS)


def render(n: int) -> str:
    """Shortest exact plain-decimal text of nano-units: 227000 -> '0.000227', 2800000000 -> '2.8', 0 -> '0'."""
    if n >= 0:
        whole, frac = divmod(n, NANO)
        return f"{whole}.{frac:09d}".rstrip("0") if frac else str(whole)
    whole, frac = divmod(-n, NANO)
    return f"-{whole}.{frac:09d}".rstrip("0") if frac else f"-{whole}"


def multiply(units_nano: int, price_nano: int) -> int:
    """units × price in nano-units, rounded half-even at the ninth decimal (API.md §2)."""
    product = units_nano * price_nano
    negative = product < 0
    q, r = divmod(abs(product), NANO)
    if r * 2 > NANO or (r * 2 == NANO and q % 2 == 1):
        q += 1
    return -q if negative else q


def render_fixed(n: int, places: int) -> str:
    """A fixed number of decimals, half-even, for Venice's string sums such as "10.2424"."""
    d = nano_to_decimal(n).quantize(Decimal(1).scaleb(-places), rounding="ROUND_HALF_EVEN")
    return f"{d:f}"
