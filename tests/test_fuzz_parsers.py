"""Property fuzzing of the parsers that read what clients send (issue 6), with hypothesis:

- dates: `parse_instant` returns epoch milliseconds or raises TimeParseError, nothing else;
- cursors: `decode_cursor` raises only CursorError; a forged cursor (signed with another secret, or not signed) and a
  tampered one (any character changed, added or removed) never decode; a genuine one round-trips;
- Accept headers: `prefers_csv` always answers a bool;
- NDJSON and JSON bodies: `parse_records` answers the records (an unparsable line as a RecordError at its place)
  or raises the 400 ApiError, nothing else; valid records, one a line, come back exactly as sent;
- CSV import: reading a usage CSV raises only TransferError (the file) or yields RecordError (a row), whatever the
  bytes, and a whole `ingest_file` of such bytes records or refuses without any other exception.

Examples per property: FUZZ_EXAMPLES (default 300), derandomized so that CI runs the same inputs every time.
"""

from __future__ import annotations

import io
import json
import os
import string
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, assume, example, given, settings, strategies as st

from conftest import make_settings
from usage_ledger.api.errors import ApiError
from usage_ledger.api.ledger import NDJSON_TYPES, parse_records
from usage_ledger.ledger import RecordError
from usage_ledger.store.sql import SqlStore
from usage_ledger.timeutil import TimeParseError, now_ms, parse_instant
from usage_ledger.transfer import TransferError, _csv_records, _Lines, ingest_file
from usage_ledger.usage import CSV_HEADER, Cursor, CursorError, decode_cursor, encode_cursor, prefers_csv

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "300"))
fuzz = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

SECRET = b"the-server-cursor-secret-0123456789"

# -- dates ------------------------------------------------------------------------------------------------------

_DIGITS = st.text("0123456789", min_size=1, max_size=5)
_near_dates = st.builds(
    lambda y, mo, d, sep, h, mi, s, frac, off: f"{y}-{mo}-{d}{sep}{h}:{mi}{s}{frac}{off}",
    _DIGITS, _DIGITS, _DIGITS, st.sampled_from(["T", "t", " ", "_"]), _DIGITS, _DIGITS,
    st.sampled_from(["", ":00", ":59", ":60", ":99"]) | _DIGITS.map(lambda x: ":" + x),
    st.sampled_from(["", ".", ".1", ".123456", ".1234567"]) | _DIGITS.map(lambda x: "." + x),
    st.sampled_from(["", "Z", "z", "+00:00", "-23:59", "+24:00", " 05", "+0530", "+5"])
    | st.builds(lambda sign, hh, mm: f"{sign}{hh}{mm}", st.sampled_from("+- "), _DIGITS, st.just("") | _DIGITS))


@fuzz
@given(text=st.text() | _near_dates | st.from_regex(r"\A\d{1,6}-\d{1,3}-\d{1,3}\Z"), end_of_day=st.booleans())
@example(text="0000-01-01", end_of_day=False)
@example(text="9999-12-31T23:59:59.999999-23:59", end_of_day=True)
@example(text="2024-02-30", end_of_day=False)
@example(text="2024-01-01T00:00:00+99:99", end_of_day=False)
def test_parse_instant_raises_only_time_parse_error(text, end_of_day):
    try:
        ms = parse_instant(text, end_of_day=end_of_day)
    except TimeParseError:
        return
    assert isinstance(ms, int)


# -- cursors ----------------------------------------------------------------------------------------------------

_cursors = st.builds(Cursor, uid=st.integers(1, 2**40), currency=st.none() | st.integers(0, 3),
                     start=st.none() | st.integers(-2**45, 2**45), end=st.none() | st.integers(-2**45, 2**45),
                     page_size=st.integers(10, 1000), after_ts=st.integers(-2**45, 2**45),
                     after_id=st.integers(0, 2**62), max_id=st.integers(0, 2**62),
                     issued_at=st.integers(now_ms() - 3_600_000, now_ms()))


