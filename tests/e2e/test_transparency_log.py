"""The transparency log as anyone outside sees it, through the front door:
a signed checkpoint that opens with the key `GET /v1/keys` names, tiles and
entry bundles in the C2SP tlog-tiles layout that rebuild the checkpoint's
root, one leaf per audit entry, and leaves that reveal nothing."""

from __future__ import annotations

import base64
import hashlib
from datetime import datetime, timezone

import pytest
import requests

from crypto import InvalidEvidence
from crypto.keys import load_or_create_server_keys
from crypto.tlog.checkpoint import open_checkpoint
from crypto.tlog.cosignature import CosignatureVerifier
from crypto.tlog.merkle import check_inclusion, leaf_hash, prove_inclusion, tree_hash
from crypto.tlog.note import Ed25519Signer, Ed25519Verifier
from crypto.tlog.tiles import Tile, hash_reader_from_tiles, read_entry_bundle
from sync.evidence.receipt import check_receipt
from tests.e2e.test_cosigner import CosignerProcess
from tests.openssl_tsa import OpensslTsa, TsaHttpServer
from tests.support import Phone, ServerProcess, openssl_ts_verify, wait_until


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    server = ServerProcess(tmp_path_factory.mktemp("log"), WITNESS_LOG_CHECKPOINT_SECONDS=0.5).start()
    recording = Phone(server).create_recording()
    recording.answers = []
    for index in range(6):
        answer = recording.put(index, recording.chunk(index))
        assert answer.status_code == 201
        recording.answers.append(answer.json())
    yield server, recording
    server.stop()


def signed_head(server):
    keys = requests.get(server.url + "/v1/keys").json()["log"]
    verifier = Ed25519Verifier.from_vkey(keys["vkey"])
    answer = requests.get(server.url + "/log/checkpoint")
    if answer.status_code == 404:  # the leader signs its first one seconds after starting
        assert answer.json()["error"] == "not_found"
        return None
    assert answer.status_code == 200 and answer.headers["Content-Type"].startswith("text/plain")
    assert requests.get(server.url + "/log/key").text.strip() == keys["vkey"]
    return open_checkpoint(answer.text, keys["origin"], [verifier]).checkpoint


def test_the_checkpoint_covers_every_entry_and_the_tiles_rebuild_its_root(logged):
    server, recording = logged
    entries = len(server.query("SELECT id FROM audit"))
    head = wait_until(lambda: (h := signed_head(server)) and h.size >= entries and h, "a checkpoint of every entry", 30)
    (counts,) = server.query("SELECT (SELECT COUNT(*) FROM audit) AS entries, (SELECT COUNT(*) FROM tlog_leaves) AS leaves")
    assert counts["entries"] == counts["leaves"] >= head.size  # one leaf per entry, in the entry's transaction

    def fetch(tile: Tile) -> bytes:
        answer = requests.get(f"{server.url}/log/{tile.path()}")
        assert answer.status_code == 200, answer.text
        return answer.content

    reader = hash_reader_from_tiles(head.size, fetch)
    assert tree_hash(head.size, reader) == head.root_hash
    bundle = requests.get(f"{server.url}/log/{Tile(0, 0, head.size).entries_path()}")
    leaves = read_entry_bundle(bundle.content)
    assert len(leaves) == head.size
    for index, leaf in enumerate(leaves):
        check_inclusion(leaf_hash(leaf), index, head.size, head.root_hash, prove_inclusion(head.size, index, reader))
    # The leaves are commitments: nothing in them names the recording.
    assert recording.id.encode() not in bundle.content and all(len(leaf) == 32 for leaf in leaves)


def test_unknown_and_unpublished_tiles_are_json_404s(logged):
    server, _ = logged
    head = wait_until(lambda: signed_head(server), "a checkpoint", 30)
    for path in ("tile/0/000", f"tile/0/000.p/{min(head.size + 50, 255)}", "tile/9/x", "tile/entries/001",
                 "tile/0/0000"):
        answer = requests.get(f"{server.url}/log/{path}")
        assert answer.status_code == 404, path
        assert answer.json()["error"] == "not_found"


def test_every_acknowledgement_carries_a_receipt_the_log_proves(logged):
    server, recording = logged
    log_key = Ed25519Verifier.from_vkey(requests.get(server.url + "/v1/keys").json()["log"]["vkey"]).public_key
    receipts = [check_receipt(answer["receipt"], log_key) for answer in recording.answers]
    for index, (answer, receipt) in enumerate(zip(recording.answers, receipts)):
        assert (receipt["recording_id"], receipt["index"], receipt["ciphertext_sha256"], receipt["received_at"]) == \
            (recording.id, index, answer["sha256"], answer["received_at"])
    assert [r["leaf_index"] for r in receipts] == sorted({r["leaf_index"] for r in receipts})
    # A retry of the same bytes gets the same receipt.
    again = recording.put(2, recording.chunk(2))
    assert again.status_code == 200 and again.json()["receipt"] == recording.answers[2]["receipt"]
    # A changed field no longer verifies.
    forged = {**recording.answers[3]["receipt"], "received_at": "2026-01-01T00:00:00.000Z"}
    with pytest.raises(InvalidEvidence):
        check_receipt(forged, log_key)
    # Later, from the public tiles alone: each receipt's leaf is in the log where it says.
    head = wait_until(lambda: (h := signed_head(server)) and h.size > receipts[-1]["leaf_index"] and h, "a checkpoint", 30)
    reader = hash_reader_from_tiles(head.size, lambda tile: requests.get(f"{server.url}/log/{tile.path()}").content)
    for receipt in receipts:
        leaf = base64.b64decode(receipt["leaf"])
        proof = prove_inclusion(head.size, receipt["leaf_index"], reader)
        check_inclusion(leaf_hash(leaf), receipt["leaf_index"], head.size, head.root_hash, proof)


