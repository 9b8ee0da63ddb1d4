"""Time-stamps after finalization: the external TSA (a real `openssl ts`
behind HTTP) and the back-fill of built-in tokens for older manifests."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from datetime import datetime, timedelta, timezone

import pytest

from crypto.tsa import TimeStampInvalid, verify_time_stamp
from sync.archive import Archive
from sync.domain import finalize
from sync.domain.timestamps import ExternalStampingJob, backfill_builtin_tokens, stamp_externally
from sync.settings import Settings
from tests.openssl_tsa import OpensslTsa, TsaHttpServer

from .test_races import new_recording, put

NOW = datetime(2026, 11, 21, 14, 3, 7, 123000, tzinfo=timezone.utc)


class Clock:
    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture(scope="module")
def tsa(tmp_path_factory):
    server = TsaHttpServer(OpensslTsa(tmp_path_factory.mktemp("tsa"))).start()
    yield server
    server.stop()


def finalized(archive: Archive, plaintext: bytes = b"footage") -> tuple[str, dict]:
    device_id, recording_id, key = new_recording(archive)
    put(archive, device_id, recording_id, key, 0, plaintext)
    assert finalize.finalize_recording(archive, recording_id) == 1
    return recording_id, finalize.signed_manifest(archive, recording_id)


def audit_entries(archive: Archive, action: str) -> list[dict]:
    rows = archive.database.query("SELECT * FROM audit WHERE action = ? ORDER BY id", [action])
    return [{**row, "detail": json.loads(row["detail"])} for row in rows]


def test_manifests_older_than_the_built_in_tsa_get_a_token_at_start_up(settings):
    clock = Clock(NOW)
    archive = Archive(settings, clock=clock)
    old_id, old = finalized(archive, b"filmed before the server had a TSA")
    recent_id, recent = finalized(archive, b"filmed later")
    # What a records file of the release before the built-in TSA holds.
    with archive.database.transaction() as db:
        db.execute("UPDATE manifests SET tsr = NULL WHERE recording_id = ?", [old_id])
    clock.now = NOW + timedelta(days=3)

    assert backfill_builtin_tokens(archive) == [(old_id, 1)]

    token = finalize.signed_manifest(archive, old_id).tsr
    facts = verify_time_stamp(token, hashlib.sha256(old.body).digest(), archive.keys.tsa.chain_pem().encode())
    assert facts.gen_time == NOW + timedelta(days=3)  # dated when made, not when signed
    assert finalize.signed_manifest(archive, recent_id).tsr == recent.tsr  # untouched
    [entry] = audit_entries(archive, "manifest.time_stamp_backfilled")
    assert entry["recording_id"] == old_id and entry["actor"] == "system"
    assert entry["detail"] == {"version": 1, "manifest_sha256": old.sha256, "tsa": "builtin",
                               "gen_time": "2026-11-24T14:03:07.123Z",
                               "token_sha256": hashlib.sha256(token).hexdigest()}
    assert backfill_builtin_tokens(archive) == []  # once


def with_tsa(archive: Archive, url: str, ca_file) -> Archive:
    archive.settings = dataclasses.replace(archive.settings, tsa_url=url, tsa_ca_file=ca_file)
    return archive


def test_an_external_token_is_fetched_verified_kept_and_audited(archive, tsa):
    with_tsa(archive, tsa.url, tsa.tsa.ca_file)
    first_id, first = finalized(archive, b"first")
    second_id, _ = finalized(archive, b"second")
    assert finalize.signed_manifest(archive, first_id).external_tsr is None

    run = stamp_externally(archive)

    assert run.failure is None and run.stamped == [(first_id, 1), (second_id, 1)]  # oldest first
    token = finalize.signed_manifest(archive, first_id).external_tsr
    facts = verify_time_stamp(token, hashlib.sha256(first.body).digest(), tsa.tsa.ca_file.read_bytes())
    assert facts.tsa_name == "CN=Test TSA authority,O=Test TSA"
    # The built-in token's chain does not vouch for the external one.
    with pytest.raises(TimeStampInvalid):
        verify_time_stamp(token, hashlib.sha256(first.body).digest(), archive.keys.tsa.chain_pem().encode())
    entries = audit_entries(archive, "manifest.time_stamped_externally")
    assert [entry["recording_id"] for entry in entries] == [first_id, second_id]
    assert entries[0]["detail"]["token_sha256"] == hashlib.sha256(token).hexdigest()
    assert entries[0]["detail"]["serial_number"] == str(facts.serial_number)
    assert entries[0]["detail"]["tsa_url"] == tsa.url
    assert stamp_externally(archive).stamped == []  # nothing left to ask for


def test_a_tsa_that_is_down_leaves_the_manifest_without_a_token_until_it_is_back(archive, tsa):
    with_tsa(archive, tsa.url, tsa.tsa.ca_file)
    recording_id, _ = finalized(archive)
    tsa.stop()
    try:
        run = stamp_externally(archive)
        assert run.stamped == [] and "unavailable" in run.failure and "ConnectionError" in run.failure
        assert finalize.signed_manifest(archive, recording_id).external_tsr is None
    finally:
        tsa.start()
    assert stamp_externally(archive).stamped == [(recording_id, 1)]


def test_a_reply_that_does_not_chain_to_the_configured_ca_is_not_kept(archive, tsa, tmp_path):
    stranger = OpensslTsa(tmp_path / "stranger", name="Stranger TSA")
    with_tsa(archive, tsa.url, stranger.ca_file)
    recording_id, _ = finalized(archive)
    run = stamp_externally(archive)
    assert run.stamped == [] and "does not chain to any root" in run.failure
    assert finalize.signed_manifest(archive, recording_id).external_tsr is None
    assert audit_entries(archive, "manifest.time_stamped_externally") == []
    with_tsa(archive, tsa.url, tmp_path / "missing.pem")
    assert "cannot read WITNESS_TSA_CA_FILE" in stamp_externally(archive).failure


def test_the_job_waits_longer_after_each_failure_and_recovers(archive, tsa, tmp_path):
    stranger = OpensslTsa(tmp_path / "stranger", name="Stranger TSA")
    with_tsa(archive, tsa.url, stranger.ca_file)  # every reply fails to verify
    recording_id, _ = finalized(archive)
    now = [1000.0]
    job = ExternalStampingJob(archive, first_retry_seconds=1.0, monotonic=lambda: now[0])
    asked = tsa.requests_seen

    def tick(seconds: float) -> int:
        now[0] += seconds
        job()
        return tsa.requests_seen - asked

    assert tick(0) == 1
    assert tick(0.5) == 1  # waits 1 s
    assert tick(0.6) == 2
    assert tick(1.5) == 2  # then 2 s
    assert tick(0.6) == 3
    with_tsa(archive, tsa.url, tsa.tsa.ca_file)
    assert tick(3.9) == 3  # then 4 s
    assert tick(0.2) == 4
    assert finalize.signed_manifest(archive, recording_id).external_tsr is not None
    finalized(archive)
    assert tick(0) == 5  # back to asking at once


def test_no_external_tsa_configured_means_nothing_is_asked(archive):
    finalized(archive)
    assert stamp_externally(archive).stamped == [] and stamp_externally(archive).failure is None


def test_a_tsa_url_needs_a_ca_file(tmp_path):
    base = {"WITNESS_DATA_DIR": str(tmp_path / "data"), "WITNESS_KEYS_DIR": str(tmp_path / "keys")}
    with pytest.raises(ValueError, match="WITNESS_TSA_URL needs WITNESS_TSA_CA_FILE"):
        Settings.from_env({**base, "WITNESS_TSA_URL": "https://tsa.example/tsr"})
    with pytest.raises(ValueError, match="http:// or https://"):
        Settings.from_env({**base, "WITNESS_TSA_URL": "ftp://tsa.example", "WITNESS_TSA_CA_FILE": "ca.pem"})
    settings = Settings.from_env({**base, "WITNESS_TSA_URL": "https://tsa.example/tsr",
                                  "WITNESS_TSA_CA_FILE": str(tmp_path / "ca.pem")})
    assert settings.tsa_url == "https://tsa.example/tsr" and settings.tsa_ca_file == tmp_path / "ca.pem"
    assert Settings.from_env(base).tsa_url is None