def _decode(text: str, uid: int):
    return decode_cursor(text, SECRET, uid=uid, now=now_ms(), max_age_ms=24 * 3_600_000)


@fuzz
@given(text=st.text(max_size=600) | st.text(string.ascii_letters + string.digits + "-_", max_size=600),
       uid=st.integers(1, 10))
def test_decode_cursor_raises_only_cursor_error(text, uid):
    try:
        _decode(text, uid)
    except CursorError:
        pass


@fuzz
@given(cursor=_cursors, other_secret=st.binary(min_size=1, max_size=64))
def test_a_cursor_signed_with_another_secret_never_decodes(cursor, other_secret):
    assume(other_secret != SECRET)
    with pytest.raises(CursorError):
        _decode(encode_cursor(cursor, other_secret), cursor.uid)


@fuzz
@given(cursor=_cursors, data=st.data())
def test_a_tampered_cursor_never_decodes(cursor, data):
    genuine = encode_cursor(cursor, SECRET)
    assert _decode(genuine, cursor.uid) == cursor
    alphabet = string.ascii_letters + string.digits + "-_"
    i = data.draw(st.integers(0, len(genuine) - 1))
    edit = data.draw(st.sampled_from(["replace", "insert", "delete", "truncate", "append"]))
    char = data.draw(st.sampled_from(alphabet))
    tampered = {"replace": genuine[:i] + char + genuine[i + 1:], "insert": genuine[:i] + char + genuine[i:],
                "delete": genuine[:i] + genuine[i + 1:], "truncate": genuine[:i],
                "append": genuine + char}[edit]
    assume(tampered != genuine)
    with pytest.raises(CursorError):
        _decode(tampered, cursor.uid)


@fuzz
@given(cursor=_cursors, other_uid=st.integers(1, 2**40))
def test_another_users_cursor_never_decodes(cursor, other_uid):
    assume(other_uid != cursor.uid)
    with pytest.raises(CursorError):
        _decode(encode_cursor(cursor, SECRET), other_uid)


# -- Accept headers ---------------------------------------------------------------------------------------------

_media = st.sampled_from(["text/csv", "application/json", "text/*", "*/*", "TEXT/CSV", "", " ", "text/csv;q=",
                          "application/*"])
_param = st.builds(lambda name, value: f";{name}={value}", st.sampled_from(["q", "Q", " q ", "charset", ""]),
                   st.sampled_from(["1", "0", "0.5", "1.0001", "-1", "nan", "inf", "1e400", "", "x", "0x1"]))
_accepts = st.lists(st.builds(lambda m, ps: m + "".join(ps), _media, st.lists(_param, max_size=3)),
                    max_size=6).map(", ".join)


@fuzz
@given(accept=st.none() | st.text() | _accepts)
def test_prefers_csv_always_answers_a_bool(accept):
    assert prefers_csv(accept) in (True, False)


# -- NDJSON and JSON bodies -------------------------------------------------------------------------------------

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12)
_records = st.dictionaries(st.sampled_from(["userId", "sku", "model", "units", "notes", "requestId", "x"]),
                           _json_values, max_size=6)


def _parse(body: bytes, content_type: str):
    try:
        return parse_records(body, content_type, 1000)
    except ApiError as exc:
        assert exc.status == 400 and exc.body["error"] == "Invalid request parameters"
        return None


@fuzz
@given(body=st.binary(max_size=2000) | st.text(max_size=2000).map(str.encode)
       | st.lists(_json_values, max_size=5).map(lambda v: "\n".join(json.dumps(x) for x in v).encode()),
       content_type=st.sampled_from([*NDJSON_TYPES, "application/json", "", "text/plain", "application/x-ndjson; "
                                     "charset=utf-8", "APPLICATION/X-NDJSON"]))
