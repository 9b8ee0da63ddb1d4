"""The built-in time-stamping authority, checked by the real `openssl ts`;
and `verify_time_stamp`, checked against tokens of the built-in TSA, of real
`openssl ts -reply` TSAs (EC and RSA), and of hand-made signers."""

from __future__ import annotations

import hashlib
import subprocess
from datetime import datetime, timedelta, timezone

import pytest
from asn1crypto import algos, cms, core, tsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from crypto.tsa import (POLICY_OID, TimeStampInvalid, TsaIdentity, new_tsa_identity, time_stamp,
                        time_stamp_request, token_time, verify_time_stamp, verify_time_stamp_reply)
from tests.openssl_tsa import POLICY, OpensslTsa
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


# --- verify_time_stamp --------------------------------------------------------

DATA = b'{"format":"witness-manifest/1","version":3}'
DIGEST = hashlib.sha256(DATA).digest()


def _der(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.DER)


def _pem(*certificates: x509.Certificate) -> bytes:
    return b"".join(certificate.public_bytes(serialization.Encoding.PEM) for certificate in certificates)


@pytest.fixture(scope="module")
def openssl_ec(tmp_path_factory):
    """An EC TSA whose tokens carry only its own certificate."""
    return OpensslTsa(tmp_path_factory.mktemp("openssl-ec"), key_type="ec")


@pytest.fixture(scope="module")
def openssl_rsa(tmp_path_factory):
    """An RSA TSA under an intermediate CA, putting its whole chain into every token."""
    return OpensslTsa(tmp_path_factory.mktemp("openssl-rsa"), key_type="rsa", intermediate=True, embed_chain=True)


def test_a_built_in_token_verifies_and_says_what_it_proves(identity):
    facts = verify_time_stamp(time_stamp(identity, DIGEST, at=NOW, serial=42), DIGEST,
                              identity.chain_pem().encode())
    assert facts.gen_time == NOW.replace(microsecond=123000) and facts.gen_time.tzinfo is not None
    assert facts.serial_number == 42
    assert facts.tsa_name == "O=Witness Sync test,CN=Witness Sync test time-stamping authority"
    assert facts.policy == POLICY_OID
    assert facts.root_sha256 == hashlib.sha256(_der(identity.root_certificate)).hexdigest()
    # The root alone is enough: the token carries the TSA's certificate.
    assert verify_time_stamp(time_stamp(identity, DIGEST, at=NOW, serial=42), DIGEST,
                             _pem(identity.root_certificate)) == facts


@pytest.mark.parametrize("which", ["openssl_ec", "openssl_rsa"])
def test_tokens_of_a_real_openssl_tsa_verify(which, request):
    tsa = request.getfixturevalue(which)
    before = datetime.now(timezone.utc).replace(microsecond=0)
    response = tsa.stamp(DATA)
    after = datetime.now(timezone.utc)
    facts = verify_time_stamp(response, DIGEST, tsa.ca_file.read_bytes())
    text = subprocess.run(["openssl", "ts", "-reply", "-in", "/dev/stdin", "-text"], input=response,
                          capture_output=True, check=True).stdout.decode()
    assert f"Serial number: 0x{facts.serial_number:02X}" in text
    assert facts.policy == POLICY and f"Policy OID: {POLICY}" in text
    assert facts.tsa_name == "CN=Test TSA authority,O=Test TSA"
    root = x509.load_pem_x509_certificate(tsa.root_pem.read_bytes())
    assert facts.root_sha256 == hashlib.sha256(_der(root)).hexdigest()
    assert before <= facts.gen_time <= after


def test_an_intermediate_may_come_from_the_trusted_file_instead_of_the_token(tmp_path):
    tsa = OpensslTsa(tmp_path, key_type="ec", intermediate=True, embed_chain=False)
    response = tsa.stamp(DATA)
    assert verify_time_stamp(response, DIGEST, tsa.ca_file.read_bytes()).tsa_name.startswith("CN=Test TSA authority")
    with pytest.raises(TimeStampInvalid, match="does not chain"):
        verify_time_stamp(response, DIGEST, tsa.root_pem.read_bytes())  # the intermediate is nowhere


