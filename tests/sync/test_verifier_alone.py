"""`witness-verify` on its own: the other side's expert runs it on a machine
that has none of the server. It starts, and checks a real bundle, in a fresh
Python where the database, POSIX-only modules and every web and storage
library cannot be imported, and fails a damaged bundle just as cleanly."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from sync.archive import Archive
from sync.domain import accounts, copies, finalize, ingest
from sync.domain.copies import StaffMember
from sync.evidence.verify import verify_bundle
from sync.settings import Settings

from .test_health import chunk, recording_body

VERIFY_SCRIPT = Path(sys.executable).with_name("witness-verify")
# What a verifier must not need: the records (SQLite and sqlite-utils, and
# their PostgreSQL successor), POSIX-only locking (absent on Windows), the
# web stack, the scheduler, the network, and object storage.
BLOCKED = ("sqlite3", "_sqlite3", "sqlite_utils", "fcntl", "flask", "werkzeug", "apscheduler", "requests",
           "psycopg", "boto3")
# Run as `python guard.py TARGET ARGS...`: blocks BLOCKED, then runs the
# script TARGET as __main__ with ARGS (or imports the module named after
# --import).
GUARD = f'''
import importlib, runpy, sys

BLOCKED = {BLOCKED!r}


class RefuseBlocked:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{{name}} is blocked: witness-verify must not need it", name=name)
        return None


already = sorted(name for name in sys.modules if name.split(".")[0] in BLOCKED)
if already:
    sys.exit(f"imported before the guard was in place: {{already}}")
sys.meta_path.insert(0, RefuseBlocked())
sys.argv = sys.argv[1:]
if sys.argv[0] == "--import":
    importlib.import_module(sys.argv[1])
else:
    runpy.run_path(sys.argv[0], run_name="__main__")
'''


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    """A real copy bundle, built by the domain as the scheduler builds one: a
    complete three-piece recording, finalized, asked for and approved."""
    root = tmp_path_factory.mktemp("copy")
    archive = Archive(Settings(data_dir=root / "data", keys_dir=root / "keys", idle_finalize_seconds=60))
    device_id = accounts.register_device(archive)
    body, key = recording_body(archive)
    assert ingest.create_recording(archive, device_id, body)[1] is True
    for index in range(3):
        chunk(archive, device_id, body, key, index, final=index == 2)
    assert finalize.finalize_due_recordings(archive) == [(body.recording_id, 1)]
    request = copies.request_copy(archive, StaffMember("lee", "lawyer", 1), body.recording_id,
                                  copies.NewCopyRequest("People v. Doe", "Disclosure"))
    copies.approve(archive, StaffMember("dana", "custodian", 1), request["request_id"], copies.Decision())
    assert copies.build_bundle(archive, request["request_id"])
    return copies.bundle_path(archive, request["request_id"])


def unzipped(bundle: Path, into: Path) -> Path:
    with zipfile.ZipFile(bundle) as zf:
        zf.extractall(into)
    (folder,) = into.iterdir()
    return folder


def guarded(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    guard = tmp_path / "guard.py"
    guard.write_text(GUARD)
    return subprocess.run([sys.executable, str(guard), *args], capture_output=True, text=True, cwd=tmp_path,
                          timeout=120)


def test_the_guard_refuses_the_domain(tmp_path):
    # Without this, a guard that blocked nothing would pass the tests below.
    refused = guarded(tmp_path, "--import", "sync.domain.audit")
    assert refused.returncode != 0
    # The domain's records (sqlite3, sqlite_utils, fcntl for the writer lock)
    # are among what it refuses, whichever the import meets first.
    assert re.search(r"(sqlite3|sqlite_utils|fcntl) is blocked", refused.stderr), refused.stderr


def test_witness_verify_checks_a_real_bundle_with_the_server_unimportable(bundle, tmp_path):
    done = guarded(tmp_path, str(VERIFY_SCRIPT), str(bundle))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "All 9 checks passed." in done.stdout
    assert "[FAILED]" not in done.stdout and "[not checked]" not in done.stdout


def test_witness_verify_fails_a_damaged_bundle_cleanly_with_the_server_unimportable(bundle, tmp_path):
    folder = unzipped(bundle, tmp_path / "copy")
    footage = folder / "footage.mp4"
    changed = bytearray(footage.read_bytes())
    changed[len(changed) // 2] ^= 0x01
    footage.write_bytes(bytes(changed))

    done = guarded(tmp_path, str(VERIFY_SCRIPT), str(folder))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "NOT VERIFIED: check 2 failed: the file footage.mp4 was changed" in done.stdout
    assert "Traceback" not in done.stderr

    unreadable = tmp_path / "not-a-bundle.zip"
    unreadable.write_bytes(b"not a zip at all")
    done = guarded(tmp_path, str(VERIFY_SCRIPT), str(unreadable))
    assert done.returncode == 2 and "is not a zip file" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("line, problem", [
    (b'{"at":NaN}', "is not in canonical form, so it is not the exact bytes that were signed"),
    (b'{"at":' + b"[" * 100_000 + b"]" * 100_000 + b"}", "is not JSON"),
], ids=["nan", "nested-too-deep"])
def test_a_custody_log_line_no_server_writes_fails_its_check_instead_of_crashing(bundle, tmp_path, line, problem):
    folder = unzipped(bundle, tmp_path / "copy")
    log = folder / "custody-log.jsonl"
    lines = log.read_bytes().splitlines(keepends=True)
    log.write_bytes(line + b"\n" + b"".join(lines[1:]))

    outcome = verify_bundle(folder).outcomes[8]
    assert outcome.status == "FAILED"
    assert outcome.detail == f"line 1 of the custody log {problem}"
