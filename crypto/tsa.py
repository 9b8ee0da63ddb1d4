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

`verify_time_stamp` checks any TSA's token (ours, an external TSA's, one in
a copy bundle) offline against trusted root certificates, and says in plain
words what is wrong; `time_stamp_request` asks another TSA for one.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from asn1crypto import algos, cms, core, tsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from . import InvalidEvidence

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


# --- Asking another TSA, and checking any TSA's tokens -----------------------


class TimeStampInvalid(InvalidEvidence):
    """A time-stamp that does not prove what it should. Unlike the other
    `InvalidEvidence` failures it says why, in words a lawyer can read
    (`str(exc)`), because the reason is what a court will ask about."""


@dataclass(frozen=True)
class TimeStampFacts:
    """What a verified time-stamp token proves: that a TSA whose certificate
    chains to the root `root_sha256` saw the data's SHA-256 at `gen_time`."""

    gen_time: datetime  # aware, UTC
    serial_number: int
    tsa_name: str  # the signer certificate's subject, RFC 4514
    policy: str  # dotted OID
    root_sha256: str  # hex SHA-256 of the DER of the root the signer chains to


def time_stamp_request(digest: bytes, nonce: int) -> bytes:
    """A DER `TimeStampReq` (RFC 3161 section 2.4.1) for a SHA-256 `digest`,
    with `nonce` and `certReq` true (so the token carries the TSA's
    certificate and `openssl ts -verify -CAfile` needs only the root).
    Raises `ValueError` for a digest that is not 32 bytes or a nonce that is
    not a positive integer."""
    if len(digest) != 32:
        raise ValueError("time_stamp_request takes a SHA-256 digest (32 bytes)")
    if nonce <= 0:
        raise ValueError("the nonce must be a positive integer")
    return tsp.TimeStampReq({
        "version": "v1",
        "message_imprint": {"hash_algorithm": {"algorithm": "sha256"}, "hashed_message": digest},
        "nonce": nonce,
        "cert_req": True,
    }).dump()


def verify_time_stamp_reply(response_der: bytes, digest: bytes, nonce: int, chain_pem: bytes) -> TimeStampFacts:
    """Check a TSA's answer to `time_stamp_request(digest, nonce)`: everything
    `verify_time_stamp` checks, and that the token echoes `nonce` (so it was
    made for this request, not replayed). Raises `TimeStampInvalid`."""
    facts = verify_time_stamp(response_der, digest, chain_pem)
    tst_info = _tst_info(_signed_bytes(response_der)[1])
    if tst_info["nonce"].native != nonce:
        raise TimeStampInvalid("the reply is not for our request (it does not echo our nonce)")
    return facts


_DIGESTS = {"sha256": hashes.SHA256, "sha384": hashes.SHA384, "sha512": hashes.SHA512}
# Hashes an ESS signing-certificate attribute may name: v1 is SHA-1 by
# definition (RFC 2634); it only identifies a certificate the chain vouches for.
_CERT_HASHES = {"sha1": hashlib.sha1, "sha256": hashlib.sha256, "sha384": hashlib.sha384,
                "sha512": hashlib.sha512}
_SIGNATURE_DIGESTS = {
    "sha256_ecdsa": "sha256", "sha384_ecdsa": "sha384", "sha512_ecdsa": "sha512",
    "sha256_rsa": "sha256", "sha384_rsa": "sha384", "sha512_rsa": "sha512",
}
_MAX_CHAIN = 8


def verify_time_stamp(response_der: bytes, data_sha256: bytes, chain_pem: bytes) -> TimeStampFacts:
    """Verify a DER `TimeStampResp` (what `openssl ts -reply` writes and
    `time_stamp` returns) over the SHA-256 `data_sha256`, trusting only the
    self-signed certificates in `chain_pem` (other certificates there may
    serve as intermediates). Returns what the token proves; raises
    `TimeStampInvalid` saying what is wrong. No network, no clock: the chain
    is judged at the token's own time."""
    try:
        trusted = x509.load_pem_x509_certificates(chain_pem)
    except Exception:
        raise TimeStampInvalid("the trusted certificates hold no readable PEM certificate") from None
    try:
        return _verify(response_der, data_sha256, trusted)
    except TimeStampInvalid:
        raise
    except Exception:
        # asn1crypto parses nested values when first read: a malformed one
        # surfaces wherever that happens. Fail closed, as one reason.
        raise TimeStampInvalid(_MALFORMED) from None


_MALFORMED = "the time-stamp is not a well-formed RFC 3161 response in DER"


