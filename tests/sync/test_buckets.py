"""Token buckets of the per-device limits, on a clock the test moves."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from sync.domain.buckets import TokenBuckets, whole_seconds
from sync.settings import Settings


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def allowed(buckets: TokenBuckets, key: str, times: int) -> int:
    return sum(1 for _ in range(times) if buckets.take(key) == 0.0)


def test_131_recordings_in_a_second_from_one_device_are_slowed_to_the_default_burst_then_one_every_10_s():
    defaults = Settings(data_dir=Path("unused-data"), keys_dir=Path("unused-keys"))
    clock = Clock()
    recordings = TokenBuckets(defaults.device_recording_burst, 1 / defaults.device_recording_interval_seconds,
                              clock=clock)
    assert allowed(recordings, "phone", 131) == 30
    assert recordings.take("phone") == pytest.approx(10.0)
    clock.now += 9.9
    assert recordings.take("phone") == pytest.approx(0.1)
    clock.now += 0.1
    assert recordings.take("phone") == 0.0
    # Another phone is not held back by the first.
    assert allowed(recordings, "another phone", 30) == 30


def test_a_phone_sending_its_backlog_keeps_the_default_request_rate():
    defaults = Settings(data_dir=Path("unused-data"), keys_dir=Path("unused-keys"))
    clock = Clock()
    requests = TokenBuckets(defaults.device_request_burst, defaults.device_requests_per_second, clock=clock)
    assert allowed(requests, "phone", 500) == 500
    sent = 0
    for _ in range(60 * 100):  # a minute, a request every 10 ms
        clock.now += 0.01
        sent += requests.take("phone") == 0.0
    assert sent == pytest.approx(60 * 50, abs=1)


def test_a_refusal_takes_nothing_and_says_how_long_to_wait():
    clock = Clock()
    buckets = TokenBuckets(2, 0.5, clock=clock)
    assert allowed(buckets, "k", 2) == 2
    assert buckets.take("k") == pytest.approx(2.0)
    assert buckets.take("k") == pytest.approx(2.0)  # refusals do not push the wait back
    clock.now += 2.0
    assert buckets.take("k") == 0.0
    assert whole_seconds(0.01) == 1 and whole_seconds(2.0) == 2 and whole_seconds(2.1) == 3


def test_idle_buckets_are_forgotten_and_memory_is_bounded():
    clock = Clock()
    buckets = TokenBuckets(5, 1.0, clock=clock, max_keys=100)
    for n in range(50):
        buckets.take(f"device-{n}")
    assert len(buckets) == 50
    clock.now += 5.0  # every one of them is full again
    buckets.take("newcomer")
    assert len(buckets) == 1
    for n in range(1000):
        buckets.take(f"flood-{n}")
    assert len(buckets) == 100
    # A dropped key starts again with a full bucket: lenient, never stricter.
    assert allowed(buckets, "flood-0", 5) == 5


def test_threads_together_never_get_more_than_the_burst():
    clock = Clock()  # frozen: nothing refills while they race
    buckets = TokenBuckets(500, 1.0, clock=clock)
    granted = []

    def hammer():
        granted.append(allowed(buckets, "phone", 200))

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(granted) == 500
