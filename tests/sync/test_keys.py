"""Server keys: made once, private on disk, the same for every process."""

import stat
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest

from crypto.keys import load_or_create_server_keys

# A fixed time far from today, on purpose: nothing here may depend on the calendar.
MADE_AT = datetime(2031, 5, 6, 7, 8, 9, tzinfo=timezone.utc)


def test_keys_are_made_once_with_private_modes(tmp_path):
    keys_dir = tmp_path / "keys"
    first = load_or_create_server_keys(keys_dir, now=MADE_AT)
    second = load_or_create_server_keys(keys_dir, now=MADE_AT + timedelta(days=400))
    assert first.hpke_key_id == second.hpke_key_id and first.signing_key_id == second.signing_key_id
    assert first.token_secret == second.token_secret and len(first.token_secret) == 48
    assert stat.S_IMODE(keys_dir.stat().st_mode) == 0o700
    for path in keys_dir.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in keys_dir.iterdir()) == ["hpke-x25519.pem", "log-ed25519.pem", "signing-ed25519.pem",
                                                          "token-secret", "tsa-identity.pem"]
    assert first.tsa.chain_pem() == second.tsa.chain_pem()


def test_processes_starting_together_agree_on_one_key(tmp_path):
    code = ("import sys; from crypto.keys import load_or_create_server_keys as l; "
            "from datetime import datetime, timezone; "
            "k = l(sys.argv[1], now=datetime(2031, 5, 6, tzinfo=timezone.utc)); print(k.hpke_key_id, k.signing_key_id, k.tsa.tsa_certificate.serial_number)")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "keys")], stdout=subprocess.PIPE,
                              text=True) for _ in range(6)]
    answers = {p.communicate(timeout=60)[0] for p in procs}
    assert len(answers) == 1
    assert not [p for p in (tmp_path / "keys").iterdir() if p.name.endswith(".tmp")]


def test_the_time_stamping_certificates_start_at_the_time_given_not_the_real_clock(tmp_path):
    keys = load_or_create_server_keys(tmp_path / "keys", now=MADE_AT)
    for certificate in (keys.tsa.tsa_certificate, keys.tsa.root_certificate):
        assert MADE_AT - timedelta(minutes=10) < certificate.not_valid_before_utc <= MADE_AT
        assert certificate.not_valid_after_utc > MADE_AT + timedelta(days=365 * 49)
    # Loading again later keeps the certificate made the first time.
    again = load_or_create_server_keys(tmp_path / "keys", now=MADE_AT + timedelta(days=400))
    assert again.tsa.tsa_certificate == keys.tsa.tsa_certificate


def test_a_naive_time_is_refused(tmp_path):
    with pytest.raises(ValueError, match="aware"):
        load_or_create_server_keys(tmp_path / "keys", now=datetime(2031, 5, 6))
