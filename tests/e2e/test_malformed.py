"""Malformed HTTP sent over a raw socket to a real gunicorn reached directly
(no front door): every answer is PROTOCOL.md's JSON error, or the connection
is closed; never an HTML page, never a 5xx from the app; and no client
address reaches the log. Also: 405 answers carry Allow, the Bearer scheme is
matched in any case, a broken chunked body is a 400, and the access log is
one JSON object per request without address, query string, code or token."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from ..support import PROJECT_ROOT, Phone, content_digest, free_port

LOOPBACK = "127.0.0.1"


class DirectGunicorn:
    """`gunicorn wsgi:app` with the repository's gunicorn.conf.py, on
    127.0.0.1 over TCP (so the peer has an address that could leak), with the
    access log on, everything it prints in one file."""

    def __init__(self, root: Path):
        self.root = root
        self.port = free_port()
        self.url = f"http://{LOOPBACK}:{self.port}"
        self.log_path = root / "gunicorn.log"
        self.env = {**os.environ, "WITNESS_DATA_DIR": str(root / "data"), "WITNESS_KEYS_DIR": str(root / "keys"),
                    "WITNESS_ACCESS_LOG": "-", "WITNESS_SCHEDULER_INTERVAL_SECONDS": "0.2"}
        self.process: subprocess.Popen | None = None
        self.started_at_offset = 0

    def start(self) -> "DirectGunicorn":
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "wsgi:app", "--bind", f"{LOOPBACK}:{self.port}",
                 "--workers", "1", "--threads", "4"],
                cwd=PROJECT_ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited at start-up:\n{self.log()}")
            try:
                if requests.get(self.url + "/v1/keys", timeout=1).status_code == 200:
                    # gunicorn names its own listening address at start-up; that is
                    # not a client's. Everything after this point is checked.
                    self.started_at_offset = self.log_path.stat().st_size
                    return self
            except requests.RequestException:
                time.sleep(0.1)
        raise RuntimeError(f"gunicorn did not start:\n{self.log()}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_after_start(self) -> str:
        with open(self.log_path, "rb") as log:
            log.seek(self.started_at_offset)
            return log.read().decode(errors="replace")

    def wait_for(self, condition, timeout: float = 30.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = condition()
            if value:
                return value
            time.sleep(0.05)
        raise AssertionError(f"condition not met within {timeout} s; log:\n{self.log()[-4000:]}")

    def access_lines(self) -> list[dict]:
        return [json.loads(line) for line in self.log_after_start().splitlines() if line.startswith("{")]


@pytest.fixture(scope="module")
def gunicorn(tmp_path_factory):
    server = DirectGunicorn(tmp_path_factory.mktemp("direct-gunicorn")).start()
    yield server
    server.stop()


@dataclass
class Answer:
    status: int
    reason: str
    headers: dict[str, str]  # lowercased names
    body: bytes
    closed_after: bool  # the server closed the connection right after this answer


def exchange(server: DirectGunicorn, raw: bytes, *, half_close: bool = False) -> Answer | None:
    """Send `raw` as is and read one answer: None if the connection was closed
    without one. After an answer that says `Connection: close`, read on to
    the end to see that nothing else follows."""
    with socket.create_connection((LOOPBACK, server.port), timeout=30) as sock:
        sock.sendall(raw)
        if half_close:
            sock.shutdown(socket.SHUT_WR)  # the client has nothing more to send
        data = b""
        while b"\r\n\r\n" not in data:
            more = sock.recv(65536)
            if not more:
                assert data == b"", f"connection closed inside an answer's head: {data!r}"
                return None
            data += more
        head, _, body = data.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        version, status, reason = status_line.split(" ", 2)
        assert version == "HTTP/1.1", status_line
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers["content-length"])  # every answer here has one
        while len(body) < length:
            more = sock.recv(65536)
            assert more, "connection closed inside an answer's body"
            body += more
        closed_after = False
        if headers.get("connection", "").lower() == "close":
            rest = body[length:]
            while more := sock.recv(65536):
                rest += more
            assert rest == b"", f"bytes after the answer: {rest!r}"
            closed_after = True
        return Answer(int(status), reason, headers, body[:length], closed_after)


H = b"Host: witness.test\r\n"
JSON = b"Content-Type: application/json\r\n"
CHUNKED = b"Transfer-Encoding: chunked\r\n"
POST_DEVICES = b"POST /v1/devices HTTP/1.1\r\n" + H + JSON  # reads its body before anything else

# (id, raw request, half-close after sending, expected status, expected error code)
MALFORMED = [
    # Request lines.
    ("not a request line", b"GARBAGE\r\n\r\n", False, 400, "invalid_request_line"),
    ("method alone", b"GET\r\n\r\n", False, 400, "invalid_request_line"),
    ("lowercase method", b"get /v1/keys HTTP/1.1\r\n" + H + b"\r\n", False, 400, "invalid_request_line"),
    ("bad character in method", b"G(T /v1/keys HTTP/1.1\r\n" + H + b"\r\n", False, 400, "invalid_request_line"),
    ("HTTP/9.9", b"GET /v1/keys HTTP/9.9\r\n" + H + b"\r\n", False, 400, "invalid_request_line"),
    ("not HTTP at all", b"GET /v1/keys FOO/1.1\r\n" + H + b"\r\n", False, 400, "invalid_request_line"),
    ("two spaces", b"GET  /v1/keys HTTP/1.1\r\n" + H + b"\r\n", False, 400, "invalid_request_line"),
    ("bare LF line ends", b"GET /v1/keys HTTP/1.1\n" + H.replace(b"\r", b"") + b"\n", False, 400,
     "invalid_request_line"),
    ("asterisk-form GET", b"GET * HTTP/1.1\r\n" + H + b"\r\n", False, 400, "invalid_request_line"),
    ("request line over 4 KiB", b"GET /v1/" + b"a" * 5000 + b" HTTP/1.1\r\n" + H + b"\r\n", False, 414,
     "uri_too_long"),
    ("an enrollment code in a URI over 4 KiB",
     b"GET /record?code=a-code-to-keep-out-of-logs&x=" + b"a" * 5000 + b" HTTP/1.1\r\n" + H + b"\r\n", False, 414,
     "uri_too_long"),
    ("NUL in the request line", b"GET /v1/keys\x00 HTTP/1.1\r\n" + H + b"\r\n", False, 400, "invalid_request_line"),
    ("DEL in the path", b"GET /v1/ke\x7fys HTTP/1.1\r\n" + H + b"\r\n", False, 400, "invalid_request_line"),
    ("raw non-ASCII bytes in the path", b"GET /v1/\xff\xfe HTTP/1.1\r\n" + H + b"\r\n", False, 400,
     "invalid_request_line"),
    ("tab in the path", b"GET /v1/a\tb HTTP/1.1\r\n" + H + b"\r\n", False, 400, "invalid_request_line"),
    # Absolute and odd request targets: the app routes the path only, and answers in JSON.
    ("absolute URI to an unknown path", b"GET http://evil.example/v1/nope HTTP/1.1\r\nHost: evil.example\r\n\r\n",
     False, 404, "not_found"),
    ("absolute URI with a foreign host to a staff path",
     b"GET http://evil.example/v1/recordings HTTP/1.1\r\nHost: other.example\r\n\r\n", False, 401, "unauthorized"),
    ("CONNECT authority-form", b"CONNECT evil.example:443 HTTP/1.1\r\n" + H + b"\r\n", False, 404, "not_found"),
    ("scheme-relative path", b"GET //evil.example/v1/keys HTTP/1.1\r\n" + H + b"\r\n", False, 404, "not_found"),
    ("broken percent-escape", b"GET /v1/%zz HTTP/1.1\r\n" + H + b"\r\n", False, 404, "not_found"),
    # Header fields: sizes, counts, syntax, NUL bytes.
    ("a header field over 8 KiB", b"GET /v1/keys HTTP/1.1\r\n" + H + b"X-Big: " + b"a" * 9000 + b"\r\n\r\n", False,
     431, "headers_too_large"),
    ("more than 100 header fields",
     b"GET /v1/keys HTTP/1.1\r\n" + H + b"".join(b"X-%d: a\r\n" % i for i in range(120)) + b"\r\n", False, 431,
     "headers_too_large"),
    ("NUL in a header name", b"GET /v1/keys HTTP/1.1\r\n" + H + b"X\x00A: b\r\n\r\n", False, 400, "invalid_header"),
    ("NUL in a header value", b"GET /v1/keys HTTP/1.1\r\n" + H + b"X-A: b\x00c\r\n\r\n", False, 400,
     "invalid_header"),
    ("header line without a colon", b"GET /v1/keys HTTP/1.1\r\n" + H + b"X-A b\r\n\r\n", False, 400,
     "invalid_header"),
    ("space before the colon", b"GET /v1/keys HTTP/1.1\r\nHost : witness.test\r\n\r\n", False, 400,
     "invalid_header"),
    ("obsolete line folding", b"GET /v1/keys HTTP/1.1\r\n" + H + b"X-A: a\r\n b\r\n\r\n", False, 400,
     "invalid_header"),
    ("bad character in a header name", b"GET /v1/keys HTTP/1.1\r\n" + H + b"X(A): b\r\n\r\n", False, 400,
     "invalid_header"),
    ("Expect other than 100-continue", POST_DEVICES + b"Expect: teapot\r\nContent-Length: 2\r\n\r\n{}", False, 417,
     "expectation_failed"),
    # Content-Length abuse.
    ("Content-Length not a number", POST_DEVICES + b"Content-Length: abc\r\n\r\n", False, 400, "invalid_header"),
    ("negative Content-Length", POST_DEVICES + b"Content-Length: -1\r\n\r\n", False, 400, "invalid_header"),
    ("Content-Length with a plus sign", POST_DEVICES + b"Content-Length: +2\r\n\r\n{}", False, 400,
     "invalid_header"),
    ("two different Content-Lengths", POST_DEVICES + b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}", False,
     400, "invalid_header"),
    ("Content-Length as a list", POST_DEVICES + b"Content-Length: 2, 2\r\n\r\n{}", False, 400, "invalid_header"),
    ("Content-Length and chunked together", POST_DEVICES + b"Content-Length: 2\r\n" + CHUNKED + b"\r\n0\r\n\r\n",
     False, 400, "invalid_header"),
    ("Content-Length of 20 digits", POST_DEVICES + b"Content-Length: 99999999999999999999\r\n\r\n{}", False, 400,
     "body_too_large"),
    ("body shorter than Content-Length, then silence", POST_DEVICES + b'Content-Length: 100\r\n\r\n{"a":', True,
     400, "invalid_body"),
    # Transfer-Encoding and chunked abuse.
    ("unknown transfer coding before chunked", POST_DEVICES + b"Transfer-Encoding: x-custom, chunked\r\n\r\n0\r\n\r\n",
     False, 501, "unsupported_transfer_coding"),
    ("gzip without chunked", POST_DEVICES + b"Transfer-Encoding: gzip\r\n\r\n", False, 400, "invalid_header"),
    ("chunked twice", POST_DEVICES + b"Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", False, 400,
     "invalid_header"),
    ("chunked on HTTP/1.0", b"POST /v1/devices HTTP/1.0\r\n" + H + JSON + CHUNKED + b"\r\n0\r\n\r\n", False, 400,
     "invalid_header"),
    ("chunk size not hexadecimal", POST_DEVICES + CHUNKED + b"\r\nzz\r\n{}\r\n0\r\n\r\n", False, 400,
     "invalid_chunked_body"),
    ("negative chunk size", POST_DEVICES + CHUNKED + b"\r\n-2\r\n{}\r\n0\r\n\r\n", False, 400,
     "invalid_chunked_body"),
    ("chunk data without its CRLF", POST_DEVICES + CHUNKED + b"\r\n2\r\n{}XX0\r\n\r\n", False, 400,
     "invalid_chunked_body"),
    ("NUL in a chunk extension", POST_DEVICES + CHUNKED + b"\r\n2;a\x00b\r\n{}\r\n0\r\n\r\n", False, 400,
     "invalid_chunked_body"),
    ("chunk size beyond anything sent, then silence",
     POST_DEVICES + CHUNKED + b"\r\nffffffffffffffffffff\r\n{}\r\n", True, 400, "bad_request"),
]


@pytest.mark.parametrize("raw,half_close,status,code", [row[1:] for row in MALFORMED],
                         ids=[row[0] for row in MALFORMED])
def test_malformed_requests_get_a_json_error_or_a_closed_connection(gunicorn, raw, half_close, status, code):
    answer = exchange(gunicorn, raw, half_close=half_close)
    assert answer is not None, "expected an answer, the connection was closed"
    assert b"<html" not in answer.body.lower() and b"<!doctype" not in answer.body.lower()
    assert answer.headers["content-type"].startswith("application/json"), answer
    body = json.loads(answer.body)
    assert isinstance(body.get("message"), str) and body["message"], body
    assert (answer.status, body["error"]) == (status, code), body
    assert answer.status < 500 or answer.status == 501  # 501: gunicorn's own, for a coding it does not know
    if answer.headers.get("server") != "gunicorn":  # gunicorn's parser answered, not the app
        assert answer.closed_after and answer.headers["connection"] == "close"


def test_the_table_is_big_enough_and_covers_each_kind():
    assert len(MALFORMED) >= 20
    answered_by = {row[3] for row in MALFORMED}
    assert {400, 414, 431, 501}.issubset(answered_by)


def test_a_broken_unread_body_after_an_answer_closes_the_connection_without_a_second_answer(gunicorn):
    # The app answers 401 without reading the body; gunicorn then reads the
    # body away to reuse the connection, finds it malformed, and must close
    # rather than send an error the client would take for its next request.
    raw = (b"PUT /v1/recordings/" + str(uuid.uuid4()).encode() + b"/chunks/0 HTTP/1.1\r\n" + H + CHUNKED
           + b"Content-Type: application/octet-stream\r\n\r\nzz\r\nabc\r\n0\r\n\r\n")
    with socket.create_connection((LOOPBACK, gunicorn.port), timeout=30) as sock:
        sock.sendall(raw)
        received = b""
        while more := sock.recv(65536):  # the server closes the connection
            received += more
    assert received.startswith(b"HTTP/1.1 401 ") and received.count(b"HTTP/1.1 ") == 1, received
    assert json.loads(received.partition(b"\r\n\r\n")[2])["error"] == "unauthorized"


def test_a_broken_chunked_chunk_upload_is_a_400_and_leaves_nothing(gunicorn):
    phone = Phone(gunicorn)
    recording = phone.create_recording()
    body = recording.chunk(0)
    framed = b"%x\r\n" % len(body) + body + b"XX"  # the CRLF after the data is missing
    raw = (f"PUT /v1/recordings/{recording.id}/chunks/0 HTTP/1.1\r\n".encode() + H + CHUNKED
           + f"Authorization: Bearer {phone.token}\r\nContent-Type: application/octet-stream\r\n"
             f"Content-Digest: {content_digest(body)}\r\n\r\n".encode() + framed + b"0\r\n\r\n")
    answer = exchange(gunicorn, raw)
    assert answer is not None and answer.status == 400
    assert answer.headers["content-type"].startswith("application/json")
    assert json.loads(answer.body)["error"] == "invalid_chunked_body"
    assert recording.status().json()["received"] == []
    # The same chunk, framed right, is taken.
    good = raw.replace(framed, b"%x\r\n" % len(body) + body + b"\r\n")
    taken = exchange(gunicorn, good)
    assert taken is not None and taken.status == 201, taken
    assert recording.status().json()["received"] == [[0, 0]]


def test_no_client_address_in_the_log_after_malformed_requests(gunicorn):
    for _name, raw, half_close, _status, _code in MALFORMED:
        exchange(gunicorn, raw, half_close=half_close)
    exchange(gunicorn, b"GET /v1/keys HTTP/1.1\r\n" + H + b"Connection: close\r\n\r\n")
    # The refusals were logged (so the log is the one being written) ...
    gunicorn.wait_for(lambda: "Refused a malformed request: 431 headers_too_large" in gunicorn.log_after_start()
                      and any(line["path"] == "/v1/keys" for line in gunicorn.access_lines()))
    log = gunicorn.log_after_start()
    assert "Refused a malformed request: 400 invalid_request_line" in log
    # ... without the address they came from, or anything from the request line.
    assert LOOPBACK not in log and "ip=" not in log
    assert "a-code-to-keep-out-of-logs" not in log
    assert "<html" not in log.lower()


def test_a_wrong_method_names_the_allowed_ones(gunicorn):
    answer = requests.delete(gunicorn.url + "/v1/keys")
    assert answer.status_code == 405 and answer.json()["error"] == "method_not_allowed"
    assert {"GET", "HEAD"} <= {method.strip() for method in answer.headers["Allow"].split(",")}
    chunk = requests.get(f"{gunicorn.url}/v1/recordings/{uuid.uuid4()}/chunks/0")
    assert chunk.status_code == 405 and chunk.headers["Content-Type"].startswith("application/json")
    assert "PUT" in {method.strip() for method in chunk.headers["Allow"].split(",")}
    # A console page answered with a page, and the header too.
    page = requests.put(gunicorn.url + "/console/login")
    assert page.status_code == 405 and page.headers["Content-Type"].startswith("text/html")
    assert {"GET", "POST"} <= {method.strip() for method in page.headers["Allow"].split(",")}


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
def test_the_bearer_scheme_is_matched_in_any_case(gunicorn, scheme):
    phone = Phone(gunicorn)
    recording = phone.create_recording()
    answer = requests.get(f"{gunicorn.url}/v1/recordings/{recording.id}/status",
                          headers={"Authorization": f"{scheme} {phone.token}"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["recording_id"] == recording.id


def test_other_schemes_are_still_refused(gunicorn):
    phone = Phone(gunicorn)
    recording = phone.create_recording()
    for value in (f"Basic {phone.token}", f"Bearerx {phone.token}", phone.token):
        answer = requests.get(f"{gunicorn.url}/v1/recordings/{recording.id}/status",
                              headers={"Authorization": value})
        assert answer.status_code == 401 and answer.json()["error"] == "unauthorized", value


def test_the_access_log_is_one_json_object_per_request_without_address_query_code_or_token(gunicorn):
    marker = uuid.uuid4().hex
    token = f"eyJ.not-a-real-token-{marker}"
    assert requests.get(f"{gunicorn.url}/record?code=enrol-{marker}").status_code == 200
    assert requests.get(f"{gunicorn.url}/v1/recordings?state=interrupted&m={marker}",
                        headers={"Authorization": f"Bearer {token}", "Referer": f"{gunicorn.url}/?r={marker}",
                                 "User-Agent": f"agent-{marker}", "X-Real-IP": "203.0.113.9"}).status_code == 401
    assert requests.post(f"{gunicorn.url}/v1/enrollment-codes/code-{marker}/revoke").status_code == 401
    last = f"/v1/nothing-{uuid.uuid4().hex}"  # the path is logged: no marker in it
    assert requests.get(gunicorn.url + last).status_code == 404
    lines = gunicorn.wait_for(lambda: (lines := gunicorn.access_lines()) and lines[-1]["path"] == last and lines)

    mine = {line["path"]: line for line in lines[-4:]}
    assert set(mine) == {"/record", "/v1/recordings", "/v1/enrollment-codes/{code}/revoke", last}
    record = mine["/record"]
    assert set(record) == {"time", "method", "path", "status", "bytes", "duration_ms", "protocol"}
    assert (record["method"], record["status"], record["protocol"]) == ("GET", 200, "HTTP/1.1")
    assert record["bytes"] > 0 and isinstance(record["duration_ms"], int)
    assert record["time"].endswith("Z") and len(record["time"]) == len("2026-11-21T14:03:07.123Z")
    assert mine["/v1/recordings"]["status"] == 401
    assert mine["/v1/enrollment-codes/{code}/revoke"]["method"] == "POST"
    log = gunicorn.log_after_start()
    assert marker not in log  # no query string, code, token, referrer or user agent
    assert LOOPBACK not in log and "203.0.113.9" not in log
