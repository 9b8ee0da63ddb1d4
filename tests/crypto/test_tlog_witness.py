"""C2SP tlog-cosignature and tlog-witness bodies: the cosignature spec's
signed message and signature line (its example's key ID and time decoded
from the published bytes), litewitness's add-checkpoint request bodies, and
a witness's answer opened as the spec says a log should."""

import base64

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from crypto import InvalidEvidence
from crypto.tlog import Malformed
from crypto.tlog.checkpoint import Checkpoint, open_checkpoint, sign_checkpoint
from crypto.tlog.cosignature import Cosigner, CosignatureVerifier, cosignature_message, cosignature_time
from crypto.tlog.note import Ed25519Signer, key_id, open_note, parse_note
from crypto.tlog.witness import (
    AddCheckpoint,
    conflict_body,
    cosignatures_body,
    parse_add_checkpoint,
    parse_conflict_body,
    parse_cosignatures_body,
)

from .test_tlog_note import SIGSUM_CHECKPOINT

# c2sp.org/tlog-cosignature's example.
BODY = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
SPEC_COSIGNATURE = ("— witness.example.com/w1 jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJ"
                    "sX3b2oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA==\n")


def raw(cosigner):
    return cosigner.verifier.public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def test_the_signed_message_is_the_spec_example_byte_for_byte():
    assert cosignature_message(BODY, 1679315147) == (
        b"cosignature/v1\ntime 1679315147\nexample.com/behind-the-sofa\n20852163\n"
        b"CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n")


def test_the_spec_example_line_is_key_id_time_and_signature():
    _, [signature] = parse_note("x\n\n" + SPEC_COSIGNATURE)
    assert signature.name == "witness.example.com/w1"
    assert signature.key_id == 0x8D66CF3F
    assert cosignature_time(signature) == 1679315147  # the time of the spec's message
    assert len(signature.signature) == 8 + 64


def test_a_cosignature_verifies_in_a_note_and_states_its_time():
    log = Ed25519Signer("example.com/behind-the-sofa", Ed25519PrivateKey.generate())
    witness = Cosigner("witness.example.com/w1", Ed25519PrivateKey.generate())
    note = sign_checkpoint(Checkpoint("example.com/log", 3, bytes(32), ("ext",)), log)
    text, _ = parse_note(note)
    cosignature = witness.cosign(text, 1_700_000_000)
    assert cosignature.key_id == key_id(witness.name, 0x04, raw(witness))
    assert cosignature.signature[:8] == (1_700_000_000).to_bytes(8, "big")
    witness.verifier.public_key.verify(cosignature.signature[8:], cosignature_message(text, 1_700_000_000))
    cosigned = note + cosignature.line()
    opened = open_checkpoint(cosigned, "example.com/log", [log.verifier, witness.verifier])
    assert [s.name for s in opened.note.verified] == [log.name, witness.name]
    assert cosignature_time(opened.note.verified[1]) == 1_700_000_000
    # A witness's key as a type 0x04 vkey, and its key ID differs from the
    # same key's as a plain Ed25519 note key.
    assert CosignatureVerifier.from_vkey(witness.verifier.vkey).key_id == witness.key_id
    assert witness.key_id != key_id(witness.name, 0x01, raw(witness))


def test_a_cosignature_covers_the_extension_lines_and_its_time():
    witness = Cosigner("w", Ed25519PrivateKey.generate())
    body = Checkpoint("example.com/log", 3, bytes(32), ("ext",)).body()
    s = witness.cosign(body, 1_700_000_000)
    assert witness.verifier.verify(body.encode(), s.signature)
    assert not witness.verifier.verify(body.replace("ext", "ex2").encode(), s.signature)
    later = (1_700_000_001).to_bytes(8, "big") + s.signature[8:]
    assert not witness.verifier.verify(body.encode(), later)
    assert not witness.verifier.verify(b"not a checkpoint\n", s.signature)
    with pytest.raises(InvalidEvidence):
        open_note(body.replace("ext", "ex2") + "\n" + s.line(), [witness.verifier])


def test_times_beyond_63_bits_are_refused():
    witness = Cosigner("w", Ed25519PrivateKey.generate())
    with pytest.raises(ValueError):
        witness.cosign(BODY, 2**63)
    s = witness.cosign(BODY, 2**63 - 1)
    forged = type(s)(s.name, s.key_id, b"\xff" * 8 + s.signature[8:])
    with pytest.raises(Malformed):
        cosignature_time(forged)
    assert not witness.verifier.verify(BODY.encode(), forged.signature)


