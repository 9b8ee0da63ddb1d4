"""Flask extensions, created unbound and bound in `create_app`."""

from __future__ import annotations

import re

from flask import Flask
from flask_jwt_extended import JWTManager

# An element of the Authorization header (it may hold several, comma-separated)
# whose scheme is "bearer" in any case.
_BEARER_ANY_CASE = re.compile(r"(^|,)(\s*)bearer(?=\s)", re.IGNORECASE)


class _BearerSchemeInAnyCase:
    """WSGI middleware: spell the `Bearer` scheme of an Authorization header
    the one way flask-jwt-extended matches (it compares `JWT_HEADER_TYPE`
    exactly), since an auth-scheme is case-insensitive (RFC 9110 section
    11.1): `bearer <token>` and `BEARER <token>` are the same credentials."""

    def __init__(self, wsgi_app):
        self.wsgi_app = wsgi_app

    def __call__(self, environ, start_response):
        value = environ.get("HTTP_AUTHORIZATION")
        if value:
            environ["HTTP_AUTHORIZATION"] = _BEARER_ANY_CASE.sub(r"\1\2Bearer", value)
        return self.wsgi_app(environ, start_response)


class WitnessJWTManager(JWTManager):
    """flask-jwt-extended's manager, taking the `Bearer` scheme in any case."""

    def init_app(self, app: Flask, add_context_processor: bool = False) -> None:
        super().init_app(app, add_context_processor)
        app.wsgi_app = _BearerSchemeInAnyCase(app.wsgi_app)


jwt = WitnessJWTManager()
