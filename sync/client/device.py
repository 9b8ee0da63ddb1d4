"""The reference device client: what a phone app does.

It seals a fresh content key per recording, encrypts each piece as it is
recorded, and keeps every encrypted chunk in an on-disk outbox until the
server has acknowledged it, so nothing is lost while the phone is offline or
the app restarts. Uploads retry with capped exponential backoff and full
jitter; after a reconnect the client asks `status` which chunks the server
already holds and sends only the rest.

Used by tests, benchmarks and the `witness-record` command. It talks HTTP
only, like a third-party app would, and never needs the server's code.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import secrets
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from crypto import InvalidEvidence
from crypto.aead import encrypt_chunk, new_content_key, seal_content_key
from crypto.signing import public_key_pem, sign_chunk
from crypto.tlog.checkpoint import open_checkpoint
from crypto.tlog.merkle import check_inclusion, leaf_hash, prove_inclusion
from crypto.tlog.note import Ed25519Verifier
from crypto.tlog.tiles import hash_reader_from_tiles

from ..evidence.receipt import check_receipt
from ..timefmt import format_time, utc_now

RETRY_STATUSES = {408, 425, 429, 500, 502, 503, 504, 507}


class UploadRefused(Exception):
    """The server refused something for good (4xx other than auth); the
    `error` code and message say why. Retrying the same request will not help."""

    def __init__(self, status: int, error: str, message: str):
        super().__init__(f"{status} {error}: {message}")
        self.status, self.error, self.message = status, error, message


class ServerUnreachable(Exception):
    """The deadline passed while the server could not be reached."""


class NotYetLogged(Exception):
    """A kept receipt's leaf is past the log's newest checkpoint (it is
    signed every few seconds): ask again shortly."""


@dataclass
class Backoff:
    """Capped exponential backoff with full jitter (AWS architecture blog,
    "Exponential Backoff and Jitter"): sleep a random time up to
    min(cap, base * 2**attempt)."""

    base: float = 0.25
    cap: float = 30.0

    def delay(self, attempt: int) -> float:
        return random.uniform(0, min(self.cap, self.base * (2 ** min(attempt, 30))))


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    with open(tmp, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)


class DeviceClient:
    """One device: its credentials and its outbox folder.

    Thread-safe for one recorder thread calling `add_piece` while another
    thread calls `upload_pending`.
    """

    def __init__(self, server_url: str, outbox: str | os.PathLike, *, timeout: float = 30.0,
                 backoff: Backoff | None = None, session: requests.Session | None = None):
        self.server_url = server_url.rstrip("/")
        self.outbox = Path(outbox)
        (self.outbox / "recordings").mkdir(parents=True, exist_ok=True)
        self.timeout = timeout
        self.backoff = backoff or Backoff()
        self.http = session or requests.Session()
        self._lock = threading.RLock()
        self._wake = threading.Condition(self._lock)
        self._keys: dict | None = None
        self.acked: dict[str, set[int]] = {}

    # -- identity ---------------------------------------------------------
    @property
    def _device_file(self) -> Path:
        return self.outbox / "device.json"

    def device(self) -> dict | None:
        """The stored registration (`device_id`, tokens), or None."""
        try:
            return json.loads(self._device_file.read_text())
        except FileNotFoundError:
            return None

    def register(self, *, enrollment_code: str | None = None, sign_chunks: bool = False,
                 deadline: float | None = None) -> str:
        """Register anonymously unless already registered; return the device id."""
        existing = self.device()
        if existing:
            return existing["device_id"]
        body, signing_pem = {}, None
        if enrollment_code:
            body["enrollment_code"] = enrollment_code
        if sign_chunks:
            key = Ed25519PrivateKey.generate()
            signing_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()).decode()
            body["public_key_pem"] = public_key_pem(key.public_key())
        answer = self._call("POST", "/v1/devices", json=body, auth=False, deadline=deadline).json()
        answer["signing_key_pem"] = signing_pem
        # Kept (on the phone only) to register again if this registration
        # expires before it is used (`_register_again`).
        answer["enrollment_code"] = enrollment_code
        _write_atomically(self._device_file, json.dumps(answer).encode())
        return answer["device_id"]

    def _register_again(self, deadline: float | None) -> str:
        """Replace a registration the server no longer knows: a device that
        made no recording within a day of registering is removed by the
        server (401 `token_revoked`). Same signing key and enrollment code,
        so pieces already signed still verify. Returns the new device id."""
        old = self.device() or {}
        body = {}
        if old.get("enrollment_code"):
            body["enrollment_code"] = old["enrollment_code"]
        if old.get("signing_key_pem"):
            key = serialization.load_pem_private_key(old["signing_key_pem"].encode(), password=None)
            body["public_key_pem"] = public_key_pem(key.public_key())
        answer = self._call("POST", "/v1/devices", json=body, auth=False, deadline=deadline).json()
        answer["signing_key_pem"] = old.get("signing_key_pem")
        answer["enrollment_code"] = old.get("enrollment_code")
        _write_atomically(self._device_file, json.dumps(answer).encode())
        return answer["device_id"]

    def _signing_key(self) -> Ed25519PrivateKey | None:
        pem = (self.device() or {}).get("signing_key_pem")
        return serialization.load_pem_private_key(pem.encode(), password=None) if pem else None

    def server_keys(self, deadline: float | None = None) -> dict:
        """`GET /v1/keys`, cached in the outbox so recording can start offline
        once the server was seen once."""
        if self._keys is None:
            cached = self.outbox / "server-keys.json"
            try:
                self._keys = self._call("GET", "/v1/keys", auth=False, deadline=deadline).json()
                _write_atomically(cached, json.dumps(self._keys).encode())
            except ServerUnreachable:
                if not cached.exists():
                    raise
                self._keys = json.loads(cached.read_text())
        return self._keys

    # -- recording --------------------------------------------------------
    def start_recording(self, content_type: str, *, started_at: str | None = None) -> str:
        """Begin a recording locally and return its id. Needs the server's
        public key (fetched or cached) but not a connection afterwards."""
        keys = self.server_keys()
        recording_id = str(uuid.uuid4())
        content_key = new_content_key()
        public = X25519PublicKey.from_public_bytes(_b64url_decode(keys["hpke"]["public_key"]))
        state = {
            "request": {
                "recording_id": recording_id,
                "content_type": content_type,
                "started_at": started_at or format_time(utc_now()),
                "key_id": keys["hpke"]["key_id"],
                "sealed_key": _b64url(seal_content_key(public, recording_id, content_key)),
            },
            # The phone keeps K only until every piece is encrypted.
            "content_key": _b64url(content_key),
            "next_index": 0,
            "final_index": None,
            "created_on_server": False,
            "completed_on_server": False,
        }
        folder = self._folder(recording_id)
        folder.mkdir(parents=True)
        self._save_state(recording_id, state)
        return recording_id

    def add_piece(self, recording_id: str, plaintext: bytes, *, final: bool = False,
                  captured_at: str | None = None) -> int:
        """Encrypt the next piece into the outbox and return its index."""
        with self._lock:
            state = self._state(recording_id)
            if state["final_index"] is not None:
                raise ValueError("this recording already has its final piece")
            index = state["next_index"]
            content_key = _b64url_decode(state["content_key"])
            ciphertext = encrypt_chunk(content_key, recording_id, index, plaintext, final=final)
            digest = hashlib.sha256(ciphertext).hexdigest()
            meta = {"final": final, "captured_at": captured_at or format_time(utc_now())}
            key = self._signing_key()
            if key is not None:
                meta["signature"] = _b64url(sign_chunk(key, recording_id, index, digest))
            folder = self._folder(recording_id)
            _write_atomically(folder / f"{index:010d}.meta", json.dumps(meta).encode())
            _write_atomically(folder / f"{index:010d}.chunk", ciphertext)
            state["next_index"] = index + 1
            if final:
                state["final_index"] = index
                state["content_key"] = None
            self._save_state(recording_id, state)
            self._wake.notify_all()
            return index

    def finish(self, recording_id: str) -> None:
        """Mark that recording stopped normally (without a last piece: the
        previous piece cannot be re-marked final, so an empty final piece is
        added)."""
        with self._lock:
            if self._state(recording_id)["final_index"] is None:
                self.add_piece(recording_id, b"", final=True)

    # -- upload -----------------------------------------------------------
    def pending_indexes(self, recording_id: str) -> list[int]:
        """Chunks still in the outbox (not yet acknowledged)."""
        return sorted(int(p.stem) for p in self._folder(recording_id).glob("*.chunk"))

    def recordings(self) -> list[str]:
        """Recording ids in the outbox."""
        return sorted(p.name for p in (self.outbox / "recordings").iterdir() if p.is_dir())

    def upload_pending(self, recording_id: str, *, deadline: float | None = None) -> int:
        """Send everything in the outbox for a recording, in index order,
        creating the recording and resuming from `status` first. Returns how
        many chunks were acknowledged. Raises `ServerUnreachable` when the
        deadline passes and `UploadRefused` for a permanent refusal."""
        state = self._state(recording_id)
        if not state["created_on_server"]:
            try:
                self._call("POST", "/v1/recordings", json=state["request"], deadline=deadline)
            except UploadRefused as refused:
                # The registration is gone (expired unused, or revoked): a
                # recording not yet on the server can go under a new one.
                if (refused.status, refused.error) != (401, "token_revoked"):
                    raise
                self._register_again(deadline)
                self._call("POST", "/v1/recordings", json=state["request"], deadline=deadline)
            with self._lock:
                state = self._state(recording_id)
                state["created_on_server"] = True
                self._save_state(recording_id, state)
            self.resume(recording_id, deadline=deadline)
        sent = 0
        for index in self.pending_indexes(recording_id):
            self._upload_chunk(recording_id, index, deadline)
            sent += 1
        state = self._state(recording_id)
        if state["final_index"] is not None and not self.pending_indexes(recording_id) \
                and not state["completed_on_server"]:
            self._call("POST", f"/v1/recordings/{recording_id}/complete", deadline=deadline)
            with self._lock:
                state = self._state(recording_id)
                state["completed_on_server"] = True
                self._save_state(recording_id, state)
        return sent

    def resume(self, recording_id: str, *, deadline: float | None = None) -> dict:
        """Ask the server what it holds and drop those chunks from the outbox."""
        status = self._call("GET", f"/v1/recordings/{recording_id}/status", deadline=deadline).json()
        for start, end in status["received"]:
            for index in self.pending_indexes(recording_id):
                if start <= index <= end:
                    self._drop(recording_id, index)
        return status

    def _upload_chunk(self, recording_id: str, index: int, deadline: float | None) -> dict:
        folder = self._folder(recording_id)
        try:
            ciphertext = (folder / f"{index:010d}.chunk").read_bytes()
            meta = json.loads((folder / f"{index:010d}.meta").read_text())
        except FileNotFoundError:
            return {}
        headers = {
            "Content-Type": "application/octet-stream",
            "Content-Digest": "sha-256=:" + base64.b64encode(hashlib.sha256(ciphertext).digest()).decode() + ":",
            "Witness-Captured-At": meta["captured_at"],
        }
        if meta["final"]:
            headers["Witness-Final"] = "?1"
        if meta.get("signature"):
            headers["Witness-Device-Signature"] = meta["signature"]
        try:
            receipt = self._call("PUT", f"/v1/recordings/{recording_id}/chunks/{index}", data=ciphertext,
                                 headers=headers, deadline=deadline).json()
        except UploadRefused as refused:
            # Never send it again: park it so the user (or support) can see why.
            rejected = folder / "rejected"
            rejected.mkdir(exist_ok=True)
            for suffix in (".chunk", ".meta"):
                os.replace(folder / f"{index:010d}{suffix}", rejected / f"{index:010d}{suffix}")
            (rejected / f"{index:010d}.reason").write_text(str(refused))
            raise
        if receipt.get("sha256") != hashlib.sha256(ciphertext).hexdigest():
            raise UploadRefused(200, "bad_receipt", f"the server's receipt for chunk {index} names other bytes")
        if "receipt" in receipt:
            self._keep_receipt(recording_id, index, receipt["receipt"], deadline)
        self._drop(recording_id, index)
        return receipt

    # -- receipts ---------------------------------------------------------
    def _log_key(self, deadline: float | None):
        log = self.server_keys(deadline).get("log")
        return Ed25519Verifier.from_vkey(log["vkey"]) if log else None

    def _keep_receipt(self, recording_id: str, index: int, signed: dict, deadline: float | None) -> None:
        """Check a chunk's signed receipt against the log key the server
        published and append it to the recording's receipts file (fsync'd
        before the chunk leaves the outbox), so the phone keeps proof of
        what the server acknowledged whatever later happens there."""
        verifier = self._log_key(deadline)
        if verifier is None:  # a server from before receipts: nothing to keep
            return
        try:
            fields = check_receipt(signed, verifier.public_key)
            good = (fields["recording_id"], fields["index"]) == (recording_id, index)
        except InvalidEvidence:
            good = False
        # The chunk was acknowledged either way (it is durable there), so it
        # leaves the outbox; a receipt that does not check out is kept apart,
        # as evidence of its own, never mixed with the good ones.
        with self._lock:
            path = self.receipts_file(recording_id)
            if not good:
                path = path.with_name(f"{recording_id}.not-verified.jsonl")
            path.parent.mkdir(mode=0o700, exist_ok=True)
            with open(path, "ab") as out:
                out.write(json.dumps(signed, sort_keys=True).encode() + b"\n")
                out.flush()
                os.fsync(out.fileno())

    def receipts_file(self, recording_id: str) -> Path:
        """Where the signed receipts of a recording are kept, one JSON
        object a line: a small file the witness may give their own lawyer."""
        return self.outbox / "receipts" / f"{recording_id}.jsonl"

    def receipts(self, recording_id: str) -> list[dict]:
        try:
            lines = self.receipts_file(recording_id).read_text().splitlines()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in lines if line.strip()]

    def check_receipts(self, recording_id: str, *, deadline: float | None = None) -> int:
        """Fetch the log's newest checkpoint (it must open with the log key)
        and its tiles, and check that every kept receipt's leaf is in the log
        where the receipt says. Returns how many were checked; raises
        `UploadRefused` (`receipt_not_in_log`) naming the first that is not,
        and `NotYetLogged` while the newest checkpoint does not reach one."""
        verifier = self._log_key(deadline)
        kept = self.receipts(recording_id)
        if verifier is None or not kept:
            return 0
        try:
            note = self._call("GET", "/log/checkpoint", auth=False, deadline=deadline).text
        except UploadRefused as refused:
            if refused.status == 404:  # the server signs its first checkpoint seconds after starting
                raise NotYetLogged("the log has no checkpoint yet; ask again in a few seconds") from None
            raise
        try:
            head = open_checkpoint(note, verifier.name, [verifier]).checkpoint
        except InvalidEvidence:
            raise UploadRefused(200, "bad_checkpoint", "the log's checkpoint does not open with its key") from None
        tiles: dict = {}

        def read_tile(tile):
            if tile not in tiles:
                tiles[tile] = self._call("GET", f"/log/{tile.path()}", auth=False, deadline=deadline).content
            return tiles[tile]

        reader = hash_reader_from_tiles(head.size, read_tile)
        for receipt in kept:
            leaf_index = receipt["leaf_index"]
            if leaf_index >= head.size:
                raise NotYetLogged(f"the log's newest checkpoint ({head.size} leaves) does not reach leaf "
                                   f"{leaf_index} yet; ask again in a few seconds")
            try:
                check_inclusion(leaf_hash(base64.b64decode(receipt["leaf"])), leaf_index, head.size,
                                head.root_hash, prove_inclusion(head.size, leaf_index, reader))
            except (InvalidEvidence, ValueError):
                raise UploadRefused(200, "receipt_not_in_log", f"the receipt for chunk {receipt['index']} is not "
                                                               f"in the log at leaf {leaf_index}") from None
        return len(kept)

    def _drop(self, recording_id: str, index: int) -> None:
        with self._lock:
            self.acked.setdefault(recording_id, set()).add(index)
            for suffix in (".chunk", ".meta"):
                try:
                    os.unlink(self._folder(recording_id) / f"{index:010d}{suffix}")
                except FileNotFoundError:
                    pass

    def wait_for_pieces(self, timeout: float) -> None:
        """Block until `add_piece` is called or `timeout` passes."""
        with self._wake:
            self._wake.wait(timeout)

    # -- HTTP -------------------------------------------------------------
    def _call(self, method: str, path: str, *, auth: bool = True, deadline: float | None = None,
              **kwargs) -> requests.Response:
        attempt = 0
        extra_headers = kwargs.pop("headers", None) or {}
        while True:
            headers = dict(extra_headers)
            if auth:
                headers["Authorization"] = f"Bearer {self.device()['access_token']}"
            try:
                response = self.http.request(method, self.server_url + path, headers=headers,
                                             timeout=self.timeout, **kwargs)
            except requests.RequestException:
                response = None
            if response is not None:
                if response.status_code < 400:
                    return response
                error = _error_of(response)
                if response.status_code == 401 and auth and error == "token_expired":
                    self._refresh(deadline)
                    continue
                if response.status_code not in RETRY_STATUSES:
                    raise UploadRefused(response.status_code, error, _message_of(response))
            pause = self.backoff.delay(attempt)
            attempt += 1
            if deadline is not None and time.monotonic() + pause > deadline:
                raise ServerUnreachable(f"{method} {path}: the server did not answer in time")
            time.sleep(pause)

    def _refresh(self, deadline: float | None) -> None:
        device = self.device()
        response = self._call("POST", "/v1/auth/refresh", auth=False, deadline=deadline,
                              headers={"Authorization": f"Bearer {device['refresh_token']}"})
        device["access_token"] = response.json()["access_token"]
        _write_atomically(self._device_file, json.dumps(device).encode())

    # -- outbox files -----------------------------------------------------
    def _folder(self, recording_id: str) -> Path:
        return self.outbox / "recordings" / recording_id

    def _state(self, recording_id: str) -> dict:
        return json.loads((self._folder(recording_id) / "recording.json").read_text())

    def _save_state(self, recording_id: str, state: dict) -> None:
        _write_atomically(self._folder(recording_id) / "recording.json", json.dumps(state).encode())


def _error_of(response: requests.Response) -> str:
    try:
        return response.json().get("error", "")
    except ValueError:
        return ""


def _message_of(response: requests.Response) -> str:
    try:
        return response.json().get("message", response.text[:200])
    except ValueError:
        return response.text[:200]
