"""A built-in RFC 3161 time-stamping authority.

The server makes, once, a root certificate and a TSA certificate issued by
it (ECDSA P-256; the TSA certificate's only extended key usage is
`timeStamping`, marked critical, as RFC 3161 section 2.3 requires and
`openssl ts` checks). The root's private key signs the TSA certificate and is
then thrown away, so nobody, the operator included, can issue a second TSA
certificate under the same root.

A time-stamp is a `TimeStampResp` (RFC 3161 section 2.4.2) whose token is a
CMS SignedData over a `TSTInfo`, with the ESS `signing-certificate-v2`
attribute (RFC 5816) binding the TSA certificate. It verifies with
`openssl ts -verify -data FILE -in FILE.tsr -CAfile tsa-chain.pem`.
Structures are built with asn1crypto and signed with cryptography.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from asn1crypto import algos, cms, core, tsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# A policy OID under the "example" arc is not ours to use; this one is a UUID
# OID (ITU-T X.667, 2.25.<uuid as integer>), which anyone may mint.
POLICY_OID = "2.25.216253620815787632011046522307343402877"
# Long validity on purpose: a time-stamp must still verify with openssl
# (which checks the chain at the time of verifying) decades later, in court.
VALIDITY = timedelta(days=365 * 50)


@dataclass(frozen=True)
class TsaIdentity:
    """The TSA's signing key and certificate, and the root that issued it."""

    root_certificate: x509.Certificate
    tsa_certificate: x509.Certificate
    tsa_private_key: ec.EllipticCurvePrivateKey

    def chain_pem(self) -> str:
        """TSA certificate then root, PEM: what `openssl ts -verify -CAfile` takes."""
        return "".join(cert.public_bytes(serialization.Encoding.PEM).decode("ascii")
                       for cert in (self.tsa_certificate, self.root_certificate))


def new_tsa_identity(name: str, now: datetime) -> TsaIdentity:
    """Make a root and a TSA certificate valid from `now` for 50 years. The
    root's private key is not kept."""
    root_key = ec.generate_private_key(ec.SECP256R1())
    tsa_key = ec.generate_private_key(ec.SECP256R1())
    root_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} time-stamping root"),
                           x509.NameAttribute(NameOID.ORGANIZATION_NAME, name)])
    tsa_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} time-stamping authority"),
                          x509.NameAttribute(NameOID.ORGANIZATION_NAME, name)])
    start = now - timedelta(minutes=5)
    root = (
        x509.CertificateBuilder().subject_name(root_name).issuer_name(root_name)
        .public_key(root_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(start + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(root_key.public_key()), critical=False)
        .sign(root_key, hashes.SHA256())
    )
    tsa = (
        x509.CertificateBuilder().subject_name(tsa_name).issuer_name(root_name)
        .public_key(tsa_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(start + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=True, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(tsa_key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), critical=False)
        .sign(root_key, hashes.SHA256())
    )
    return TsaIdentity(root, tsa, tsa_key)


def time_stamp(identity: TsaIdentity, digest: bytes, *, at: datetime, serial: int | None = None) -> bytes:
    """A DER `TimeStampResp` (status granted) over a SHA-256 `digest`, made
    at time `at` (UTC, millisecond accuracy) with serial number `serial`
    (unique per TSA; by default 159 random bits). Raises `ValueError` for a
    digest that is not 32 bytes."""
    if len(digest) != 32:
        raise ValueError("time_stamp takes a SHA-256 digest (32 bytes)")
    if serial is None:
        serial = x509.random_serial_number()
    at = at.astimezone(timezone.utc)
    tst_info = tsp.TSTInfo({
        "version": "v1",
        "policy": POLICY_OID,
        "message_imprint": {"hash_algorithm": {"algorithm": "sha256"}, "hashed_message": digest},
        "serial_number": serial,
        "gen_time": at.replace(microsecond=at.microsecond // 1000 * 1000),
        "accuracy": {"millis": 1},
        "tsa": asn1_x509.GeneralName(
            name="directory_name",
            value=asn1_x509.Name.load(identity.tsa_certificate.subject.public_bytes())),
    })
    content = tst_info.dump()
    tsa_der = identity.tsa_certificate.public_bytes(serialization.Encoding.DER)
    tsa_cert = asn1_x509.Certificate.load(tsa_der)
    issuer_serial = {"issuer": [asn1_x509.GeneralName(name="directory_name", value=tsa_cert.issuer)],
                     "serial_number": tsa_cert.serial_number}
    signed_attrs = cms.CMSAttributes([
        {"type": "content_type", "values": ["tst_info"]},
        {"type": "signing_time", "values": [cms.Time(name="utc_time", value=at.replace(microsecond=0))]},
        {"type": "message_digest", "values": [hashlib.sha256(content).digest()]},
        {"type": "signing_certificate_v2", "values": [tsp.SigningCertificateV2({"certs": [tsp.ESSCertIDv2({
            "hash_algorithm": {"algorithm": "sha256"},
            "cert_hash": hashlib.sha256(tsa_der).digest(),
            "issuer_serial": issuer_serial,
        })]})]},
    ])
    signature = identity.tsa_private_key.sign(signed_attrs.dump(), ec.ECDSA(hashes.SHA256()))
    signer_info = cms.SignerInfo({
        "version": "v1",
        "sid": cms.SignerIdentifier(name="issuer_and_serial_number", value={
            "issuer": tsa_cert.issuer, "serial_number": tsa_cert.serial_number}),
        "digest_algorithm": algos.DigestAlgorithm({"algorithm": "sha256"}),
        "signed_attrs": signed_attrs,
        "signature_algorithm": algos.SignedDigestAlgorithm({"algorithm": "sha256_ecdsa"}),
        "signature": signature,
    })
    signed_data = cms.SignedData({
        "version": "v3",
        "digest_algorithms": [algos.DigestAlgorithm({"algorithm": "sha256"})],
        "encap_content_info": {"content_type": "tst_info", "content": core.ParsableOctetString(content)},
        "certificates": [tsa_cert],
        "signer_infos": [signer_info],
    })
    token = cms.ContentInfo({"content_type": "signed_data", "content": signed_data})
    return tsp.TimeStampResp({"status": {"status": "granted"}, "time_stamp_token": token}).dump()


def token_time(response_der: bytes) -> datetime:
    """The `genTime` of a `TimeStampResp`: when the TSA says it saw the digest."""
    response = tsp.TimeStampResp.load(response_der)
    content = response["time_stamp_token"]["content"]["encap_content_info"]["content"]
    return tsp.TSTInfo.load(content.contents)["gen_time"].native
