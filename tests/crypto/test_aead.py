"""Content-key sealing and chunk AEAD, checked against the primitives of
PROTOCOL.md directly (cryptography's HPKE and AESGCM), not only round trips."""

import uuid

import pytest
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from crypto import InvalidEvidence
from crypto.aead import decrypt_chunk, encrypt_chunk, new_content_key, open_content_key, seal_content_key

RID = "0b9d4c1e-6a53-4d0c-9a57-2f6f2f3c1d11"


def test_sealed_key_is_plain_rfc9180_base_mode_with_the_protocol_info():
    server = X25519PrivateKey.generate()
    key = new_content_key()
    sealed = seal_content_key(server.public_key(), RID, key)
    assert len(sealed) == 80
    suite = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
    assert suite.decrypt(sealed, server, info=f"witness/v1 recording-key {RID}".encode()) == key
    # And a key sealed by any HPKE implementation opens here.
    other = suite.encrypt(key, server.public_key(), info=f"witness/v1 recording-key {RID}".encode())
    assert open_content_key(server, RID, other) == key


@pytest.mark.parametrize("tamper", ["other recording", "other server", "flipped byte", "short"])
def test_sealed_key_fails_closed(tamper):
    server = X25519PrivateKey.generate()
    sealed = seal_content_key(server.public_key(), RID, new_content_key())
    recording, private = RID, server
    if tamper == "other recording":
        recording = str(uuid.uuid4())
    elif tamper == "other server":
        private = X25519PrivateKey.generate()
    elif tamper == "flipped byte":
        sealed = sealed[:40] + bytes([sealed[40] ^ 1]) + sealed[41:]
    else:
        sealed = sealed[:79]
    with pytest.raises(InvalidEvidence):
        open_content_key(private, recording, sealed)


def test_chunk_is_aes_gcm_with_the_protocol_nonce_and_aad():
    key = new_content_key()
    ciphertext = encrypt_chunk(key, RID, 7, b"seven", final=True)
    nonce = bytes(4) + (7).to_bytes(8, "big")
    aad = f"witness/v1 chunk {RID} 7 final".encode()
    assert AESGCM(key).decrypt(nonce, ciphertext, aad) == b"seven"
    assert decrypt_chunk(key, RID, 7, AESGCM(key).encrypt(nonce, b"x", aad), final=True) == b"x"


@pytest.mark.parametrize("change", ["index", "finality", "recording", "key", "byte", "truncated"])
def test_chunk_bound_to_its_place(change):
    key = new_content_key()
    ciphertext = encrypt_chunk(key, RID, 3, b"piece three", final=False)
    args = dict(content_key=key, recording_id=RID, index=3, ciphertext=ciphertext, final=False)
    if change == "index":
        args["index"] = 4
    elif change == "finality":
        args["final"] = True
    elif change == "recording":
        args["recording_id"] = str(uuid.uuid4())
    elif change == "key":
        args["content_key"] = new_content_key()
    elif change == "byte":
        args["ciphertext"] = bytes([ciphertext[0] ^ 0x80]) + ciphertext[1:]
    else:
        args["ciphertext"] = ciphertext[:10]
    with pytest.raises(InvalidEvidence):
        decrypt_chunk(**args)
