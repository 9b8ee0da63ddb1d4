"""Transparency-log primitives: pure functions over bytes, no storage, no HTTP.

- `merkle`: the RFC 9162 section 2.1 Merkle tree over stored subtree hashes
  (the layout of Go's golang.org/x/mod/sumdb/tlog): what to store when a leaf
  is appended, tree hashes, inclusion and consistency proofs.
- `tiles`: the C2SP tlog-tiles layout (tile coordinates, paths, tile bytes,
  entry bundles).
- `note`: C2SP signed-note with Ed25519 signatures and verifier keys.
- `checkpoint`: C2SP tlog-checkpoint bodies, signed and opened as notes.
- `cosignature`: C2SP tlog-cosignature `cosignature/v1` (Ed25519, type 0x04).
- `witness`: the bodies of C2SP tlog-witness `add-checkpoint` and its answers.

Failures follow `crypto`'s rule: anything that does not verify raises
`InvalidEvidence` and says no more. Its one subclass here, `Malformed`, says
that the bytes are not even well formed (a note, a checkpoint, a request
body), which a witness must answer differently (400) from a signature that
fails (403). Wrong arguments from the caller (a leaf index beyond the tree,
a hash source returning the wrong count) raise `ValueError`.
"""

from .. import InvalidEvidence


class Malformed(InvalidEvidence):
    """The bytes are not a well-formed note, checkpoint, tile path or
    tlog-witness body. Nothing was verified."""
