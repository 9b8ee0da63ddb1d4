"""A bounded attack on a server on this machine, run as its own process so
its CPU and threads are not the phone's: slow headers, slow bodies, a login
flood with random usernames and a registration flood, all from one source
address, for a fixed time. Prints one JSON summary line and exits.

    python -m tests.attacker URL --seconds 20 --source 127.0.0.9 \
        --slow-headers 30 --slow-bodies 30 --logins 32 --registrations 8

Every loop stops at the deadline and after at most --max-requests requests
per client; it only ever talks to the URL it is given (127.0.0.1 here).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import socket
import threading
import time
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter


class SourceAddressAdapter(HTTPAdapter):
    """requests from a chosen local address (127.0.0.0/8 all reaches
    loopback): the server sees that address as the client's."""

    def __init__(self, source: str, **kwargs):
        self.source = source
        super().__init__(**kwargs)

    def init_poolmanager(self, *args, **kwargs):
        kwargs["source_address"] = (self.source, 0)
        return super().init_poolmanager(*args, **kwargs)


def session_from(source: str) -> requests.Session:
    """A `requests.Session` whose connections come from `source`."""
    session = requests.Session()
    adapter = SourceAddressAdapter(source, pool_maxsize=64)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


class Tally:
    def __init__(self):
        self.lock = threading.Lock()
        self.counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        self.open_now = 0
        self.open_most = 0

    def add(self, kind: str, outcome) -> None:
        with self.lock:
            self.counts[kind][str(outcome)] += 1

    def opened(self, change: int) -> None:
        with self.lock:
            self.open_now += change
            self.open_most = max(self.open_most, self.open_now)


def _connect(host: str, port: int, source: str) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=5, source_address=(source, 0))
    sock.settimeout(5)
    return sock


SLOW_HEADER = (b"PUT /v1/recordings/00000000-0000-4000-8000-000000000000/chunks/0 HTTP/1.1\r\n"
               b"Host: witness\r\n", b"X-Slow: still-here\r\n")
SLOW_BODY = (b"PUT /v1/recordings/00000000-0000-4000-8000-000000000000/chunks/0 HTTP/1.1\r\n"
             b"Host: witness\r\nContent-Type: application/octet-stream\r\n"
             b"Content-Length: 262144\r\nAuthorization: Bearer x\r\n\r\n", b"x")


def slow_sender(kind: str, opening: bytes, trickle: bytes, host, port, source, deadline, tally: Tally) -> None:
    """Send `opening`, then `trickle` every 2 s until the deadline;
    reconnect when the server closes. Slow headers: a header line at a time;
    slow bodies: a whole header announcing 256 KiB, then a byte at a time."""
    while time.monotonic() < deadline:
        try:
            sock = _connect(host, port, source)
        except OSError as exc:
            tally.add(kind, type(exc).__name__)
            time.sleep(0.5)
            continue
        tally.opened(+1)
        try:
            sock.sendall(opening)
            while time.monotonic() < deadline:
                time.sleep(2)
                sock.sendall(trickle)
            tally.add(kind, "held_to_deadline")
        except OSError:
            tally.add(kind, "closed_by_server")
        finally:
            tally.opened(-1)
            sock.close()


def flood(kind: str, url: str, source, deadline, max_requests: int, tally: Tally) -> None:
    """Logins with random usernames, or anonymous registrations, back to back."""
    session = session_from(source)
    for _ in range(max_requests):
        if time.monotonic() >= deadline:
            break
        try:
            if kind == "logins":
                answer = session.post(url + "/v1/auth/login", timeout=10,
                                      json={"username": "guess-" + os.urandom(6).hex(), "password": "hunter2-hunter2"})
            else:
                answer = session.post(url + "/v1/devices", json={}, timeout=10)
            tally.add(kind, answer.status_code)
            if not answer.headers.get("Content-Type", "").startswith("application/json"):
                tally.add(kind, "not_json")
        except requests.RequestException as exc:
            tally.add(kind, type(exc).__name__)


def attack(url: str, *, seconds: float, source: str, slow_header_count: int, slow_body_count: int,
           login_clients: int, registration_clients: int, max_requests: int) -> dict:
    """Run every part of the attack at once until `seconds` have passed;
    return the tally: outcomes per kind, and the most slow connections that
    were open at one time."""
    parts = urlsplit(url)
    host, port = parts.hostname, parts.port
    deadline = time.monotonic() + seconds
    tally = Tally()
    threads = []
    for _ in range(slow_header_count):
        threads.append(threading.Thread(target=slow_sender, args=("slow_headers", *SLOW_HEADER, host, port, source,
                                                                  deadline, tally)))
    for _ in range(slow_body_count):
        threads.append(threading.Thread(target=slow_sender, args=("slow_bodies", *SLOW_BODY, host, port, source,
                                                                  deadline, tally)))
    for _ in range(login_clients):
        threads.append(threading.Thread(target=flood, args=("logins", url, source, deadline, max_requests, tally)))
    for _ in range(registration_clients):
        threads.append(threading.Thread(target=flood, args=("registrations", url, source, deadline,
                                                              max_requests, tally)))
    for thread in threads:
        thread.daemon = True
        thread.start()
    for thread in threads:
        thread.join(timeout=max(0.0, deadline - time.monotonic()) + 15)
    return {"counts": {kind: dict(counter) for kind, counter in tally.counts.items()},
            "slow_connections_open_at_most": tally.open_most, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--source", default="127.0.0.1")
    parser.add_argument("--slow-headers", type=int, default=30)
    parser.add_argument("--slow-bodies", type=int, default=30)
    parser.add_argument("--logins", type=int, default=32)
    parser.add_argument("--registrations", type=int, default=8)
    parser.add_argument("--max-requests", type=int, default=5000, help="per flooding client")
    args = parser.parse_args()
    if not urlsplit(args.url).hostname.startswith("127."):
        parser.error("this attacker only targets servers on loopback (127.0.0.0/8)")
    print(json.dumps(attack(args.url, seconds=args.seconds, source=args.source,
                            slow_header_count=args.slow_headers, slow_body_count=args.slow_bodies,
                            login_clients=args.logins, registration_clients=args.registrations,
                            max_requests=args.max_requests)), flush=True)


if __name__ == "__main__":
    main()
