"""Timestamps: integer milliseconds since the Unix epoch, UTC; parsing of the API's ISO 8601 inputs."""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta, timezone
from functools import lru_cache

MS_PER_HOUR = 3_600_000
MS_PER_DAY = 86_400_000

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_DATE_ONLY = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")
# A space where the offset's "+" should be is an unescaped "+" in a query string (API.md §3).
_DATE_TIME = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,6}))?)?"
    r"(?:([Zz])|([+\- ])(\d{2})(?::?(\d{2}))?)?$"
)


class TimeParseError(ValueError):
    pass


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def to_ms(dt: datetime) -> int:
    delta = dt - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def from_ms(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms)


@lru_cache(maxsize=4096)
def _date_prefix(day: int) -> str:
    return time.strftime("%Y-%m-%dT", time.gmtime(day * 86_400))


def iso_ms(ms: int) -> str:
    """'2026-06-15T19:05:10.504Z': UTC, milliseconds, Z. This runs for every exported row: the date is formatted
    once per day and the time of day is integer arithmetic (measured 1.0 µs a row, strftime alone 1.7 µs)."""
    day, rest = divmod(ms, MS_PER_DAY)
    hours, rest = divmod(rest, MS_PER_HOUR)
    minutes, rest = divmod(rest, 60_000)
    seconds, millis = divmod(rest, 1000)
    return f"{_date_prefix(day)}{hours:02d}:{minutes:02d}:{seconds:02d}.{millis:03d}Z"


def compact_iso_ms(ms: int) -> str:
    """'20260708T091530123Z', for file names that sort in time order."""
    dt = from_ms(ms)
    return f"{dt:%Y%m%dT%H%M%S}{dt.microsecond // 1000:03d}Z"


def parse_instant(text: str, *, end_of_day: bool = False) -> int:
    """An ISO 8601 date-time (offset converted to UTC, fraction floored to the ms) or a bare date, to epoch ms.

    A bare YYYY-MM-DD is the whole UTC day: its first millisecond, or its last with end_of_day. A date-time without
    an offset is read as UTC.
    """
    m = _DATE_ONLY.match(text)
    try:
        if m:
            day = datetime(int(m[1]), int(m[2]), int(m[3]), tzinfo=timezone.utc)
            ms = to_ms(day)
            return ms + MS_PER_DAY - 1 if end_of_day else ms
        m = _DATE_TIME.match(text)
        if not m:
            raise TimeParseError("must be an ISO 8601 date-time such as 2024-01-01T00:00:00Z, or a date YYYY-MM-DD")
        fraction = (m[7] or "").ljust(3, "0")[:3]
        dt = datetime(int(m[1]), int(m[2]), int(m[3]), int(m[4]), int(m[5]), int(m[6] or 0),
                      int(fraction) * 1000, tzinfo=timezone.utc)
        ms = to_ms(dt)
        if m[9]:
            sign = -1 if m[9] == "-" else 1
            hours, minutes = int(m[10]), int(m[11] or 0)  # ISO 8601 allows an hours-only offset: +05
            if hours > 23 or minutes > 59:
                raise TimeParseError("has an invalid UTC offset")
            ms -= sign * (hours * 60 + minutes) * 60_000
        return ms
    except ValueError as exc:
        if isinstance(exc, TimeParseError):
            raise
        raise TimeParseError(f"is not a valid date: {exc}") from None
