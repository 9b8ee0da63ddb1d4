"""Who is asking, as far as abuse limits need to know: an opaque key for the
client's network address, held in memory only.

No client address is ever written to disk or a log (a subpoena asks for
exactly that). Limits still need to tell one address from another, so this
module turns the address into a keyed hash under a random key made when the
server starts (gunicorn's master imports this package, so all workers of one
pool share the key) and never stored: two requests from one address get the
same key, and nothing outside the server's memory can turn a key back into an
address.

Behind the front door (nginx, `deploy/nginx.conf`) gunicorn is reached over
a unix socket, so the peer has no address; nginx then passes the client's in
`X-Real-IP`, which it always sets itself (a client's own `X-Real-IP` is
overwritten). That header is trusted only on a unix-socket connection: where
gunicorn is reached over TCP (`gunicorn wsgi:app` with no front door), the
TCP peer is the client and a sent `X-Real-IP` is ignored.
"""

from __future__ import annotations

import hashlib
import hmac
import os

from flask import request

_KEY = os.urandom(32)  # per server start, never stored


def client_key() -> str:
    """An opaque key for the current request's client address
    (see the module docstring). Raises nothing; a request with no address at
    all (a test client) gets the key of the empty address."""
    peer = request.environ.get("REMOTE_ADDR") or ""
    address = peer
    if _is_unix_socket_peer(peer):
        address = request.headers.get("X-Real-IP", "")
    return hmac.new(_KEY, address.encode("utf-8", "replace"), hashlib.sha256).hexdigest()[:32]


def _is_unix_socket_peer(peer: str) -> bool:
    # gunicorn gives a unix-socket peer no IP address: an empty string, or
    # the socket's path, never something that parses as an address.
    return peer == "" or peer.startswith("/") or peer.startswith("unix:")
