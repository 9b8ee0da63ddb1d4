"""The server's long-lived keys: made on first start, loaded afterwards.

Keys live in their own folder (WITNESS_KEYS_DIR), outside the data folder, so
a copy of the data folder alone opens no footage. The folder is mode 0700 and
every key file 0600. Several processes may start at once (gunicorn workers):
each key file is written to a temporary name and then hard-linked into place,
which fails if another process won, so every process ends up with the same key.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from . import signing
from .tsa import TsaIdentity, new_tsa_identity

_HPKE_FILE = "hpke-x25519.pem"
_SIGNING_FILE = "signing-ed25519.pem"
_TOKEN_SECRET_FILE = "token-secret"
# One file for the TSA's key, its certificate and the root's, so workers
# starting together can never pair a key with another worker's certificate.
_TSA_FILE = "tsa-identity.pem"
_LOG_FILE = "log-ed25519.pem"


@dataclass(frozen=True)
class ServerKeys:
    """The server's private keys and the ids clients know them by."""

    hpke_private: X25519PrivateKey
    signing_private: Ed25519PrivateKey
    token_secret: bytes
    tsa: TsaIdentity
    log_private: Ed25519PrivateKey  # signs the transparency log's checkpoints only

    @property
    def hpke_public_raw(self) -> bytes:
        """The 32 raw bytes of the HPKE (X25519) public key."""
        return self.hpke_private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    @property
    def hpke_key_id(self) -> str:
        """Short stable id: the first 16 hex digits of SHA-256(raw public key)."""
        return "hpke-" + hashlib.sha256(self.hpke_public_raw).hexdigest()[:16]

    @property
    def signing_public_raw(self) -> bytes:
        return self.signing_private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    @property
    def signing_key_id(self) -> str:
        """Short stable id: the first 16 hex digits of SHA-256(raw public key)."""
        return signing.signing_key_id(self.signing_private.public_key())


def load_or_create_server_keys(keys_dir: str | os.PathLike, *, now: datetime) -> ServerKeys:
    """Load the server keys from `keys_dir`, creating the folder (0700) and any
    missing key (0600) first. `now` (aware, UTC) is the time a missing
    time-stamping certificate is made at, so it is valid from then: pass the
    clock the tokens will be dated by, never a different one. Raises `OSError`
    if the folder cannot be made or read, and `ValueError` if a key file is
    not a key of the expected type."""
    if now.tzinfo is None:
        raise ValueError("now must be an aware datetime")
    folder = Path(keys_dir)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    hpke_pem = _load_or_create(folder / _HPKE_FILE, lambda: _private_pem(X25519PrivateKey.generate()))
    signing_pem = _load_or_create(
        folder / _SIGNING_FILE, lambda: _private_pem(Ed25519PrivateKey.generate())
    )
    token_secret = _load_or_create(
        folder / _TOKEN_SECRET_FILE, lambda: base64.b64encode(secrets.token_bytes(48)) + b"\n"
    )
    tsa_pem = _load_or_create(folder / _TSA_FILE, lambda: _new_tsa_pem(now))
    log_pem = _load_or_create(folder / _LOG_FILE, lambda: _private_pem(Ed25519PrivateKey.generate()))
    hpke_key = serialization.load_pem_private_key(hpke_pem, password=None)
    log_key = serialization.load_pem_private_key(log_pem, password=None)
    if not isinstance(log_key, Ed25519PrivateKey):
        raise ValueError(f"{folder / _LOG_FILE} is not an Ed25519 private key")
    signing_key = serialization.load_pem_private_key(signing_pem, password=None)
    if not isinstance(hpke_key, X25519PrivateKey):
        raise ValueError(f"{folder / _HPKE_FILE} is not an X25519 private key")
    if not isinstance(signing_key, Ed25519PrivateKey):
        raise ValueError(f"{folder / _SIGNING_FILE} is not an Ed25519 private key")
    return ServerKeys(hpke_key, signing_key, base64.b64decode(token_secret.strip()),
                      _load_tsa(folder / _TSA_FILE, tsa_pem), log_key)


def _new_tsa_pem(now: datetime) -> bytes:
    identity = new_tsa_identity("Witness Sync", now.astimezone(timezone.utc))
    return _private_pem(identity.tsa_private_key) + identity.chain_pem().encode("ascii")


def _load_tsa(path: Path, pem: bytes) -> TsaIdentity:
    key = serialization.load_pem_private_key(pem, password=None)
    certificates = x509.load_pem_x509_certificates(pem)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or len(certificates) != 2:
        raise ValueError(f"{path} must hold the TSA's EC private key, its certificate and the root's")
    return TsaIdentity(root_certificate=certificates[1], tsa_certificate=certificates[0], tsa_private_key=key)


def _private_pem(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _load_or_create(path: Path, make) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(make())
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(tmp, path)  # fails if another process made the key first
        except FileExistsError:
            pass
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    finally:
        os.unlink(tmp)
    return path.read_bytes()
