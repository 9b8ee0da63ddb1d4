"""The built-in time-stamping authority, checked by the real `openssl ts`."""

from __future__ import annotations

import hashlib
import subprocess
from datetime import datetime, timezone

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from crypto.tsa import new_tsa_identity, time_stamp, token_time
from tests.support import openssl_ts_verify

NOW = datetime(2026, 11, 21, 14, 3, 7, 123456, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def identity():
    return new_tsa_identity("Witness Sync test", NOW)


def test_openssl_verifies_a_time_stamp(identity, tmp_path):
    data = b'{"format":"witness-manifest/1","version":1}'
    response = time_stamp(identity, hashlib.sha256(data).digest(), at=NOW, serial=42)
    result = openssl_ts_verify(tmp_path, data, response, identity.chain_pem())
    assert result.returncode == 0 and "Verification: OK" in result.stdout, result.stdout + result.stderr
    text = subprocess.run(["openssl", "ts", "-reply", "-in", "manifest.tsr", "-text"], cwd=tmp_path,
                          capture_output=True, text=True, check=True).stdout
    assert "Status: Granted." in text and "Serial number: 0x2A" in text
    assert "Time stamp: Nov 21 14:03:07.123 2026 GMT" in text
    assert token_time(response) == NOW.replace(microsecond=123000)


def test_one_changed_byte_of_the_data_fails(identity, tmp_path):
    data = b'{"format":"witness-manifest/1","version":1}'
    response = time_stamp(identity, hashlib.sha256(data).digest(), at=NOW, serial=1)
    result = openssl_ts_verify(tmp_path, data.replace(b"1}", b"2}"), response, identity.chain_pem())
    assert result.returncode != 0 and "message imprint mismatch" in (result.stdout + result.stderr)


@pytest.mark.parametrize("position", [0.2, 0.5, 0.8, -10])
def test_one_changed_byte_of_the_token_fails(identity, tmp_path, position):
    data = b"some manifest bytes"
    response = bytearray(time_stamp(identity, hashlib.sha256(data).digest(), at=NOW, serial=2))
    at = int(len(response) * position) if position > 0 else len(response) + position
    response[at] ^= 0x01
    result = openssl_ts_verify(tmp_path, data, bytes(response), identity.chain_pem())
    assert result.returncode != 0 and "Verification: OK" not in result.stdout


def test_another_authoritys_chain_does_not_vouch_for_it(identity, tmp_path):
    data = b"some manifest bytes"
    response = time_stamp(identity, hashlib.sha256(data).digest(), at=NOW, serial=3)
    stranger = new_tsa_identity("Someone else", NOW)
    result = openssl_ts_verify(tmp_path, data, response, stranger.chain_pem())
    assert result.returncode != 0 and "Verification: OK" not in result.stdout


def test_the_tsa_certificate_is_only_for_time_stamping(identity):
    usage = identity.tsa_certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    assert usage.critical and list(usage.value) == [ExtendedKeyUsageOID.TIME_STAMPING]
    assert identity.tsa_certificate.issuer == identity.root_certificate.subject
    assert identity.root_certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert identity.tsa_certificate.not_valid_after_utc.year >= NOW.year + 49


def test_only_sha256_digests_are_stamped(identity):
    with pytest.raises(ValueError):
        time_stamp(identity, b"\x00" * 20, at=NOW, serial=4)
