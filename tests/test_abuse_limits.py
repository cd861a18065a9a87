"""Abuse limits against the real server process (issue 6), beside tests/test_limits.py (per-key rates),
tests/test_auth.py (the failed-auth block and its Retry-After) and tests/test_ingest_api.py (413 and 400 in process):

- deeply nested JSON (100,000 levels of `[`) and huge flat JSON inside the 8 MiB limit are answered 400 or 200
  quickly, on every route that takes a body, and the server keeps serving;
- every route's body is bounded: past 8 MiB it is 413, declared or streamed (chunked), before any credential check,
  so nobody can make the server buffer a body of any size;
- a slow client trickling its body gets 408 after USAGE_LEDGER_BODY_TIMEOUT_SECONDS, on every route that takes a
  body, while other clients are served meanwhile.
"""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest

from ledger_process import LedgerProcess

BODY_TIMEOUT_S = 1.0
LIMIT = 8 * 1024 * 1024
BODY_ROUTES = [("POST", "/api/v1/ledger/records"), ("POST", "/api/v1/ledger/credits"), ("POST", "/api/v1/ledger/users"),
               ("POST", "/api/v1/ledger/users/abuse-user/api_keys"), ("POST", "/api/v1/api_keys"),
               ("PATCH", "/api/v1/api_keys")]
QUICK_S = 10  # generous for a 2-core CI machine; a hang or a crash is what this catches


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    directory = tmp_path_factory.mktemp("abuse")
    with LedgerProcess(directory, f"sqlite:///{directory / 'abuse.db'}", auth_failure_limit="0",
                       key_rate_limit_per_minute="0", body_timeout_seconds=str(BODY_TIMEOUT_S)) as process:
        with process.client() as http:
            assert http.post("/api/v1/ledger/users", json={"userId": "abuse-user"},
                             headers=process.operator).status_code == 201
            process.admin = http.post("/api/v1/ledger/users/abuse-user/api_keys", headers=process.operator, json={
                "apiKeyType": "ADMIN", "description": ""}).json()["data"]["apiKey"]
        yield process
    assert "Traceback" not in process.logs()


def credential(server: LedgerProcess, path: str) -> dict[str, str]:
    secret = server.token if path.startswith("/api/v1/ledger/") else server.admin
    return {"Authorization": f"Bearer {secret}"}


def send(server: LedgerProcess, method: str, path: str, body, content_type: str = "application/json",
         headers: dict | None = None):
    with server.client(timeout=60) as http:
        started = time.monotonic()
        r = http.request(method, path, content=body, headers={
            **credential(server, path), "Content-Type": content_type, **(headers or {})})
        return r, time.monotonic() - started


def still_serving(server: LedgerProcess) -> None:
    assert server.alive()
    with server.client(timeout=10) as http:
        assert http.get("/healthz").status_code == 200
        assert http.get("/api/v1/billing/balance", headers={"Authorization": f"Bearer {server.admin}"}).status_code == 200


@pytest.mark.parametrize("method,path", BODY_ROUTES)
def test_deeply_nested_json_is_a_quick_400(server, method, path):
    for body in (b"[" * 100_000, b'{"records": ' + b"[" * 100_000, b"{\"a\":" * 100_000,
                 b'{"records": [' + b"[" * 100_000 + b"]]}"):
        r, took = send(server, method, path, body)
        assert r.status_code == 400, (path, r.text[:200])
        assert r.json()["error"] == "Invalid request parameters"
        assert took < QUICK_S
    still_serving(server)


def test_deeply_nested_records_and_ndjson_lines_are_errors_of_their_own(server):
    nested = "[" * 100_000 + "]" * 100_000
    lines = [json.dumps({"userId": "abuse-user", "sku": "s", "units": 1, "pricePerUnitUsd": 1,
                         "idempotencyKey": "nd-ok"}), nested, '{"notes": ' + nested + "}"]
    r, took = send(server, "POST", "/api/v1/ledger/records", "\n".join(lines).encode(), "application/x-ndjson")
    assert r.status_code == 200 and took < QUICK_S
    assert [x["status"] for x in r.json()["results"]] == ["recorded", "error", "error"]
    # Inside a JSON batch, a record nested past what can be stored is an error for that record alone.
    record = {"userId": "abuse-user", "sku": "s", "units": 1, "pricePerUnitUsd": 1, "idempotencyKey": "deep"}
    deep = '{"records": [{"userId": "abuse-user", "sku": "s", "units": 1, "pricePerUnitUsd": 1, "idempotencyKey": ' \
           '"deep-1", "notes": ' + "[" * 900 + "]" * 900 + "}, " + json.dumps(record) + "]}"
    r, took = send(server, "POST", "/api/v1/ledger/records", deep.encode())
    assert r.status_code == 200 and took < QUICK_S
    assert [x["status"] for x in r.json()["results"]] == ["error", "recorded"]
    still_serving(server)


