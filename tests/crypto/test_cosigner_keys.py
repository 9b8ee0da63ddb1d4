"""A witness cosigner's key: made once (folder 0700, file 0600), the same key
on every later start, and its cosignatures checked by the vkey it prints."""

import stat

import pytest

from crypto.cosigner_keys import COSIGNER_KEY_FILE, load_or_create_cosigner
from crypto.tlog.checkpoint import Checkpoint
from crypto.tlog.cosignature import CosignatureVerifier
from crypto.tlog.merkle import EMPTY_ROOT


def test_the_key_is_made_once_private_and_loaded_the_same_afterwards(tmp_path):
    keys = tmp_path / "keys"

    first = load_or_create_cosigner(keys, "clinic.example.edu/witness")
    again = load_or_create_cosigner(keys, "clinic.example.edu/witness")

    assert stat.S_IMODE(keys.stat().st_mode) == 0o700
    assert stat.S_IMODE((keys / COSIGNER_KEY_FILE).stat().st_mode) == 0o600
    assert (keys / COSIGNER_KEY_FILE).read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert first.verifier.vkey == again.verifier.vkey
    assert first.verifier.vkey.startswith("clinic.example.edu/witness+")
    text = Checkpoint("example.org/log", 0, EMPTY_ROOT).body()
    signature = again.cosign(text, 1_650_000_000)
    assert CosignatureVerifier.from_vkey(first.verifier.vkey).verify(text.encode(), signature.signature)


def test_a_file_that_is_not_an_ed25519_key_is_refused(tmp_path):
    (tmp_path / COSIGNER_KEY_FILE).write_bytes(b"not a key\n")

    with pytest.raises(ValueError):
        load_or_create_cosigner(tmp_path, "clinic.example.edu/witness")


def test_a_name_with_a_space_is_refused(tmp_path):
    with pytest.raises(ValueError):
        load_or_create_cosigner(tmp_path, "a clinic")
