"""The transparency log, read-only, for anyone (docs/transparency.md): the
newest signed checkpoint, the log's verifier key, each kept checkpoint's
time-stamp tokens (`/log/stamps/<size>`), and the C2SP tlog-tiles
layout under `/log/` (`/log/checkpoint`, `/log/tile/<L>/<N>[.p/<W>]`,
`/log/tile/entries/<N>[.p/<W>]`), so existing transparency tooling can read
it and anyone can mirror it. Nothing here needs a token or reveals what a
leaf is about: leaves are salted commitments (sync/domain/transparency.py)."""

from __future__ import annotations

import base64

from flask import Blueprint, Response, jsonify

from crypto.tlog import Malformed
from crypto.tlog.tiles import parse_entries_path, parse_tile_path
from sync.domain import transparency
from sync.errors import NotFound

from .auth import archive

bp = Blueprint("log", __name__)

# Full tiles and entry bundles never change; partial ones are replaced by
# wider ones as the log grows, and the checkpoint every few seconds.
_IMMUTABLE = "public, max-age=31536000, immutable"
_FRESH = "public, max-age=2"


@bp.get("/log/checkpoint")
def checkpoint():
    """The newest signed checkpoint (a C2SP signed note)."""
    return Response(transparency.latest_checkpoint(archive()), mimetype="text/plain",
                    headers={"Cache-Control": "no-cache"})


@bp.get("/log/key")
def key():
    """The log's verifier key (C2SP signed-note vkey): give it to witnesses
    and verifiers, once, over a channel you trust."""
    return Response(transparency.log_signer(archive()).verifier.vkey + "\n", mimetype="text/plain")


@bp.get("/log/stamps/<int:size>")
def stamps(size: int):
    """The kept checkpoint of a tree size with its RFC 3161 tokens (base64):
    the built-in TSA's, and the external TSA's once it gave one (null
    before, or when none is configured, which says the time rests on the
    operator's own key alone). Each token is over the SHA-256 of `note`."""
    kept = transparency.checkpoint_stamps(archive(), size)
    external = kept["external"]
    return jsonify(size=kept["size"], note=kept["note"], created_at=kept["created_at"],
                   builtin_tsr=base64.b64encode(kept["builtin_tsr"]).decode("ascii"),
                   external=None if external is None else {
                       "tsa_url": external["tsa_url"], "kept_at": external["kept_at"],
                       "tsr": base64.b64encode(external["tsr"]).decode("ascii")})


@bp.get("/log/tile/<path:rest>")
def tile(rest: str):
    """A hash tile or an entry bundle of the published tree."""
    path = f"tile/{rest}"
    try:
        wanted = parse_entries_path(path) if rest.startswith("entries/") else parse_tile_path(path)
    except Malformed:
        raise NotFound("There is no such tile: paths are tile/<level>/<index>[.p/<width>] or "
                       "tile/entries/<index>[.p/<width>] (C2SP tlog-tiles).") from None
    data = transparency.entry_bundle(archive(), wanted) if rest.startswith("entries/") \
        else transparency.tile(archive(), wanted)
    return Response(data, mimetype="application/octet-stream",
                    headers={"Cache-Control": _IMMUTABLE if wanted.full else _FRESH})