def test_huge_flat_json_inside_the_limit_is_answered_quickly(server):
    # Four million numbers in 8 MiB: more than 1000 records, a 400.
    flat = b'{"records": [' + b",".join([b"1"] * (LIMIT // 2 - 16)) + b"]}"
    assert len(flat) <= LIMIT
    r, took = send(server, "POST", "/api/v1/ledger/records", flat)
    assert r.status_code == 400 and "records" in r.json()["details"] and took < QUICK_S
    # A 1000-record batch padded to just under 8 MiB with a field nobody reads: recorded.
    records = [{"userId": "abuse-user", "sku": "flat", "units": 1, "pricePerUnitUsd": 0.001, "notes": "n" * 1000,
                "idempotencyKey": f"flat-{i}"} for i in range(1000)]
    head = json.dumps({"records": records})[:-1].encode() + b', "padding": "'
    padded = head + b"x" * (LIMIT - len(head) - 2) + b'"}'
    assert len(padded) == LIMIT
    r, took = send(server, "POST", "/api/v1/ledger/records", padded)
    assert r.status_code == 200 and r.json()["recorded"] == 1000 and took < QUICK_S
    # One 8 MiB string where an object belongs, on a route that takes a model: a 400.
    for method, path in BODY_ROUTES[1:]:
        r, took = send(server, method, path, b'"' + b"y" * (LIMIT - 2) + b'"')
        assert r.status_code == 400 and took < QUICK_S, (path, r.text[:200])
    still_serving(server)


@pytest.mark.parametrize("method,path", BODY_ROUTES)
def test_every_body_past_8_mib_is_413_declared_or_streamed(server, method, path):
    big = b"[" + b"0," * (LIMIT // 2) + b"0]"
    r, _ = send(server, method, path, big)
    assert r.status_code == 413, (path, r.status_code, r.text[:200])
    assert r.json()["error"].startswith("Request body too large")

    def chunks():
        for _ in range(9):
            yield b" " * (1024 * 1024)

    r, _ = send(server, method, path, chunks())  # no Content-Length: cut off as soon as it passes the limit
    assert r.status_code == 413, (path, r.status_code, r.text[:200])
    # Without any credential, the body is refused for its size all the same: nothing is buffered first.
    with server.client(timeout=60) as http:
        r = http.request(method, path, content=big, headers={"Content-Type": "application/json"})
        assert r.status_code == 413, (path, r.status_code)
    still_serving(server)


def _trickle(server: LedgerProcess, method: str, path: str, headers: dict[str, str], declared: int,
             stop_after: float = 15.0) -> tuple[bytes, float]:
    """A raw HTTP request whose body arrives a byte every 0.2 s; returns what the server answered, and when."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{server.port}", "Content-Type: application/json",
             f"Content-Length: {declared}", *(f"{k}: {v}" for k, v in headers.items()), "", ""]
    with socket.create_connection(("127.0.0.1", server.port), timeout=stop_after) as s:
        s.sendall("\r\n".join(lines).encode())
        started = time.monotonic()
        s.setblocking(False)
        answer = b""
        while time.monotonic() - started < stop_after:
            try:
                s.send(b" ")
            except (BlockingIOError, BrokenPipeError, ConnectionResetError):
                pass
            time.sleep(0.2)
            try:
                data = s.recv(65536)
            except BlockingIOError:
                continue
            except ConnectionResetError:
                break
            if not data:
                break
            answer += data
            if b"\r\n\r\n" in answer:
                break
        return answer, time.monotonic() - started


@pytest.mark.parametrize("method,path", BODY_ROUTES)
def test_a_slow_client_gets_408_while_others_are_served(server, method, path):
    served = []

    def meanwhile():
        with server.client(timeout=10) as http:
            for _ in range(5):
                served.append(http.get("/healthz").status_code)
                time.sleep(0.1)

    other = threading.Thread(target=meanwhile)
    other.start()
    answer, took = _trickle(server, method, path, credential(server, path), declared=10_000)
    other.join()
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert BODY_TIMEOUT_S <= took < BODY_TIMEOUT_S + 5
    assert served == [200] * 5
    still_serving(server)


def test_the_description_documents_408_and_413_wherever_a_body_is_taken(server):
    with server.client() as http:
        paths = http.get("/openapi.json").json()["paths"]
    taking = {(m.upper(), p) for p, ops in paths.items() for m, op in ops.items() if "requestBody" in op}
    assert taking == (set(BODY_ROUTES) - {("POST", "/api/v1/ledger/users/abuse-user/api_keys")}) | {
        ("POST", "/api/v1/ledger/users/{userId}/api_keys")}
    for method, path in taking:
        responses = paths[path][method.lower()]["responses"]
        assert {"408", "413"} <= set(responses), (method, path)
