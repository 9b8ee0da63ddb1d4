"""Pure cryptography over bytes: content-key sealing, chunk AEAD, hashing and
the Merkle tree, Ed25519 signing, and server key generation and loading.

Imports only `cryptography` and the standard library. Every failed open or
verify raises one exception, `InvalidEvidence`, and says no more; only its
subclass `tsa.TimeStampInvalid` says why, because a time-stamp's reason for
failing is what a court will ask about.
"""


class InvalidEvidence(Exception):
    """Something did not open or verify. Deliberately opaque, like
    `cryptography.exceptions.InvalidTag`: callers decide what it means."""