class _TimeStampResp(core.Sequence):
    # asn1crypto 1.5.1's `tsp.TimeStampResp` requires the token, which
    # RFC 3161 leaves out of a refusal (and `openssl ts -reply` does).
    _fields = [("status", tsp.PKIStatusInfo), ("time_stamp_token", cms.ContentInfo, {"optional": True})]


def _verify(response_der: bytes, data_sha256: bytes, trusted: list[x509.Certificate]) -> TimeStampFacts:
    # 1. The response is DER, whole, with nothing after it. (asn1crypto
    #    alone would take BER's looser lengths, so one response could be
    #    written several ways.)
    try:
        _check_der(response_der)
        response = _TimeStampResp.load(response_der, strict=True)
    except ValueError:
        raise TimeStampInvalid(_MALFORMED) from None

    # 2. The TSA granted the request.
    status = response["status"]["status"].native
    if status not in ("granted", "granted_with_mods"):
        raise TimeStampInvalid(f"the time-stamping authority refused the request (status {status}"
                               f"{_failure_text(response['status'])})")
    token = response["time_stamp_token"]
    if isinstance(token, core.Void):
        raise TimeStampInvalid("the response holds no time-stamp token")

    # 3. The token is a CMS SignedData (version 3) over a TSTInfo, in DER.
    if token["content_type"].native != "signed_data":
        raise TimeStampInvalid("the token is not CMS signed data")
    signed_data = token["content"]
    if signed_data["version"].native != "v3":
        raise TimeStampInvalid("the token's signed data has the wrong version (RFC 5652 requires 3)")
    encapsulated = signed_data["encap_content_info"]
    if encapsulated["content_type"].native != "tst_info":
        raise TimeStampInvalid("the token signs something other than time-stamp information")
    if isinstance(encapsulated["content"], core.Void) or encapsulated["content"].method != 0:
        raise TimeStampInvalid("the token's time-stamp information is missing or not DER")

    # 4. Exactly one signer.
    signers = signed_data["signer_infos"]
    if len(signers) != 1:
        raise TimeStampInvalid(f"the token has {len(signers)} signers; a time-stamp has exactly one")
    signer = signers[0]
    signed_attrs_der, econtent_der, carried_der = _signed_bytes(response_der)
    tst_info = _tst_info(econtent_der)
    if tst_info["version"].native != "v1":
        raise TimeStampInvalid("the time-stamp information has an unknown version")
    # Nothing unsigned rides along unchecked: this verifier reads no
    # revocation lists and no unsigned attributes, so it refuses them.
    if not isinstance(signed_data["crls"], core.Void):
        raise TimeStampInvalid("the token carries revocation lists, which this verifier does not read")
    if not isinstance(signer["unsigned_attrs"], core.Void):
        raise TimeStampInvalid("the token carries unsigned attributes, which this verifier does not read")

    # 5. The token is over this data: a SHA-256 imprint equal to its digest.
    imprint = tst_info["message_imprint"]
    imprint_algorithm = _digest_name(imprint["hash_algorithm"], "the message imprint")
    if imprint_algorithm != "sha256":
        raise TimeStampInvalid(f"the token is over a {imprint_algorithm} digest; only SHA-256 is accepted")
    if imprint["hashed_message"].native != data_sha256:
        raise TimeStampInvalid("the token is over other data (message imprint mismatch)")

    # 6. Signed attributes bind the content: its type, and its digest under
    #    the signer's digest algorithm, which the SignedData also lists.
    digest_name = _digest_name(signer["digest_algorithm"], "the signer's digest")
    if digest_name not in _DIGESTS:
        raise TimeStampInvalid(f"the token is signed over a {digest_name} digest, which proves nothing today")
    listed = [_digest_name(algorithm, "the token's digest list") for algorithm in signed_data["digest_algorithms"]]
    if digest_name not in listed:
        raise TimeStampInvalid("the token's digest algorithms do not list its signer's")
    attributes = _signed_attributes(signer)
    if attributes.get("content_type") != ["tst_info"]:
        raise TimeStampInvalid("the signed content type is not time-stamp information")
    content_digest = hashlib.new(digest_name, econtent_der).digest()
    if attributes.get("message_digest") != [content_digest]:
        raise TimeStampInvalid("the time-stamp information was altered after signing (message digest mismatch)")

    # 7. The signer's certificate: named by the token, found in the token or
    #    the trusted certificates, and the one the ESS attribute binds.
    carried = _carried_certificates(signed_data, carried_der)
    signer_certificate = _find_signer(signer, carried + trusted)
    _check_signing_certificate_attribute(attributes, signer_certificate)

    # 8. The signature over the signed attributes (re-tagged as a SET).
    _check_signature(signer, digest_name, signer_certificate, b"\x31" + signed_attrs_der[1:])

    # 9. The certificate is for time-stamping only (RFC 3161 section 2.3).
    try:
        usage = signer_certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    except x509.ExtensionNotFound:
        usage = None
    if usage is None or not usage.critical or list(usage.value) != [ExtendedKeyUsageOID.TIME_STAMPING]:
        raise TimeStampInvalid("the signer's certificate is not a time-stamping certificate (its extended key "
                               "usage must be exactly timeStamping, marked critical)")

    # 10. It chains, signature by signature, to a root in the trusted set.
    path = _chain_to_root(signer_certificate, trusted, carried)

    # 11. Every certificate on the path was valid when the token was made.
    gen_time = tst_info["gen_time"].native.astimezone(timezone.utc)
    for certificate in path:
        if not certificate.not_valid_before_utc <= gen_time <= certificate.not_valid_after_utc:
            raise TimeStampInvalid(f"the token's time {gen_time.isoformat()} lies outside the validity of the "
                                   f"certificate of {certificate.subject.rfc4514_string()}")

    # 12. Nothing else rides along: every certificate the token carries is on
    #     the path, so no byte of the token goes unchecked.
    on_path = {certificate.public_bytes(serialization.Encoding.DER) for certificate in path}
    for certificate in carried:
        if certificate.public_bytes(serialization.Encoding.DER) not in on_path:
            raise TimeStampInvalid("the token carries a certificate that is not on its signer's chain "
                                   f"({certificate.subject.rfc4514_string()})")

    return TimeStampFacts(
        gen_time=gen_time,
        serial_number=tst_info["serial_number"].native,
        tsa_name=signer_certificate.subject.rfc4514_string(),
        policy=tst_info["policy"].dotted,
        root_sha256=hashlib.sha256(path[-1].public_bytes(serialization.Encoding.DER)).hexdigest(),
    )