def test_a_partner_witness_cosigns_the_checkpoints_as_the_log_grows(tmp_path):
    """The log's checkpoints go to a real `witness-cosigner` with consistency
    proofs; the served checkpoint carries its cosignature, which opens with
    the witness's key, first from size 0 and again once the log grew."""
    origin = "witness-sync.test/log"
    keys = load_or_create_server_keys(tmp_path / "server" / "keys", now=datetime.now(timezone.utc))
    log_verifier = Ed25519Signer(origin, keys.log_private).verifier
    cosigner = CosignerProcess(tmp_path / "cosigner", [(origin, log_verifier.vkey)])
    witness = CosignatureVerifier.from_vkey(cosigner.vkey())
    cosigner.start()
    server = ServerProcess(tmp_path / "server", WITNESS_LOG_ORIGIN=origin, WITNESS_LOG_CHECKPOINT_SECONDS=0.5,
                           WITNESS_LOG_WITNESSES=f"{cosigner.url} {witness.vkey}").start()
    try:
        def cosigned(beyond: int):
            answer = requests.get(server.url + "/log/checkpoint")
            if answer.status_code != 200:
                return None
            opened = open_checkpoint(answer.text, origin, [log_verifier, witness])
            names = {signature.name for signature in opened.note.verified}
            return opened.checkpoint if witness.name in names and opened.checkpoint.size > beyond else None

        recording = Phone(server).create_recording()
        assert recording.put(0, recording.chunk(0)).status_code == 201
        first = wait_until(lambda: cosigned(0), "a cosigned checkpoint", 30)
        for index in range(1, 4):
            assert recording.put(index, recording.chunk(index)).status_code == 201
        later = wait_until(lambda: cosigned(first.size), "a cosigned checkpoint of the grown log", 30)
        assert later.size > first.size
        # The witness holds that newest size for the log (what it will prove from next).
        assert f"{later.size}\n" in requests.get(f"{cosigner.url}/{hashlib.sha256(origin.encode()).hexdigest()}"
                                                 "/checkpoint").text
    finally:
        server.stop()
        cosigner.kill()


def test_checkpoints_are_stamped_by_the_first_external_tsa_that_answers(tmp_path):
    """WITNESS_TSA_URL lists a TSA that is down, then a real `openssl ts`
    one: the checkpoint covering a new chunk gets that one's token, which
    `openssl ts -verify` accepts over the note's bytes with the operator's
    CA file alone, beside the built-in TSA's token."""
    tsa = TsaHttpServer(OpensslTsa(tmp_path / "tsa", key_type="rsa")).start()
    server = ServerProcess(tmp_path / "server", WITNESS_LOG_CHECKPOINT_SECONDS=0.5,
                           WITNESS_TSA_URL=f"http://127.0.0.1:9/down, {tsa.url}",
                           WITNESS_TSA_CA_FILE=tsa.tsa.ca_file).start()
    try:
        answer = Phone(server).create_recording()
        receipt = answer.put(0, answer.chunk(0)).json()["receipt"]

        def stamped():
            head = signed_head(server)
            if head is None or head.size <= receipt["leaf_index"]:
                return None
            kept = requests.get(f"{server.url}/log/stamps/{head.size}")
            return kept.json() if kept.status_code == 200 and kept.json()["external"] else None

        kept = wait_until(stamped, "an externally stamped checkpoint covering the chunk", 60)
        assert kept["external"]["tsa_url"] == tsa.url
        note = kept["note"].encode("utf-8")
        chain = tsa.tsa.ca_file.read_text()
        done = openssl_ts_verify(tmp_path, note, base64.b64decode(kept["external"]["tsr"]), chain)
        assert done.returncode == 0 and "Verification: OK" in done.stdout, done.stdout + done.stderr
        builtin = requests.get(server.url + "/v1/keys").json()["tsa"]["certificate_chain_pem"]
        (tmp_path / "builtin").mkdir()
        done = openssl_ts_verify(tmp_path / "builtin", note, base64.b64decode(kept["builtin_tsr"]), builtin)
        assert done.returncode == 0, done.stdout + done.stderr
        assert requests.get(f"{server.url}/log/stamps/999999").status_code == 404
    finally:
        server.stop()
        tsa.stop()
