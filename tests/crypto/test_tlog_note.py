"""C2SP signed notes and checkpoints against published bytes: Go sumdb/note's
PeterNeumann and EnochRoot keys and notes, the signed-note spec's example,
real sum.golang.org checkpoints signed by its production key, and a
sigsum-log checkpoint from litewitness's test data."""

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from crypto import InvalidEvidence
from crypto.tlog import Malformed
from crypto.tlog.checkpoint import Checkpoint, open_checkpoint, parse_checkpoint, sign_checkpoint
from crypto.tlog.merkle import leaf_hash
from crypto.tlog.note import Ed25519Signer, Ed25519Verifier, Signature, key_id, open_note, parse_note, sign_note

# golang.org/x/mod sumdb/note note_test.go
PETER_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
TEXT = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
PETER_SIG = "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
ENOCH_SIG = "— EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n"

# golang.org/x/mod gosumcheck's key for the Go checksum database, and tree
# heads it signed, as published in posts and READMEs quoting sum.golang.org.
SUMDB_VKEY = "sum.golang.org+033de0ae+Ac4zctda0e5eza+HJyk9SxEdh+s3Ux18htTTAD8OuAn8"
SUMDB_HEADS = [
    ("15368405", "/g9am3I6YWNKaZX/jkne1fqd9zEyjss+JXyPXG0WfkY=",
     "Az3grqJGUaSGukG9p8nI2vKgiFn7qGHxn0W+mrwyI6Gz3F0t1J3LzmWk/p96Ybf295EjwdSwlzgijq5WA9d1Ded7owM="),
    ("3784599", "7uvxIZ67TZygcq/AehTD8iHYt81Ih+Zl2Y7vXZbfszQ=",
     "Az3grn972wXskjQrsZhVGc93fTU2uOsmSTiId1Wn1lxDCup5z4ggl1/4gaUqOkMa6cMbYvjB7hn7yemNr7Zqanol/go="),
    ("59045944", "LE6Lx+GNVyuFBv/jKcFIiPkG1WC7DHwG0clpfN/TBlA=",
     "Az3grk9ctaTv+CITXOwxCEHU3APAw5X7Ck14+fvFlh0GCktwX15+XPzy//GgL2G50ZgY05e8eXFTWcvW6pN5tozsLQQ="),
]

# FiloSottile/litetlog cmd/litewitness/testdata/litewitness.txt: a sigsum log
# key and a checkpoint of its (origin sigsum.org/v1/tree/<hex SHA-256(key)>).
SIGSUM_KEY = bytes.fromhex("ffdc2d4d98e4124d3feaf788c0c2f9abfd796083d1f0495437f302ec79cf100f")
SIGSUM_ORIGIN = "sigsum.org/v1/tree/4d6d8825a6bb689d459628312889dfbb0bcd41b5211d9e1ce768b0ff0309e562"
SIGSUM_CHECKPOINT = (f"{SIGSUM_ORIGIN}\n1\nKgAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\n— {SIGSUM_ORIGIN} "
                     "UgIom7fPZTqpxWWhyjWduBvTvGVqsokMbqTArsQilegKoFBJQjUFAmQ0+YeSPM3wfUQMFSzVnnNuWRTYrajXpNUbIQY=\n")


def peter():
    return Ed25519Verifier.from_vkey(PETER_VKEY)


def enoch():
    return Ed25519Verifier.from_vkey(ENOCH_VKEY)


def test_go_signer_key_signs_the_published_note_byte_for_byte():
    signer = Ed25519Signer.from_skey(PETER_SKEY)
    assert signer.key_id == 0xC74F20A3
    assert signer.verifier.vkey == PETER_VKEY
    assert sign_note(TEXT, signer) == TEXT + "\n" + PETER_SIG
    # A signature already held from the same key is replaced, not repeated.
    old = Signature("PeterNeumann", 0xC74F20A3, b"stale")
    assert sign_note(TEXT, signer, signatures=[old]) == TEXT + "\n" + PETER_SIG


