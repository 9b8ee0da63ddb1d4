"""The leader-lock port's contract, run against every adapter (flock and a
PostgreSQL advisory lock): exactly one holder, a waiting candidate takes
over when the holder lets go or is killed, a candidate stops waiting when
told, and a holder knows when it no longer holds the lock."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from ..support import PROJECT_ROOT
from .spec import open_leader_lock


@pytest.fixture(params=["flock", "postgresql"])
def lock_spec(request, tmp_path) -> tuple[str, str]:
    if request.param == "flock":
        return "flock", str(tmp_path / "scheduler.lock")
    return "postgresql", request.getfixturevalue("postgresql").new_database()


def compete(lock, stop: threading.Event) -> tuple[threading.Thread, threading.Event]:
    leading = threading.Event()

    def run():
        if lock.acquire(stop):
            leading.set()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, leading


def test_one_holder_at_a_time_and_the_next_takes_over_on_release(lock_spec):
    first, second = open_leader_lock(lock_spec), open_leader_lock(lock_spec)
    stop = threading.Event()
    assert first.acquire(stop) and first.holds()
    _, second_leads = compete(second, stop)
    assert not second_leads.wait(1.5)  # waits while the first holds it
    first.release()
    assert second_leads.wait(10) and second.holds() and not first.holds()
    second.release()


def test_a_killed_leader_is_replaced(lock_spec):
    leader = subprocess.Popen([sys.executable, "-m", "tests.contract.spec", "lead", *lock_spec], cwd=PROJECT_ROOT,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert leader.stdout.readline().strip() == "leading"
        candidate, stop = open_leader_lock(lock_spec), threading.Event()
        _, leads = compete(candidate, stop)
        assert not leads.wait(1.5)
        leader.kill()  # SIGKILL: nothing of the leader's runs to let go
        started = time.monotonic()
        assert leads.wait(15), "the lock was not freed when its holder died"
        assert time.monotonic() - started < 5
        candidate.release()
    finally:
        leader.kill()
        leader.wait()


def test_a_waiting_candidate_stops_when_told(lock_spec):
    holder, candidate = open_leader_lock(lock_spec), open_leader_lock(lock_spec)
    assert holder.acquire(threading.Event())
    stop = threading.Event()
    thread, leads = compete(candidate, stop)
    time.sleep(0.5)
    stop.set()
    thread.join(timeout=5)
    assert not thread.is_alive() and not leads.is_set() and not candidate.holds()
    holder.release()


def test_a_leader_whose_database_restarted_knows_it_no_longer_leads(own_postgresql):
    spec = ("postgresql", own_postgresql.new_database())
    lock = open_leader_lock(spec)
    assert lock.acquire(threading.Event()) and lock.holds()
    own_postgresql.stop("immediate")
    own_postgresql.start()
    assert not lock.holds()  # its session, and the lock with it, is gone
    other = open_leader_lock(spec)
    assert other.acquire(threading.Event())  # another may lead now
    _, again = compete(lock, stop := threading.Event())
    assert not again.wait(1.0)
    stop.set()
    other.release()


def test_anyone_can_ask_whether_someone_leads_without_disturbing_it(lock_spec):
    holder, onlooker, candidate = (open_leader_lock(lock_spec) for _ in range(3))
    assert not onlooker.someone_leads()
    assert holder.acquire(threading.Event())
    assert onlooker.someone_leads() and holder.someone_leads()  # the holder asking itself too
    assert holder.holds()
    _, leads = compete(candidate, stop := threading.Event())
    holder.release()
    assert leads.wait(10) and onlooker.someone_leads()
    candidate.release()
    stop.set()
    assert not onlooker.someone_leads()