@example(body=b"[" * 100_000, content_type="application/json")
@example(body=b"[" * 100_000, content_type="application/x-ndjson")
@example(body=b'{"records": [' + b"[" * 100_000 + b"]}", content_type="application/json")
def test_parse_records_answers_records_or_the_400(body, content_type):
    records = _parse(body, content_type)
    if records is not None:
        assert 1 <= len(records) <= 1000


@fuzz
@given(records=st.lists(_records, min_size=1, max_size=20), ascii_only=st.booleans(), crlf=st.booleans())
@example(records=[{"notes": "a\u2028b\x85c\u2029d"}], ascii_only=False, crlf=False)
def test_ndjson_records_one_a_line_come_back_as_sent(records, ascii_only, crlf):
    body = ("\r\n" if crlf else "\n").join(json.dumps(r, ensure_ascii=ascii_only) for r in records).encode()
    parsed = parse_records(body, "application/x-ndjson", 1000)
    assert parsed == [json.loads(json.dumps(r), parse_float=Decimal) for r in records]


# -- CSV import -------------------------------------------------------------------------------------------------

_HEADER = ",".join(CSV_HEADER).encode() + b"\r\n"
_cells = st.text(max_size=30) | st.sampled_from(["", "NaN", "-Infinity", "1e999999", "0.000000001", "'=1+1", "-5",
                                                  "2024-01-01T00:00:00.000Z", "USD", "VCU", "x" * 200])
_csv_rows = st.lists(st.lists(_cells, min_size=9, max_size=13), max_size=8).map(
    lambda rows: "".join(",".join('"' + c.replace('"', '""') + '"' for c in row) + "\r\n" for row in rows).encode())
_csv_bodies = (st.binary(max_size=1000) | _csv_rows | st.binary(max_size=300)).map(lambda b: _HEADER + b) \
    | st.binary(max_size=500)


@fuzz
@given(data=_csv_bodies)
@example(data=_HEADER + b'"unterminated\r\nx,y')
@example(data=_HEADER + b"a\x00b,c\r\n")
@example(data=b"\xef\xbb\xbf" + _HEADER + b"\xff\xfe")
def test_csv_reading_raises_only_its_declared_errors(data):
    try:
        for line, record in _csv_records(_Lines(io.BufferedReader(io.BytesIO(data))), "csv-user"):
            assert isinstance(line, int)
            assert isinstance(record, (dict, RecordError))
    except TransferError:
        pass


@pytest.fixture(scope="module")
def csv_store(tmp_path_factory):
    directory = tmp_path_factory.mktemp("fuzz-csv")
    store = SqlStore(make_settings(directory).database_url)
    store.migrate()
    store.create_user("csv-user", "", now_ms())
    yield store, directory
    store.close()


@settings(max_examples=max(EXAMPLES // 5, 20), deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=_csv_bodies, suffix=st.sampled_from([".csv", ".jsonl", ".txt"]))
def test_ingest_file_records_or_refuses(csv_store, catalog, data, suffix):
    store, directory = csv_store
    path = directory / f"input{suffix}"
    path.write_bytes(data)
    try:
        summary = ingest_file(store, catalog, path, user_id="csv-user")
    except TransferError:
        return
    assert summary.recorded + summary.duplicates + summary.errors >= 0


@pytest.mark.parametrize("after_id", [1, 12, 123, 1234])  # payload lengths that leave spare bits in the last char
def test_no_other_spelling_of_a_cursor_decodes(after_id):
    """Base64 without padding leaves unused bits in the last character: flipping them must not give a second
    accepted spelling of the same cursor."""
    cursor = Cursor(1, None, None, None, 10, 1_780_000_000_000, after_id, 10**6, now_ms())
    genuine = encode_cursor(cursor, SECRET)
    accepted = []
    for char in string.ascii_letters + string.digits + "-_":
        spelling = genuine[:-1] + char
        if spelling != genuine:
            try:
                _decode(spelling, 1)
                accepted.append(spelling)
            except CursorError:
                pass
    assert accepted == []
