"""Server keys: made once, private on disk, the same for every process."""

import stat
import subprocess
import sys

from crypto.keys import load_or_create_server_keys


def test_keys_are_made_once_with_private_modes(tmp_path):
    keys_dir = tmp_path / "keys"
    first = load_or_create_server_keys(keys_dir)
    second = load_or_create_server_keys(keys_dir)
    assert first.hpke_key_id == second.hpke_key_id and first.signing_key_id == second.signing_key_id
    assert first.token_secret == second.token_secret and len(first.token_secret) == 48
    assert stat.S_IMODE(keys_dir.stat().st_mode) == 0o700
    for path in keys_dir.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in keys_dir.iterdir()) == ["hpke-x25519.pem", "signing-ed25519.pem", "token-secret",
                                                          "tsa-identity.pem"]
    assert first.tsa.chain_pem() == second.tsa.chain_pem()


def test_processes_starting_together_agree_on_one_key(tmp_path):
    code = ("import sys; from crypto.keys import load_or_create_server_keys as l; "
            "k = l(sys.argv[1]); print(k.hpke_key_id, k.signing_key_id, k.tsa.tsa_certificate.serial_number)")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "keys")], stdout=subprocess.PIPE,
                              text=True) for _ in range(6)]
    answers = {p.communicate(timeout=60)[0] for p in procs}
    assert len(answers) == 1
    assert not [p for p in (tmp_path / "keys").iterdir() if p.name.endswith(".tmp")]