def test_a_token_over_other_data_fails(identity, openssl_ec):
    other = hashlib.sha256(DATA + b" ").digest()
    with pytest.raises(TimeStampInvalid) as built_in:
        verify_time_stamp(time_stamp(identity, DIGEST, at=NOW), other, identity.chain_pem().encode())
    with pytest.raises(TimeStampInvalid) as openssl:
        verify_time_stamp(openssl_ec.stamp(DATA), other, openssl_ec.ca_file.read_bytes())
    assert str(built_in.value) == str(openssl.value) == "the token is over other data (message imprint mismatch)"


def test_another_root_does_not_vouch_for_a_token(identity, openssl_ec, openssl_rsa):
    stranger = new_tsa_identity("Someone else", NOW)
    with pytest.raises(TimeStampInvalid, match="does not chain to any root"):
        verify_time_stamp(time_stamp(identity, DIGEST, at=NOW), DIGEST, _pem(stranger.root_certificate))
    with pytest.raises(TimeStampInvalid, match="does not chain to any root"):
        verify_time_stamp(openssl_ec.stamp(DATA), DIGEST, openssl_rsa.root_pem.read_bytes())
    # The RSA token carries its own root: carried certificates are never trusted.
    with pytest.raises(TimeStampInvalid, match="does not chain to any root"):
        verify_time_stamp(openssl_rsa.stamp(DATA), DIGEST, openssl_ec.ca_file.read_bytes())
    # Nor is a certificate trusted that is not self-signed, the TSA's own included.
    with pytest.raises(TimeStampInvalid, match="does not chain to any root"):
        verify_time_stamp(time_stamp(identity, DIGEST, at=NOW), DIGEST, _pem(identity.tsa_certificate))


def test_a_tsa_certificate_without_critical_time_stamping_usage_fails(tmp_path):
    for usage, critical in (([ExtendedKeyUsageOID.TIME_STAMPING], False),
                            ([ExtendedKeyUsageOID.TIME_STAMPING, ExtendedKeyUsageOID.SERVER_AUTH], True),
                            (None, False)):
        identity = _hand_made_identity(ec.generate_private_key(ec.SECP256R1()), usage=usage, critical=critical)
        response = time_stamp(identity, DIGEST, at=NOW)
        with pytest.raises(TimeStampInvalid, match="not a time-stamping certificate"):
            verify_time_stamp(response, DIGEST, identity.chain_pem().encode())
    # openssl agrees: it will not even sign with such a certificate.
    tsa = OpensslTsa(tmp_path, critical_eku=False)
    with pytest.raises(RuntimeError):
        tsa.stamp(DATA)


def test_a_token_made_outside_its_certificates_validity_fails(identity):
    too_early = NOW - timedelta(days=1)  # the identity's certificates start at NOW - 5 minutes
    with pytest.raises(TimeStampInvalid, match="lies outside the validity"):
        verify_time_stamp(time_stamp(identity, DIGEST, at=too_early), DIGEST, identity.chain_pem().encode())


def test_a_refusal_is_reported_with_its_reason(openssl_ec):
    query = subprocess.run(["openssl", "ts", "-query", "-digest", "00" * 20, "-sha1", "-cert"],
                           capture_output=True, check=True).stdout
    refusal = openssl_ec.reply(query)  # the TSA stamps SHA-256, -384 and -512 only
    with pytest.raises(TimeStampInvalid, match=r"refused the request \(status rejection: bad_alg"):
        verify_time_stamp(refusal, DIGEST, openssl_ec.ca_file.read_bytes())


def test_garbage_and_trailing_bytes_fail(identity):
    response = time_stamp(identity, DIGEST, at=NOW)
    chain = identity.chain_pem().encode()
    for bad in (b"", b"\x30\x00", b"not a time-stamp", response + b"\x00", response[:-1]):
        with pytest.raises(TimeStampInvalid, match="not a well-formed RFC 3161 response"):
            verify_time_stamp(bad, DIGEST, chain)
    with pytest.raises(TimeStampInvalid, match="no readable PEM certificate"):
        verify_time_stamp(response, DIGEST, b"")


STATUS_VALUE_AT = 8  # 30 82 LL LL | 30 03 02 01 [status]