def test_key_id_is_the_first_four_bytes_of_the_named_type_and_key():
    raw = base64.b64decode(PETER_VKEY.split("+")[2])
    assert key_id("PeterNeumann", raw[0], raw[1:]) == int.from_bytes(
        hashlib.sha256(b"PeterNeumann\n" + raw).digest()[:4], "big") == 0xC74F20A3


def test_the_signed_note_spec_example_verifies():
    verifier = Ed25519Verifier.from_vkey("example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k")
    note = ("This is an example message.\n\n— example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7"
            "Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n")
    assert open_note(note, [verifier]).text == "This is an example message.\n"


def test_unknown_signatures_are_set_aside_and_known_ones_checked():
    opened = open_note(TEXT + "\n" + PETER_SIG + ENOCH_SIG, [peter()])
    assert opened.text == TEXT
    assert [s.name for s in opened.verified] == ["PeterNeumann"]
    assert [(s.name, s.key_id) for s in opened.unverified] == [("EnochRoot", 0xAF0CFE78)]
    both = open_note((TEXT + "\n" + PETER_SIG + ENOCH_SIG).encode(), [peter(), enoch()])
    assert [s.name for s in both.verified] == ["PeterNeumann", "EnochRoot"]


def test_a_note_without_a_known_signature_is_refused():
    with pytest.raises(InvalidEvidence):
        open_note(TEXT + "\n" + PETER_SIG + ENOCH_SIG, [])
    # Same name, other key: still unknown, so still no verified signature.
    other = Ed25519Verifier("PeterNeumann", Ed25519PrivateKey.generate().public_key())
    with pytest.raises(InvalidEvidence):
        open_note(TEXT + "\n" + PETER_SIG, [other])


def test_a_known_signature_that_fails_refuses_the_whole_note():
    bad = PETER_SIG[:60] + "ABCD" + PETER_SIG[64:]
    with pytest.raises(InvalidEvidence) as caught:
        open_note(TEXT + "\n" + ENOCH_SIG + bad, [peter(), enoch()])
    assert not isinstance(caught.value, Malformed)
    with pytest.raises(InvalidEvidence):
        open_note(TEXT.replace("problem,", "problems,") + "\n" + PETER_SIG, [peter()])


@pytest.mark.parametrize("message", [
    TEXT,
    TEXT + "\n",
    TEXT + "\n" + PETER_SIG[:-1],
    "\x01" + TEXT + "\n" + PETER_SIG,
    b"\xff" + (TEXT + "\n" + PETER_SIG).encode(),
    TEXT + "\n" + "— Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n",
    TEXT + "\n" + PETER_SIG + "Unexpected line.\n",
    TEXT + "\n" + PETER_SIG * 101,
    TEXT + "\n— PeterNeumann AAAA\n",
])
def test_malformed_notes_are_refused_as_malformed(message):
    # Go sumdb/note's TestOpen bad messages, plus a 4-byte signature.
    with pytest.raises(Malformed):
        open_note(message, [peter()])


def test_verifier_keys_refuse_every_mangling():
    # Go sumdb/note TestNewVerifier: every substring and every byte bumped.
    assert Ed25519Verifier.from_vkey(PETER_VKEY).vkey == PETER_VKEY
    for i in range(len(PETER_VKEY) + 1):
        for j in range(i + 1, len(PETER_VKEY) + 1):
            if (i, j) != (0, len(PETER_VKEY)):
                with pytest.raises(Malformed):
                    Ed25519Verifier.from_vkey(PETER_VKEY[i:j])
    for i in range(len(PETER_VKEY)):
        mangled = PETER_VKEY[:i] + chr(ord(PETER_VKEY[i]) + 1) + PETER_VKEY[i + 1:]
        with pytest.raises(Malformed):
            Ed25519Verifier.from_vkey(mangled)
    for bad in ("PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==",
                "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"):
        with pytest.raises(Malformed):
            Ed25519Verifier.from_vkey(bad)


def test_signing_refuses_what_is_not_a_note():
    signer = Ed25519Signer.from_skey(PETER_SKEY)
    for text in ("abc", "a\x01b\n"):
        with pytest.raises(ValueError):
            sign_note(text, signer)
    with pytest.raises(ValueError):
        Ed25519Signer("a+b", Ed25519PrivateKey.generate())
    with pytest.raises(Malformed):
        Ed25519Signer.from_skey(PETER_SKEY.replace("c74f20a3", "c74f20a4"))