def _signed_bytes(response_der: bytes) -> tuple[bytes, bytes, list[bytes]]:
    """The exact bytes that are hashed or signed: the signed attributes
    (with their [0] tag), the encapsulated TSTInfo, the carried
    certificates. Read from a parse nothing else touches: asn1crypto
    re-encodes a value once any part of it was changed, and reading some
    fields (e.g. an algorithm's NULL parameters) counts as a change."""
    signed_data = _TimeStampResp.load(response_der)["time_stamp_token"]["content"]
    signed_attrs = signed_data["signer_infos"][0]["signed_attrs"].dump()
    econtent = signed_data["encap_content_info"]["content"].contents
    certificates = [choice.chosen.dump() for choice in signed_data["certificates"] or []]
    for part in (signed_attrs[1:], econtent, *certificates):
        if part not in response_der:
            raise TimeStampInvalid(_MALFORMED)
    return signed_attrs, econtent, certificates


def _failure_text(status_info) -> str:
    words = []
    if status_info["fail_info"].native:
        words.append(", ".join(sorted(status_info["fail_info"].native)))
    if status_info["status_string"].native:
        words.append("; ".join(status_info["status_string"].native))
    return (": " + "; ".join(words)) if words else ""


def _tst_info(econtent_der: bytes) -> tsp.TSTInfo:
    try:
        _check_der(econtent_der)
        tst_info = tsp.TSTInfo.load(econtent_der, strict=True)
        _ = tst_info.native  # parse every field now, while errors still mean "malformed"
    except Exception:
        raise TimeStampInvalid("the token's time-stamp information is not well-formed") from None
    return tst_info


def _check_der(data: bytes) -> None:
    """Raise `ValueError` unless every element of `data` has a definite
    length in its shortest form, no string is in constructed (BER) form,
    and every universal INTEGER and BOOLEAN is encoded as DER requires."""
    pending = [(0, len(data))]
    while pending:
        at, end = pending.pop()
        while at < end:
            tag = data[at]
            at += 1
            if tag & 0x1F == 0x1F:  # high tag number, base 128
                if at >= end or data[at] == 0x80:
                    raise ValueError("non-minimal tag")
                while at < end and data[at] & 0x80:
                    at += 1
                at += 1
            if at >= end:
                raise ValueError("truncated element")
            length = data[at]
            at += 1
            if length == 0x80:
                raise ValueError("indefinite length")
            if length > 0x80:
                size = length & 0x7F
                if size > 4 or at + size > end or data[at] == 0:
                    raise ValueError("bad length")
                length = int.from_bytes(data[at:at + size], "big")
                at += size
                if length < 0x80:
                    raise ValueError("non-minimal length")
            if at + length > end:
                raise ValueError("element runs past its parent")
            value = data[at:at + length]
            if tag & 0x20:
                if tag & 0xC0 == 0 and tag not in (0x30, 0x31):
                    raise ValueError("constructed string")
                pending.append((at, at + length))
            elif tag == 0x02 and (not value or (len(value) > 1 and (value[0], value[1] & 0x80) in ((0, 0), (0xFF, 0x80)))):
                raise ValueError("non-minimal integer")
            elif tag == 0x01 and value not in (b"\x00", b"\xff"):
                raise ValueError("non-DER boolean")
            at += length