@pytest.mark.parametrize("which", ["built_in", "openssl_ec", "openssl_rsa"])
def test_every_single_byte_flip_of_a_token_fails(which, identity, request):
    if which == "built_in":
        response, chain = time_stamp(identity, DIGEST, at=NOW), identity.chain_pem().encode()
    else:
        tsa = request.getfixturevalue(which)
        response, chain = tsa.stamp(DATA), tsa.ca_file.read_bytes()
    genuine = verify_time_stamp(response, DIGEST, chain)
    assert response[4:STATUS_VALUE_AT + 1] == bytes.fromhex("3003020100")
    accepted = []
    for position in range(len(response)):
        for mask in (0x01, 0x80, 0xFF):
            flipped = bytearray(response)
            flipped[position] ^= mask
            try:
                facts = verify_time_stamp(bytes(flipped), DIGEST, chain)
            except TimeStampInvalid:
                continue
            accepted.append((position, mask, facts))
    # The one byte outside everything signed that still makes a valid
    # response: the status, granted (0) turned into grantedWithMods (1),
    # which RFC 3161 allows and which changes nothing the token proves.
    assert accepted == [(STATUS_VALUE_AT, 0x01, genuine)]
    assert tsp.TimeStampResp.load(bytes(_flip(response, STATUS_VALUE_AT, 0x01)))["status"]["status"].native \
        == "granted_with_mods"


def _flip(data: bytes, position: int, mask: int) -> bytearray:
    flipped = bytearray(data)
    flipped[position] ^= mask
    return flipped


def test_a_request_for_another_tsa_and_its_reply(openssl_ec):
    request = time_stamp_request(DIGEST, nonce=0x1234567890ABCDEF)
    text = subprocess.run(["openssl", "ts", "-query", "-in", "/dev/stdin", "-text"], input=request,
                          capture_output=True, check=True).stdout.decode()
    assert "Hash Algorithm: sha256" in text and "Nonce: 0x1234567890ABCDEF" in text
    assert "Certificate required: yes" in text
    reply = openssl_ec.reply(request)
    chain = openssl_ec.ca_file.read_bytes()
    facts = verify_time_stamp_reply(reply, DIGEST, 0x1234567890ABCDEF, chain)
    assert facts == verify_time_stamp(reply, DIGEST, chain)
    with pytest.raises(TimeStampInvalid, match="does not echo our nonce"):
        verify_time_stamp_reply(reply, DIGEST, 0x1234567890ABCDEE, chain)
    with pytest.raises(TimeStampInvalid, match="message imprint mismatch"):
        verify_time_stamp_reply(reply, bytes(32), 0x1234567890ABCDEF, chain)
    with pytest.raises(ValueError):
        time_stamp_request(DIGEST[:20], nonce=1)


# Signers neither the built-in TSA nor openssl's configuration here makes:
# RSA-PSS, Ed25519, ESS signing-certificate v1, a signer named by key id.

def _hand_made_identity(key, *, usage=(ExtendedKeyUsageOID.TIME_STAMPING,), critical=True) -> TsaIdentity:
    root_key = ec.generate_private_key(ec.SECP256R1())
    root_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Hand-made root")])
    start = NOW - timedelta(minutes=5)
    root = (x509.CertificateBuilder().subject_name(root_name).issuer_name(root_name)
            .public_key(root_key.public_key()).serial_number(1).not_valid_before(start)
            .not_valid_after(start + timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(root_key, hashes.SHA256()))
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Hand-made TSA")]))
               .issuer_name(root_name).public_key(key.public_key()).serial_number(2)
               .not_valid_before(start).not_valid_after(start + timedelta(days=30))
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False))
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(usage)), critical=critical)
    return TsaIdentity(root, builder.sign(root_key, hashes.SHA256()), key)


