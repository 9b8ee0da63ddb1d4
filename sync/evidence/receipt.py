"""A chunk's signed receipt (docs/transparency.md, "Receipts"): what the
server acknowledged, when, and where in its transparency log, signed with
the log's Ed25519 key. The 201 (and a retry's 200) of `PUT .../chunks/{i}`
carries it as `receipt`, an addition v1 clients may ignore.

The signature is over `RECEIPT_DOMAIN` followed by the canonical JSON of
every other field, so it cannot be mistaken for a checkpoint note or a
manifest signature made with another key.
"""

from __future__ import annotations

import base64

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from crypto import InvalidEvidence
from crypto.hashing import canonical_json

RECEIPT_DOMAIN = b"witness-sync/v1 chunk-receipt\n"
RECEIPT_VERSION = 1
_FIELDS = ("v", "log_origin", "leaf_index", "leaf", "recording_id", "index", "ciphertext_sha256", "received_at")


def signed_receipt(key: Ed25519PrivateKey, *, log_origin: str, leaf_index: int, leaf: bytes, recording_id: str,
                   index: int, ciphertext_sha256: str, received_at: str) -> dict:
    """The receipt object, `signature` (base64) included. `leaf` is the
    log's leaf data at `leaf_index` (the salted commitment to the chunk's
    `chunk.received` entry), so an inclusion proof from the log's tiles
    can be checked against it."""
    body = {"v": RECEIPT_VERSION, "log_origin": log_origin, "leaf_index": leaf_index,
            "leaf": base64.b64encode(leaf).decode("ascii"), "recording_id": recording_id,
            "index": index, "ciphertext_sha256": ciphertext_sha256, "received_at": received_at}
    signature = key.sign(RECEIPT_DOMAIN + canonical_json(body))
    return {**body, "signature": base64.b64encode(signature).decode("ascii")}


def check_receipt(receipt: dict, public_key: Ed25519PublicKey) -> dict:
    """The receipt's fields (without `signature`) if its signature verifies
    with the log's key; `InvalidEvidence` if it does not or a field is
    missing or extra."""
    if not isinstance(receipt, dict) or set(receipt) != {*_FIELDS, "signature"} or receipt.get("v") != RECEIPT_VERSION:
        raise InvalidEvidence()
    body = {name: receipt[name] for name in _FIELDS}
    try:
        public_key.verify(base64.b64decode(receipt["signature"], validate=True), RECEIPT_DOMAIN + canonical_json(body))
    except (InvalidSignature, ValueError, TypeError):
        raise InvalidEvidence() from None
    return body