def _digest_name(algorithm: algos.DigestAlgorithm, what: str) -> str:
    # Parameters of the SHA-2 family are absent or NULL (RFC 5754).
    if not isinstance(algorithm["parameters"], (core.Void, core.Null)):
        raise TimeStampInvalid(f"{what} names its hash algorithm with unexpected parameters")
    return algorithm["algorithm"].native


def _signed_attributes(signer) -> dict[str, list]:
    if isinstance(signer["signed_attrs"], core.Void):
        raise TimeStampInvalid("the token has no signed attributes, so nothing binds its content or signer")
    attributes: dict[str, list] = {}
    for attribute in signer["signed_attrs"]:
        name = attribute["type"].native
        if name in attributes:
            raise TimeStampInvalid(f"the token's signed attribute {name} appears twice")
        attributes[name] = attribute["values"].native if name in ("content_type", "message_digest") \
            else list(attribute["values"])
    return attributes


def _carried_certificates(signed_data, carried_der: list[bytes]) -> list[x509.Certificate]:
    carried = []
    for choice, der in zip(signed_data["certificates"] or [], carried_der, strict=True):
        if choice.name != "certificate":
            raise TimeStampInvalid("the token carries something other than X.509 certificates")
        try:
            with warnings.catch_warnings():  # e.g. a negative serial: refused below anyway
                warnings.simplefilter("ignore")
                carried.append(x509.load_der_x509_certificate(der))
        except Exception:
            raise TimeStampInvalid("the token carries a certificate that does not parse") from None
    return carried


def _find_signer(signer, candidates: list[x509.Certificate]) -> x509.Certificate:
    sid = signer["sid"]
    if sid.name == "issuer_and_serial_number":
        if signer["version"].native != "v1":
            raise TimeStampInvalid("the token's signer information has the wrong version (RFC 5652 requires 1)")
        issuer, serial = sid.chosen["issuer"].dump(), sid.chosen["serial_number"].native
        for certificate in candidates:
            der = certificate.public_bytes(serialization.Encoding.DER)
            tbs = asn1_x509.Certificate.load(der)["tbs_certificate"]
            if tbs["issuer"].dump() == issuer and tbs["serial_number"].native == serial:
                return certificate
    else:
        if signer["version"].native != "v3":
            raise TimeStampInvalid("the token's signer information has the wrong version (RFC 5652 requires 3)")
        key_id = sid.chosen.native
        for certificate in candidates:
            try:
                ski = certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
            except x509.ExtensionNotFound:
                continue
            if ski == key_id:
                return certificate
    raise TimeStampInvalid("the signer's certificate is neither in the token nor among the trusted certificates")


def _check_signing_certificate_attribute(attributes: dict[str, list], certificate: x509.Certificate) -> None:
    # ESS (RFC 2634 / RFC 5816): the first certificate id is the signer's.
    der = certificate.public_bytes(serialization.Encoding.DER)
    tbs = asn1_x509.Certificate.load(der)["tbs_certificate"]
    found = False
    for name in ("signing_certificate_v2", "signing_certificate"):
        values = attributes.get(name)
        if values is None:
            continue
        if len(values) != 1 or len(values[0]["certs"]) == 0:
            raise TimeStampInvalid("the token's signing-certificate attribute is malformed")
        cert_id = values[0]["certs"][0]
        algorithm = _digest_name(cert_id["hash_algorithm"], "the signing-certificate attribute") \
            if name == "signing_certificate_v2" else "sha1"
        if algorithm not in _CERT_HASHES:
            raise TimeStampInvalid(f"the signing-certificate attribute uses an unknown hash ({algorithm})")
        if cert_id["cert_hash"].native != _CERT_HASHES[algorithm](der).digest():
            raise TimeStampInvalid("the token binds a different signing certificate (ESS certificate hash mismatch)")
        issuer_serial = cert_id["issuer_serial"]
        if issuer_serial.native is not None:
            # Compared by contents: in a GeneralName the Name is explicitly tagged.
            names = [general.chosen.contents for general in issuer_serial["issuer"]
                     if general.name == "directory_name"]
            if names != [tbs["issuer"].contents] or issuer_serial["serial_number"].native != tbs["serial_number"].native:
                raise TimeStampInvalid("the token binds a different signing certificate (ESS issuer and serial)")
        found = True
    if not found:
        raise TimeStampInvalid("the token does not bind its signing certificate (no ESS signing-certificate "
                               "attribute)")


