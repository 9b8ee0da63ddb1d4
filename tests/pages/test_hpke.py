"""The recorder's own HPKE and chunk encryption (server/static/record/), run
in real chromium: RFC 9180's test vector, then both directions against the
server's cryptography (crypto/aead.py) and its API."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pytest
import requests

from crypto import InvalidEvidence
from crypto.aead import chunk_aad, chunk_nonce, decrypt_chunk, open_content_key
from crypto.keys import load_or_create_server_keys

from ..support import Phone, b64url, content_digest

VECTORS = json.loads((Path(__file__).parent / "hpke_vectors.json").read_text())["vectors"]

# Imported into a page at /record, a secure context on 127.0.0.1.
IMPORTS = """
  const hpke = await import('/static/record/hpke.js');
  const chunks = await import('/static/record/chunks.js');
  const { fromHex, hex } = chunks;
"""


@pytest.fixture
def page(chromium, server):
    page = chromium.new_page()
    page.goto(server.url + "/record")
    return page


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"].split(" ")[0] for v in VECTORS])
def test_rfc_9180_base_mode_vector(page, vector):
    aead = {1: "AES_128_GCM", 2: "AES_256_GCM"}[vector["aead_id"]]
    assert (vector["mode"], vector["kem_id"], vector["kdf_id"]) == (0, 32, 1)
    encryption = vector["encryptions"][0]
    assert encryption["sequence_number"] == 0  # single-shot seals only the first message
    got = page.evaluate("async ([v, aead]) => {" + IMPORTS + """
      const ephemeral = await hpke.ephemeralForTests(fromHex(v.skEm), fromHex(v.pkEm));
      const context = await hpke.setupBaseSender(fromHex(v.pkRm), fromHex(v.info), { aead: hpke.AEAD[aead], ephemeral });
      const e = v.encryptions[0];
      const ct = await context.seal(fromHex(e.aad), fromHex(e.pt));
      const single = await hpke.sealBase(fromHex(v.pkRm), fromHex(v.info), fromHex(e.aad), fromHex(e.pt),
                                         { aead: hpke.AEAD[aead], ephemeral });
      return { enc: hex(context.enc), shared_secret: hex(context.sharedSecret),
               key_schedule_context: hex(context.keyScheduleContext), secret: hex(context.secret),
               key: hex(context.key), base_nonce: hex(context.baseNonce),
               exporter_secret: hex(context.exporterSecret), ct: hex(ct), single: hex(single) };
    }""", [vector, aead])
    for name in ("enc", "shared_secret", "key_schedule_context", "secret", "key", "base_nonce", "exporter_secret"):
        assert got[name] == vector[name], name
    assert got["ct"] == encryption["ct"]
    assert got["single"] == vector["enc"] + encryption["ct"]


def test_a_changed_vector_input_changes_the_output(page):
    """The vector test can fail: one bit of `info` changed gives another key."""
    vector = dict(VECTORS[0], info="5" + VECTORS[0]["info"][1:])
    got = page.evaluate("async (v) => {" + IMPORTS + """
      const ephemeral = await hpke.ephemeralForTests(fromHex(v.skEm), fromHex(v.pkEm));
      const context = await hpke.setupBaseSender(fromHex(v.pkRm), fromHex(v.info), { aead: hpke.AEAD.AES_128_GCM, ephemeral });
      return hex(context.key);
    }""", vector)
    assert got != VECTORS[0]["key"]


def seal_and_encrypt(page, server, recording_id: str) -> dict:
    """In the page: fetch the server's key, seal a fresh content key to it
    and encrypt chunk 0 ("more") and chunk 7 ("final") under it."""
    return page.evaluate("async (recordingId) => {" + IMPORTS + """
      const keys = await (await fetch('/v1/keys')).json();
      const raw = chunks.newContentKey();
      const sealed = await hpke.sealContentKey(chunks.fromBase64url(keys.hpke.public_key), recordingId, raw);
      const key = await chunks.importContentKey(raw);
      const pieces = [new TextEncoder().encode('first piece of video'), new TextEncoder().encode('last piece')];
      const more = await chunks.encryptChunk(key, recordingId, 0, pieces[0], false);
      const final = await chunks.encryptChunk(key, recordingId, 7, pieces[1], true);
      return { key_id: keys.hpke.key_id, content_key: hex(raw), sealed: hex(sealed),
               more: hex(more), final: hex(final), digest: await chunks.contentDigest(more),
               nonce: hex(chunks.chunkNonce(2147483647)), aad: hex(chunks.chunkAad(recordingId, 12, true)) };
    }""", recording_id)


def test_a_key_sealed_in_the_browser_opens_with_the_server_hpke(page, server):
    recording_id = str(uuid.uuid4())
    got = seal_and_encrypt(page, server, recording_id)
    # The running server made the keys already; `now` only dates keys not yet made.
    private = load_or_create_server_keys(server.keys_dir, now=datetime.now(timezone.utc)).hpke_private
    sealed = bytes.fromhex(got["sealed"])
    assert len(sealed) == 80
    key = open_content_key(private, recording_id, sealed)
    assert key.hex() == got["content_key"]
    with pytest.raises(InvalidEvidence):
        open_content_key(private, str(uuid.uuid4()), sealed)  # info binds the recording id


def test_chunks_encrypted_in_the_browser_decrypt_with_the_server_aead(page, server):
    recording_id = str(uuid.uuid4())
    got = seal_and_encrypt(page, server, recording_id)
    key = bytes.fromhex(got["content_key"])
    more, final = bytes.fromhex(got["more"]), bytes.fromhex(got["final"])
    assert decrypt_chunk(key, recording_id, 0, more, final=False) == b"first piece of video"
    assert decrypt_chunk(key, recording_id, 7, final, final=True) == b"last piece"
    assert got["digest"] == content_digest(more)
    assert got["nonce"] == chunk_nonce(2147483647).hex()
    assert got["aad"] == chunk_aad(recording_id, 12, True).hex()
    for wrong in (
        lambda: decrypt_chunk(key, recording_id, 0, more, final=True),       # "final" vs "more"
        lambda: decrypt_chunk(key, recording_id, 7, final, final=False),
        lambda: decrypt_chunk(key, recording_id, 1, more, final=False),      # another index
        lambda: decrypt_chunk(key, str(uuid.uuid4()), 0, more, final=False),  # another recording
    ):
        with pytest.raises(InvalidEvidence):
            wrong()


def test_the_server_api_accepts_what_the_browser_sealed_and_encrypted(page, server):
    recording_id = str(uuid.uuid4())
    got = seal_and_encrypt(page, server, recording_id)
    phone = Phone(server)
    body = {"recording_id": recording_id, "content_type": "video/mp4", "started_at": "2026-11-21T14:03:07.123Z",
            "key_id": got["key_id"], "sealed_key": b64url(bytes.fromhex(got["sealed"]))}
    created = requests.post(server.url + "/v1/recordings", json=body, headers=phone.auth)
    assert created.status_code == 201, created.text
    url = f"{server.url}/v1/recordings/{recording_id}/chunks"
    more = bytes.fromhex(got["more"])
    headers = {**phone.auth, "Content-Type": "application/octet-stream", "Content-Digest": content_digest(more)}
    lied = requests.put(url + "/0", data=more, headers={**headers, "Witness-Final": "?1"})
    assert lied.status_code == 422 and lied.json()["error"] == "chunk_unreadable"
    assert requests.put(url + "/0", data=more, headers=headers).status_code == 201
    final = bytes.fromhex(got["final"])
    put = requests.put(url + "/7", data=final, headers={**headers, "Content-Digest": content_digest(final),
                                                        "Witness-Final": "?1"})
    assert put.status_code == 201, put.text

    other = str(uuid.uuid4())  # the same sealed key under another recording id
    refused = requests.post(server.url + "/v1/recordings", json={**body, "recording_id": other}, headers=phone.auth)
    assert refused.status_code == 422 and refused.json()["error"] == "bad_sealed_key"