def _hand_made_token(identity: TsaIdentity, *, signature_algorithm: dict, sign, digest: str = "sha256",
                     ess: str = "v2", by_key_id: bool = False) -> bytes:
    tst_info = tsp.TSTInfo({
        "version": "v1", "policy": "1.2.3.4", "serial_number": 7, "gen_time": NOW.replace(microsecond=0),
        "message_imprint": {"hash_algorithm": {"algorithm": "sha256"}, "hashed_message": DIGEST},
    }).dump()
    tsa_der = _der(identity.tsa_certificate)
    tsa_cert = asn1_x509.Certificate.load(tsa_der)
    if ess == "v2":
        ess_attribute = {"type": "signing_certificate_v2", "values": [tsp.SigningCertificateV2({"certs": [
            {"hash_algorithm": {"algorithm": "sha256"}, "cert_hash": hashlib.sha256(tsa_der).digest()}]})]}
    else:
        ess_attribute = {"type": "signing_certificate", "values": [tsp.SigningCertificate({"certs": [
            {"cert_hash": hashlib.sha1(tsa_der).digest()}]})]}
    signed_attrs = cms.CMSAttributes([
        {"type": "content_type", "values": ["tst_info"]},
        {"type": "message_digest", "values": [hashlib.new(digest, tst_info).digest()]},
        ess_attribute,
    ])
    if by_key_id:
        sid = cms.SignerIdentifier(name="subject_key_identifier", value=tsa_cert.key_identifier)
    else:
        sid = cms.SignerIdentifier(name="issuer_and_serial_number", value={
            "issuer": tsa_cert.issuer, "serial_number": tsa_cert.serial_number})
    signer_info = cms.SignerInfo({
        "version": "v3" if by_key_id else "v1", "sid": sid,
        "digest_algorithm": algos.DigestAlgorithm({"algorithm": digest}),
        "signed_attrs": signed_attrs,
        "signature_algorithm": algos.SignedDigestAlgorithm(signature_algorithm),
        "signature": sign(signed_attrs.dump()),
    })
    signed_data = cms.SignedData({
        "version": "v3", "digest_algorithms": [algos.DigestAlgorithm({"algorithm": digest})],
        "encap_content_info": {"content_type": "tst_info", "content": core.ParsableOctetString(tst_info)},
        "certificates": [tsa_cert], "signer_infos": [signer_info],
    })
    return tsp.TimeStampResp({"status": {"status": "granted"}, "time_stamp_token": cms.ContentInfo(
        {"content_type": "signed_data", "content": signed_data})}).dump()


def _pss_token(**options) -> tuple[bytes, TsaIdentity]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    identity = _hand_made_identity(key)
    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
    return _hand_made_token(identity, signature_algorithm={"algorithm": "rsassa_pss", "parameters": {
        "hash_algorithm": {"algorithm": "sha256"},
        "mask_gen_algorithm": {"algorithm": "mgf1", "parameters": {"algorithm": "sha256"}},
        "salt_length": 32, "trailer_field": "trailer_field_bc"}},
        sign=lambda data: key.sign(data, pss, hashes.SHA256()), **options), identity


def _ed25519_token(**options) -> tuple[bytes, TsaIdentity]:
    key = ed25519.Ed25519PrivateKey.generate()
    identity = _hand_made_identity(key)
    return _hand_made_token(identity, signature_algorithm={"algorithm": "ed25519"}, sign=key.sign,
                            digest="sha512", **options), identity


@pytest.mark.parametrize("make, options", [
    (_pss_token, {}), (_ed25519_token, {}),
    (_pss_token, {"ess": "v1"}), (_ed25519_token, {"by_key_id": True}),
])
def test_other_signers_verify_and_one_flipped_signature_byte_fails(make, options):
    response, identity = make(**options)
    chain = _pem(identity.root_certificate)
    facts = verify_time_stamp(response, DIGEST, chain)
    assert facts.tsa_name == "CN=Hand-made TSA" and facts.serial_number == 7 and facts.policy == "1.2.3.4"
    with pytest.raises(TimeStampInvalid, match="signature does not verify"):
        verify_time_stamp(bytes(_flip(response, len(response) - 1, 0x01)), DIGEST, chain)


def test_an_ed25519_token_must_digest_with_sha512():
    key = ed25519.Ed25519PrivateKey.generate()
    identity = _hand_made_identity(key)
    response = _hand_made_token(identity, signature_algorithm={"algorithm": "ed25519"}, sign=key.sign)
    with pytest.raises(TimeStampInvalid, match="SHA-512"):
        verify_time_stamp(response, DIGEST, _pem(identity.root_certificate))


def test_a_signature_by_another_key_fails():
    key = ec.generate_private_key(ec.SECP256R1())
    identity = _hand_made_identity(key)
    intruder = ec.generate_private_key(ec.SECP256R1())
    response = _hand_made_token(identity, signature_algorithm={"algorithm": "sha256_ecdsa"},
                                sign=lambda data: intruder.sign(data, ec.ECDSA(hashes.SHA256())))
    with pytest.raises(TimeStampInvalid, match="signature does not verify"):
        verify_time_stamp(response, DIGEST, _pem(identity.root_certificate))