# FiloSottile/litetlog cmd/litewitness/testdata/litewitness.txt requests.
LITEWITNESS_FIRST = "old 0\n\n" + SIGSUM_CHECKPOINT
LITEWITNESS_SECOND_HEAD = ("old 1\nKgEAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n"
                           "KgIAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\n")


def test_litewitness_request_bodies_parse_and_rebuild():
    first = parse_add_checkpoint(LITEWITNESS_FIRST.encode())
    assert (first.old_size, first.proof, first.checkpoint) == (0, (), SIGSUM_CHECKPOINT)
    assert first.body() == LITEWITNESS_FIRST.encode()
    second = parse_add_checkpoint((LITEWITNESS_SECOND_HEAD + SIGSUM_CHECKPOINT).encode())
    assert second.old_size == 1
    assert second.proof == (b"\x2a\x01" + bytes(30), b"\x2a\x02" + bytes(30))
    assert second.body() == (LITEWITNESS_SECOND_HEAD + SIGSUM_CHECKPOINT).encode()


@pytest.mark.parametrize("body", [
    "old 01\n\n" + SIGSUM_CHECKPOINT, "old -1\n\n" + SIGSUM_CHECKPOINT, "old\n\n" + SIGSUM_CHECKPOINT,
    "new 1\n\n" + SIGSUM_CHECKPOINT, "old 1\n" + SIGSUM_CHECKPOINT,
    "old 1\nKgEAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==\n\n" + SIGSUM_CHECKPOINT,
    "old 1\n" + "KgEAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n" * 64 + "\n" + SIGSUM_CHECKPOINT,
])
def test_malformed_requests_are_refused(body):
    with pytest.raises(Malformed):
        parse_add_checkpoint(body.encode())


def test_requests_that_break_the_protocol_are_not_built():
    for bad in (AddCheckpoint(0, (bytes(32),), SIGSUM_CHECKPOINT), AddCheckpoint(1, (bytes(31),), SIGSUM_CHECKPOINT),
                AddCheckpoint(1, (bytes(32),) * 64, SIGSUM_CHECKPOINT), AddCheckpoint(-1, (), SIGSUM_CHECKPOINT)):
        with pytest.raises(ValueError):
            bad.body()


def test_a_witness_answer_joins_the_checkpoint_and_opens_with_trusted_witnesses():
    log = Ed25519Signer("example.com/log", Ed25519PrivateKey.generate())
    note = sign_checkpoint(Checkpoint("example.com/log", 9, bytes(32)), log)
    text, _ = parse_note(note)
    w1, w2 = Cosigner("w1.example", Ed25519PrivateKey.generate()), Cosigner("w2.example", Ed25519PrivateKey.generate())
    answer = cosignatures_body([w1.cosign(text, 100), w2.cosign(text, 101)])
    signatures = parse_cosignatures_body(answer)
    assert [s.name for s in signatures] == ["w1.example", "w2.example"]
    opened = open_note(note + answer.decode(), [w1.verifier])  # w2 is not trusted: ignored
    assert [s.name for s in opened.verified] == ["w1.example"]
    for bad in (b"", b"w1 abc\n", answer[:-1]):
        with pytest.raises(Malformed):
            parse_cosignatures_body(bad)


def test_a_conflict_answer_is_the_latest_size_and_a_newline():
    assert conflict_body(20852014) == b"20852014\n"
    assert parse_conflict_body(b"20852014\n") == 20852014
    for bad in (b"", b"12", b"012\n", b"1 2\n", b"\xff\n"):
        with pytest.raises(Malformed):
            parse_conflict_body(bad)


def test_the_spec_request_example_parses():
    body = ("old 20852014\nPlRNCrwHpqhGrupue0L7gxbjbMiKA9temvuZZDDpkaw=\njrJZDmY8Y7SyJE0MWLpLozkIVMSMZcD5kvuKxPC3swk=\n"
            "5+pKlUdi2LeF/BcMHBn+Ku6yhPGNCswZZD1X/6QgPd8=\n/6WVhPs2CwSsb5rYBH5cjHV/wSmA79abXAwhXw3Kj/0=\n\n"
            + BODY + "\n— example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q"
            "1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n")
    request = parse_add_checkpoint(body.encode())
    assert request.old_size == 20852014 and len(request.proof) == 4
    assert request.proof[0] == base64.b64decode("PlRNCrwHpqhGrupue0L7gxbjbMiKA9temvuZZDDpkaw=")
    assert parse_note(request.checkpoint)[0] == BODY
