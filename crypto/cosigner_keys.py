"""A witness cosigner's key (`witness-cosigner`): made on first start, loaded
afterwards.

One Ed25519 private key, PKCS#8 PEM (what `openssl pkey` reads), in a keys
folder of its own (0700, the file 0600), written as `crypto.keys` writes the
server's keys: to a temporary name, fsync'd, then hard-linked into place, so
workers starting together all end up with the same key. The key signs
`cosignature/v1` lines only (`crypto.tlog.cosignature`): the Ed25519
cosignature message does not name the cosigner, so one key must never serve
two cosigners (c2sp.org/tlog-cosignature).
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .keys import _load_or_create, _private_pem
from .tlog.cosignature import Cosigner

COSIGNER_KEY_FILE = "cosigner-ed25519.pem"


def load_or_create_cosigner(keys_dir: str | os.PathLike, name: str) -> Cosigner:
    """The cosigner named `name` (its key name in every cosignature line)
    with the key in `keys_dir`, making the folder (0700) and the key (0600)
    first if missing. Raises `OSError` if the folder cannot be made or read,
    `ValueError` if the file is not an Ed25519 private key or `name` is not a
    valid key name (non-empty, no spaces, no '+')."""
    folder = Path(keys_dir)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = folder / COSIGNER_KEY_FILE
    pem = _load_or_create(path, lambda: _private_pem(Ed25519PrivateKey.generate()))
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} is not an Ed25519 private key")
    return Cosigner(name, key)