def test_parse_note_keeps_signature_bytes_after_the_key_id():
    text, signatures = parse_note(TEXT + "\n" + PETER_SIG)
    assert text == TEXT
    assert signatures[0].line() == PETER_SIG
    assert len(signatures[0].signature) == 64


@pytest.mark.parametrize("size, root, signature", SUMDB_HEADS)
def test_real_sum_golang_org_tree_heads_open_as_checkpoints(size, root, signature):
    note = f"go.sum database tree\n{size}\n{root}\n\n— sum.golang.org {signature}\n"
    signed = open_checkpoint(note, "go.sum database tree", [Ed25519Verifier.from_vkey(SUMDB_VKEY)])
    assert signed.checkpoint == Checkpoint("go.sum database tree", int(size), base64.b64decode(root))
    with pytest.raises(InvalidEvidence):
        open_checkpoint(note.replace(f"\n{size}\n", f"\n{int(size) + 1}\n"), "go.sum database tree",
                        [Ed25519Verifier.from_vkey(SUMDB_VKEY)])


def test_a_sigsum_log_checkpoint_from_litewitness_verifies():
    verifier = Ed25519Verifier(SIGSUM_ORIGIN, Ed25519PublicKey.from_public_bytes(SIGSUM_KEY))
    assert SIGSUM_ORIGIN.endswith(hashlib.sha256(SIGSUM_KEY).hexdigest())
    signed = open_checkpoint(SIGSUM_CHECKPOINT, SIGSUM_ORIGIN, [verifier])
    assert signed.checkpoint.size == 1 and signed.checkpoint.root_hash == b"\x2a" + bytes(31)


def test_go_tree_note_format_is_a_checkpoint():
    # golang.org/x/mod sumdb/tlog TestFormatTree golden text.
    golden = "go.sum database tree\n123456789012\nTszzRgjTG6xce+z2AG31kAXYKBgQVtCSCE40HmuwBb0=\n"
    checkpoint = Checkpoint("go.sum database tree", 123456789012, leaf_hash(b"hello world"))
    assert checkpoint.body() == golden
    assert parse_checkpoint(golden) == checkpoint


def test_extension_lines_are_kept_and_signed():
    checkpoint = Checkpoint("example.com/log", 5, bytes(32), ("ext one", "ext two"))
    assert parse_checkpoint(checkpoint.body()) == checkpoint
    signer = Ed25519Signer("example.com/log", Ed25519PrivateKey.generate())
    note = sign_checkpoint(checkpoint, signer)
    assert open_checkpoint(note, "example.com/log", [signer.verifier]).checkpoint == checkpoint
    with pytest.raises(InvalidEvidence):
        open_checkpoint(note.replace("ext two", "ext 2"), "example.com/log", [signer.verifier])


def test_a_good_signature_over_another_logs_head_proves_nothing_here():
    signer = Ed25519Signer("example.com/log", Ed25519PrivateKey.generate())
    note = sign_checkpoint(Checkpoint("example.com/other", 1, bytes(32)), signer)
    with pytest.raises(InvalidEvidence):
        open_checkpoint(note, "example.com/log", [signer.verifier])


@pytest.mark.parametrize("text", [
    "origin\n5\n", "origin\n05\n" + base64.b64encode(bytes(32)).decode() + "\n",
    "origin\n-1\n" + base64.b64encode(bytes(32)).decode() + "\n",
    "origin\n5\n" + base64.b64encode(bytes(31)).decode() + "\n",
    "origin\n5\n" + base64.b64encode(bytes(32)).decode(),
    "origin\n5\n" + base64.b64encode(bytes(32)).decode() + "\n\n",
    "\n5\n" + base64.b64encode(bytes(32)).decode() + "\n",
    "origin\n５\n" + base64.b64encode(bytes(32)).decode() + "\n",
])
def test_malformed_checkpoints_are_refused(text):
    with pytest.raises(Malformed):
        parse_checkpoint(text)
