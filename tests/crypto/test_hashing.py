"""RFC 6962 Merkle tree hash and canonical JSON."""

import hashlib

from crypto.hashing import canonical_json, merkle_root


def leaf(d):
    return hashlib.sha256(b"\x00" + d).digest()


def node(a, b):
    return hashlib.sha256(b"\x01" + a + b).digest()


def digests(n):
    return [hashlib.sha256(bytes([i])).digest() for i in range(n)]


def test_empty_tree_is_hash_of_nothing():
    assert merkle_root([]) == hashlib.sha256(b"").digest()


def test_small_trees_follow_rfc6962_split_rule():
    d = digests(7)
    assert merkle_root(d[:1]) == leaf(d[0])
    assert merkle_root(d[:2]) == node(leaf(d[0]), leaf(d[1]))
    # n=3: split at 2, the left subtree is full, the third leaf stands alone.
    assert merkle_root(d[:3]) == node(node(leaf(d[0]), leaf(d[1])), leaf(d[2]))
    # n=7: split at 4 then 2 then 1.
    left = node(node(leaf(d[0]), leaf(d[1])), node(leaf(d[2]), leaf(d[3])))
    right = node(node(leaf(d[4]), leaf(d[5])), leaf(d[6]))
    assert merkle_root(d) == node(left, right)


def test_certificate_transparency_reference_root():
    # The eight leaves of the Certificate Transparency test suite
    # (google/certificate-transparency, merkle_tree_test) and their published
    # root. merkle_root prefixes 0x00 to each leaf, exactly as RFC 6962 does.
    inputs = ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"]
    root = merkle_root([bytes.fromhex(h) for h in inputs])
    assert root.hex() == "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"


def test_canonical_json_is_sorted_compact_utf8():
    assert canonical_json({"b": 1, "a": ["é", None, True]}) == '{"a":["é",null,true],"b":1}'.encode("utf-8")