def _check_signature(signer, digest_name: str, certificate: x509.Certificate, signed_bytes: bytes) -> None:
    algorithm = signer["signature_algorithm"]
    name = algorithm["algorithm"].native
    key = certificate.public_key()
    signature = signer["signature"].native
    mismatch = TimeStampInvalid(f"the token's signature algorithm ({name}) does not fit the signer's key")
    if name != "rsassa_pss" and not isinstance(algorithm["parameters"], (core.Void, core.Null)):
        raise TimeStampInvalid("the token's signature algorithm has unexpected parameters")
    named = _SIGNATURE_DIGESTS.get(name)
    if named is not None and named != digest_name:
        raise TimeStampInvalid("the token's signature algorithm and digest algorithm disagree")
    try:
        if name in ("ecdsa", "sha256_ecdsa", "sha384_ecdsa", "sha512_ecdsa"):
            if not isinstance(key, ec.EllipticCurvePublicKey):
                raise mismatch
            key.verify(signature, signed_bytes, ec.ECDSA(_DIGESTS[digest_name]()))
        elif name in ("rsassa_pkcs1v15", "sha256_rsa", "sha384_rsa", "sha512_rsa"):
            if not isinstance(key, rsa.RSAPublicKey):
                raise mismatch
            key.verify(signature, signed_bytes, padding.PKCS1v15(), _DIGESTS[digest_name]())
        elif name == "rsassa_pss":
            if not isinstance(key, rsa.RSAPublicKey):
                raise mismatch
            key.verify(signature, signed_bytes, _pss_padding(algorithm["parameters"], digest_name),
                       _DIGESTS[digest_name]())
        elif name == "ed25519":
            if not isinstance(key, ed25519.Ed25519PublicKey):
                raise mismatch
            if digest_name != "sha512":  # RFC 8419 section 3.1
                raise TimeStampInvalid("an Ed25519 token must digest its content with SHA-512")
            key.verify(signature, signed_bytes)
        else:
            raise TimeStampInvalid(f"the token is signed with {name}, which this verifier does not accept")
    except InvalidSignature:
        raise TimeStampInvalid("the token's signature does not verify with the signer's certificate") from None


def _pss_padding(parameters, digest_name: str) -> padding.PSS:
    if parameters["hash_algorithm"]["algorithm"].native != digest_name \
            or parameters["mask_gen_algorithm"]["algorithm"].native != "mgf1" \
            or parameters["mask_gen_algorithm"]["parameters"]["algorithm"].native != digest_name \
            or parameters["trailer_field"].native != "trailer_field_bc":
        raise TimeStampInvalid("the token's RSA-PSS parameters disagree with its digest algorithm")
    return padding.PSS(mgf=padding.MGF1(_DIGESTS[digest_name]()), salt_length=parameters["salt_length"].native)


def _chain_to_root(signer: x509.Certificate, trusted: list[x509.Certificate],
                   carried: list[x509.Certificate]) -> list[x509.Certificate]:
    """The path signer, intermediates..., root, each certificate verified as
    issued by the next; the root is a self-signed certificate of `trusted`."""
    roots = [certificate for certificate in trusted if _issued_by(certificate, certificate)]
    others = [certificate for certificate in trusted + carried if certificate not in roots]

    def extend(path: list[x509.Certificate]) -> list[x509.Certificate] | None:
        current = path[-1]
        if current in roots:
            return path
        if len(path) > _MAX_CHAIN:
            return None
        for issuer in roots + others:
            if issuer not in path and _may_issue(issuer, len(path) - 1) and _issued_by(current, issuer):
                found = extend(path + [issuer])
                if found is not None:
                    return found
        return None

    path = extend([signer])
    if path is None:
        raise TimeStampInvalid("the signer's certificate does not chain to any root among the trusted certificates")
    return path


def _issued_by(certificate: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        certificate.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _may_issue(issuer: x509.Certificate, intermediates_below: int) -> bool:
    """A CA certificate allowed to sign certificates at this depth."""
    try:
        constraints = issuer.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return False
    if not constraints.ca or (constraints.path_length is not None and constraints.path_length < intermediates_below):
        return False
    try:
        usage = issuer.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return True
    return usage.key_cert_sign
