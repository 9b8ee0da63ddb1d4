#!/usr/bin/env python3
"""Coverage benchmark (issue 14, item 2): how long after its acknowledgement
is a chunk covered by a checkpoint of the transparency log that an external
TSA has time-stamped?

One real server (`witness-serve`, the front door, tests/support.py's
ServerProcess) with its checkpoint cadence at the default 5 s, and a real
`openssl ts -reply` TSA behind HTTP (tests/openssl_tsa.py) as
`WITNESS_TSA_URL`. A few phones each send one chunk a second for the
window; every acknowledgement's receipt names its leaf index. Meanwhile
`/log/checkpoint` and `/log/stamps/<size>` are polled every 50 ms; a chunk
is covered at the first moment a checkpoint whose size is past its leaf has
an external token (`kept_at`, the server's clock, the same machine's as the
client's). Prints the spread of (covered - acknowledged), and the same for
the built-in TSA's token (made with the checkpoint itself).

Nothing asserts on timings.

    .venv/bin/python bench/coverage.py                  # 60 s window, 4 phones
    .venv/bin/python bench/coverage.py --seconds 20 --phones 2
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import requests

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

from tests.openssl_tsa import OpensslTsa, TsaHttpServer  # noqa: E402  (real parts, started as the tests do)
from tests.support import Phone, ServerProcess  # noqa: E402


def wire_time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--phones", type=int, default=4)
    p.add_argument("--checkpoint-seconds", type=float, default=5.0, help="WITNESS_LOG_CHECKPOINT_SECONDS (default 5)")
    args = p.parse_args()
    root = Path(tempfile.mkdtemp(prefix="witness-coverage-"))
    load_start = Path("/proc/loadavg").read_text().split()[:3]
    tsa = TsaHttpServer(OpensslTsa(root / "tsa", key_type="rsa")).start()
    server = ServerProcess(root / "server", WITNESS_LOG_CHECKPOINT_SECONDS=args.checkpoint_seconds,
                           WITNESS_TSA_URL=tsa.url, WITNESS_TSA_CA_FILE=tsa.tsa.ca_file).start()
    acks: list[tuple[int, float]] = []  # (leaf index, when acknowledged by the client's clock)
    covered_external: dict[int, float] = {}  # checkpoint size -> when its external token was kept
    covered_builtin: dict[int, float] = {}  # checkpoint size -> when it was made
    stop = threading.Event()

    def phone_loop() -> None:
        recording = Phone(server).create_recording()
        index, next_send = 0, time.monotonic()
        while not stop.is_set():
            answer = recording.put(index, recording.chunk(index))
            if answer.status_code == 201:
                acks.append((answer.json()["receipt"]["leaf_index"], time.time()))
            index += 1
            next_send += 1.0
            time.sleep(max(0.0, next_send - time.monotonic()))

    def poll() -> None:
        while time.time() < poll_until:
            answer = requests.get(server.url + "/log/checkpoint")
            if answer.status_code == 200:
                size = int(answer.text.split("\n")[1])
                if size not in covered_external:
                    kept = requests.get(f"{server.url}/log/stamps/{size}")
                    if kept.status_code == 200:
                        facts = kept.json()
                        covered_builtin.setdefault(size, wire_time(facts["created_at"]))
                        if facts["external"]:
                            covered_external[size] = wire_time(facts["external"]["kept_at"])
            time.sleep(0.05)

    poll_until = float("inf")
    try:
        threads = [threading.Thread(target=phone_loop) for _ in range(args.phones)]
        poller = threading.Thread(target=poll)
        for thread in threads + [poller]:
            thread.start()
        time.sleep(args.seconds)
        stop.set()
        for thread in threads:
            thread.join()
        # Let the last acknowledgements be covered (or give up after three cadences).
        last_leaf = max(leaf for leaf, _ in acks)
        deadline = time.time() + 3 * args.checkpoint_seconds + 10
        while time.time() < deadline and (not covered_external or max(covered_external) <= last_leaf):
            time.sleep(0.2)
        poll_until = 0.0
        poller.join()
    finally:
        server.stop()
        tsa.stop()
    load_end = Path("/proc/loadavg").read_text().split()[:3]

    def delays(covered: dict[int, float]) -> list[float]:
        sizes = sorted(covered)
        out = []
        for leaf, acked in acks:
            first = next((covered[s] for s in sizes if s > leaf), None)
            if first is not None:
                out.append(max(0.0, first - acked))
        return out

    print(f"Coverage benchmark: {len(acks)} chunks acknowledged by {args.phones} phones over {args.seconds:.0f} s; "
          f"checkpoint every {args.checkpoint_seconds:g} s; external TSA: local `openssl ts -reply` over HTTP")
    print(f"load (1/5/15 min) at start {' '.join(load_start)}, at end {' '.join(load_end)}\n")
    print("| covered by | chunks covered | p50 s | p95 s | max s |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, covered in (("a checkpoint with the built-in TSA's token", covered_builtin),
                          ("a checkpoint with the external TSA's token", covered_external)):
        values = sorted(delays(covered))
        if not values:
            print(f"| {name} | 0 | — | — | — |")
            continue
        p95 = values[min(len(values) - 1, int(0.95 * len(values)))]
        print(f"| {name} | {len(values)} of {len(acks)} | {statistics.median(values):.2f} | {p95:.2f} | "
              f"{values[-1]:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
