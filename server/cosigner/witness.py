"""The witness: c2sp.org/tlog-witness `add-checkpoint`, over the held
checkpoints of `state.py`, with the formats and proofs of `crypto.tlog`.

A cosignature from here says: at this time, this is the largest checkpoint
of this log that this witness has seen, and every checkpoint it cosigned
before is a prefix of it. A log that shows one history to some people and
another to others cannot get both cosigned.
"""

from __future__ import annotations

import base64
import logging
from typing import Callable, Mapping

from crypto import InvalidEvidence
from crypto.tlog import Malformed
from crypto.tlog.checkpoint import open_checkpoint
from crypto.tlog.cosignature import Cosigner
from crypto.tlog.merkle import EMPTY_ROOT, check_consistency
from crypto.tlog.note import sign_note
from crypto.tlog.witness import cosignatures_body, parse_add_checkpoint

from .errors import BadLogSignature, Inconsistent, MalformedRequest, OldSizeMismatch, UnknownLog
from .settings import LogConfig
from .state import CheckpointStore, origin_hash

log = logging.getLogger("witness.cosigner")

Clock = Callable[[], int]  # POSIX seconds


class Witness:
    """Cosigns checkpoints of the configured logs that are consistent with
    what it holds for them."""

    def __init__(self, cosigner: Cosigner, logs: Mapping[str, LogConfig], store: CheckpointStore,
                 clock: Clock) -> None:
        self.cosigner = cosigner
        self.logs = dict(logs)
        self.store = store
        self.clock = clock
        self._by_hash = {origin_hash(origin): origin for origin in self.logs}

    def add_checkpoint(self, body: bytes) -> bytes:
        """The cosignature lines for the checkpoint in an add-checkpoint
        `body`, after it is held durably. Raises `MalformedRequest`,
        `UnknownLog`, `BadLogSignature`, `OldSizeMismatch` or `Inconsistent`
        (the spec's 400, 404, 403, 409 and 422), and `state.StateDamaged`
        if the held checkpoint cannot be read."""
        # 1. The body parses: old size, proof hashes, an empty line, a note.
        try:
            request = parse_add_checkpoint(body)
        except Malformed:
            raise MalformedRequest("not an add-checkpoint body: 'old <size>', proof lines, "
                                   "an empty line, then the signed checkpoint") from None
        # 2. The log is one of ours, by the checkpoint's origin line.
        origin = request.checkpoint.partition("\n")[0]
        config = self.logs.get(origin)
        if config is None:
            raise UnknownLog("this witness cosigns no log with this origin")
        # 3. The log's keys signed it (unknown signatures ignored; a known
        #    key's failing signature refuses the whole note).
        try:
            signed = open_checkpoint(request.checkpoint, origin, config.verifiers)
        except Malformed:
            raise MalformedRequest("the checkpoint is not a well-formed signed checkpoint") from None
        except InvalidEvidence:
            raise BadLogSignature("the checkpoint carries no valid signature of this log's keys") from None
        checkpoint = signed.checkpoint
        # 4. The proof cannot start beyond the checkpoint.
        if request.old_size > checkpoint.size:
            raise MalformedRequest(f"old size {request.old_size} is larger than the checkpoint's size "
                                   f"{checkpoint.size}")
        with self.store.exclusive(origin) as state:
            # 5. The proof starts at what is held, read under the lock: two
            #    requests from the same old size cannot both pass.
            held_size = state.held.size if state.held else 0
            if request.old_size != held_size:
                raise OldSizeMismatch(held_size)
            # 6. The tree grew consistently from what is held.
            if checkpoint.size == 0 and checkpoint.root_hash != EMPTY_ROOT:
                raise Inconsistent("a checkpoint of size 0 must have the empty tree's root hash")
            if request.old_size == 0:
                if request.proof:
                    raise Inconsistent("a proof from size 0 must be empty")
            else:
                try:
                    check_consistency(state.held.size, state.held.root_hash, checkpoint.size,
                                      checkpoint.root_hash, request.proof)
                except InvalidEvidence:
                    self._refused_inconsistent(origin, state.held, checkpoint, request.checkpoint)
            # 7. Held durably first, then answered.
            cosignature = self.cosigner.cosign(signed.note.text, self.clock())
            state.replace(sign_note(signed.note.text, signatures=[*signed.note.verified, cosignature]))
        log.info("cosigned %s at size %d (held %d before)", origin, checkpoint.size, held_size)
        return cosignatures_body([cosignature])

    def latest_checkpoint(self, hashed_origin: str) -> str:
        """The held checkpoint of the log whose origin hashes to
        `hashed_origin` (lowercase hex SHA-256), with the log's signatures and
        this witness's cosignature. Raises `UnknownLog` if there is none."""
        origin = self._by_hash.get(hashed_origin)
        held = self.store.held(origin) if origin is not None else None
        if held is None:
            raise UnknownLog("this witness has cosigned no checkpoint of a log with this origin hash")
        return held.note

    def _refused_inconsistent(self, origin, held, checkpoint, note: str) -> None:
        # The log signed this checkpoint, so it may be evidence that the log
        # shows different histories to different people: keep it and say so.
        evidence = self.store.keep_evidence(origin, note)
        if checkpoint.size == held.size:
            log.critical("EQUIVOCATION: log %s signed two different checkpoints of size %d: held root %s, "
                         "offered root %s; refused, the offered note is kept in %s", origin, held.size,
                         _b64(held.root_hash), _b64(checkpoint.root_hash), evidence)
            raise Inconsistent(f"a different root hash for size {held.size} was already cosigned: "
                               "refused as a split view")
        log.warning("refused %s at size %d: the consistency proof from the held size %d does not verify "
                    "(a bad proof, or a forked log); the offered note is kept in %s", origin, checkpoint.size,
                    held.size, evidence)
        raise Inconsistent(f"the consistency proof from size {held.size} to size {checkpoint.size} "
                           "does not verify")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
