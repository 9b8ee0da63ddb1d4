"""What every HTML page shares: the console session cookie, the page role
check, CSRF on forms, the Content-Security-Policy, error pages and the
template filters. Views of the console blueprints stay thin on top of this.

A console session is one staff login, like the API's, kept in an HttpOnly,
SameSite=Strict cookie holding an access token of the same kind (session id,
session generation, role), so logging out, disabling the account or
changing its role stops the console at once too. The API reads only the
Authorization header, except the few GET routes a browser must fetch by
URL (footage for the player, manifest files, the bundle), which also take
the cookie. Forms carry the token's CSRF value (flask-jwt-extended checks
it on every POST). The login form comes before any session, so it has a
CSRF check of its own: a signed double-submit cookie (`login_csrf_field`).

Redirects never name a host: every `Location` is a path on this server,
whatever `Host` the request claimed (`_relative_location`)."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import uuid
from datetime import datetime, timedelta, timezone
from functools import wraps
from urllib.parse import urlsplit

import jwt as pyjwt
from flask import Response, after_this_request, g, redirect, request, url_for
from flask_jwt_extended import create_access_token, get_jwt, verify_jwt_in_request
from flask_jwt_extended.exceptions import CSRFError, JWTExtendedException
from markupsafe import Markup

from sync import errors as domain
from sync.domain import logins
from sync.timefmt import parse_time

from .auth import STAFF_ROLES, archive, enter_session
from .errors import PROTOCOL_ERRORS, error_page

COOKIE = "witness_console"
LOGIN_COOKIE = "witness_login"
_LOGIN_NONCE = re.compile(r"[A-Za-z0-9_-]{32}")
CONTENT_SECURITY_POLICY = ("default-src 'self'; img-src 'self' data:; media-src 'self' blob:; object-src 'none'; "
                           "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
ROLE_NAMES = {"observer": "legal observer", "lawyer": "lawyer", "custodian": "custodian"}


def configure(app) -> None:
    """Cookie names and CSRF-in-forms for flask-jwt-extended; page headers;
    template filters."""
    app.config["JWT_ACCESS_COOKIE_NAME"] = COOKIE
    app.config["JWT_CSRF_CHECK_FORM"] = True
    app.after_request(_page_headers)
    app.after_request(_relative_location)
    app.add_template_filter(when, "when")
    app.add_template_filter(ago, "ago")
    app.add_template_filter(size, "size")
    app.add_template_filter(clock, "clock")
    app.add_template_filter(short, "short")
    app.add_template_filter(duration, "duration")
    app.add_template_global(csrf_field)
    app.add_template_global(login_csrf_field)
    app.add_template_global(ROLE_NAMES, "role_names")


def _page_headers(response: Response) -> Response:
    if response.mimetype == "text/html":
        response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault("Cache-Control", "no-store")
    return response


def _relative_location(response: Response) -> Response:
    """Make a `Location` that names this server's host a plain path.
    Flask's own redirects are relative already, but werkzeug's routing
    redirects (`/console` to `/console/`, `/console//people` to
    `/console/people`) are built from the request's `Host`, which the client
    chooses: a forged one would send the browser, or a cache, elsewhere."""
    location = response.headers.get("Location")
    if location:
        parts = urlsplit(location)
        if parts.scheme or parts.netloc:
            if parts.netloc.lower() == request.host.lower():
                # "//x" would be another host to a browser: one slash only.
                path = "/" + parts.path.lstrip("/\\")
                response.headers["Location"] = path + (f"?{parts.query}" if parts.query else "")
    return response


# -- the session cookie ------------------------------------------------------

def start_console_session(response: Response, account: logins.Login) -> Response:
    """Set the session cookie for a staff account that just logged in (the
    login `logins.authenticate_staff` returned). It lives as long as an API
    refresh token would."""
    hours = archive().settings.staff_refresh_hours
    claims = {"role": account.role, "sid": str(uuid.uuid4()), "gen": account.session_generation}
    token = create_access_token(f"staff:{account.id}", additional_claims=claims,
                                expires_delta=timedelta(hours=hours))
    response.set_cookie(COOKIE, token, max_age=hours * 3600, path="/", httponly=True, samesite="Strict",
                        secure=request.is_secure)
    return response


def end_console_session(response: Response) -> Response:
    """End the current session (if any) for good, and drop the cookie."""
    if getattr(g, "account", None) is not None:
        claims = get_jwt()
        logins.end_session(archive(), claims["sid"], int(claims["exp"]), actor=g.viewer.actor,
                           organisation_id=g.organisation_id)
    return drop_console_cookie(response)


def drop_console_cookie(response: Response) -> Response:
    """Tell the browser to forget the session cookie."""
    response.delete_cookie(COOKIE, path="/", samesite="Strict", secure=request.is_secure, httponly=True)
    return response


def staff_page(*roles: str, totp_setup: bool = False):
    """Page decorator: a console session of one of `roles` (any staff role
    when none is given). Without a session the browser goes to the login
    page and comes back; with the wrong role it gets a 403 page saying whose
    page it is. A custodian who must set up a second factor first reaches
    only pages marked `totp_setup`."""
    allowed = roles or STAFF_ROLES

    def decorate(view):
        @wraps(view)
        def wrapper(*args, **kwargs):
            try:
                verify_jwt_in_request(locations=["cookies"])
            except CSRFError:
                return error_page(400, "This form has expired or did not come from this console. Go back, "
                                       "reload the page and try again.")
            except (JWTExtendedException, pyjwt.PyJWTError):
                return _to_login()
            claims = get_jwt()
            account = g.pop("_witness_account", None)
            if claims.get("role") not in STAFF_ROLES or account is None:
                return _to_login()
            enter_session(claims["role"], claims["sub"], account)
            if not totp_setup and logins.second_factor_setup_required(archive(), account):
                return redirect("/console/account")
            if g.role not in allowed:
                names = " or ".join(ROLE_NAMES[role] + "s" for role in allowed)
                return error_page(403, f"This page is for {names}. You are logged in as a {ROLE_NAMES[g.role]}.")
            return view(*args, **kwargs)

        return wrapper

    return decorate


def _to_login():
    target = request.full_path if request.method == "GET" else _referring_page()
    response = redirect(url_for("console.login", next=safe_next(target)))
    return drop_console_cookie(response)


def _referring_page() -> str:
    """The path of the page a form was sent from, when it is a page of this
    server. Browsers send the Referer as a full URL, which `safe_next`
    rightly refuses, so only its path and query are kept."""
    referrer = urlsplit(request.referrer or "")
    if referrer.scheme not in ("http", "https") or referrer.netloc != request.host:
        return ""
    return referrer.path + (f"?{referrer.query}" if referrer.query else "")


def safe_next(target: str | None) -> str | None:
    """A local console path to return to after logging in, or None: never
    another site (an open redirect would help phishing)."""
    if not target:
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path.startswith("/console/") or "\\" in target:
        return None
    return parts.path + (f"?{parts.query}" if parts.query else "")


def csrf_field() -> Markup:
    """The hidden form field every console POST form carries."""
    value = get_jwt().get("csrf", "") if getattr(g, "account", None) is not None else ""
    return Markup('<input type="hidden" name="csrf_token" value="{}">').format(value)


# -- the login form's CSRF check ---------------------------------------------
#
# Logging in comes before any session, so the form cannot carry a session's
# CSRF value; without a check of its own, another site could post a login
# form with the attacker's account and the victim would work, unknowing, in
# the attacker's console (login CSRF). The browser holds a random nonce in a
# cookie only this path receives (HttpOnly, SameSite=Strict: another site's
# form never brings it) and the form carries its HMAC under the server's
# token secret, the same in every worker (a signed double-submit cookie).

def _login_nonce() -> str:
    """This browser's login nonce; a new one (set on the response) when it
    has none or a malformed one."""
    nonce = getattr(g, "_login_nonce", None)
    if nonce is not None:
        return nonce
    nonce = request.cookies.get(LOGIN_COOKIE, "")
    if not _LOGIN_NONCE.fullmatch(nonce):
        nonce = secrets.token_urlsafe(24)

        @after_this_request
        def _set(response: Response) -> Response:
            response.set_cookie(LOGIN_COOKIE, nonce, path="/console/login", httponly=True, samesite="Strict",
                                secure=request.is_secure)
            return response
    g._login_nonce = nonce
    return nonce


def _login_token(nonce: str) -> str:
    return hmac.new(archive().keys.token_secret, b"console login form\0" + nonce.encode("ascii"),
                    hashlib.sha256).hexdigest()


def login_csrf_field() -> Markup:
    """The hidden field of the login form (and its cookie, when new)."""
    return Markup('<input type="hidden" name="csrf_token" value="{}">').format(_login_token(_login_nonce()))


def login_form_is_genuine() -> bool:
    """True when the posted login form came from this console's login page
    in this browser: its cookie came back and the form's value matches it."""
    nonce = request.cookies.get(LOGIN_COOKIE, "")
    sent = request.form.get("csrf_token", "")
    return bool(_LOGIN_NONCE.fullmatch(nonce)) and hmac.compare_digest(_login_token(nonce).encode("ascii"),
                                                                       sent.encode("utf-8", "replace"))


# -- errors ------------------------------------------------------------------

def register_page_errors(blueprint) -> None:
    """Domain errors inside a page become pages, not JSON."""
    @blueprint.errorhandler(domain.WitnessError)
    def _domain_error(exc: domain.WitnessError):
        status, _code = PROTOCOL_ERRORS[type(exc)]
        return error_page(status, exc.message)


# -- template filters --------------------------------------------------------

def _parsed(value) -> datetime | None:
    if not value:
        return None
    try:
        return parse_time(value)
    except ValueError:
        return None


def when(value) -> str:
    """`2026-11-21 14:03:07 UTC`, or an em dash."""
    moment = _parsed(value)
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC") if moment else "—"


def clock(value) -> str:
    """`14:03:07` (UTC)."""
    moment = _parsed(value)
    return moment.astimezone(timezone.utc).strftime("%H:%M:%S") if moment else "—"


def ago(value) -> str:
    """`12 s ago`, `5 min ago`, `3 h ago`, `2 days ago`."""
    moment = _parsed(value)
    if moment is None:
        return "never"
    seconds = max(0, int((archive().clock() - moment).total_seconds()))
    if seconds < 90:
        return f"{seconds} s ago"
    if seconds < 90 * 60:
        return f"{seconds // 60} min ago"
    if seconds < 36 * 3600:
        return f"{seconds // 3600} h ago"
    return f"{seconds // 86400} days ago"


def size(value) -> str:
    """Bytes in the unit a person reads: `812 B`, `1.4 MB`, `2.1 GB`."""
    value = float(value or 0)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"


def short(value, length: int = 8) -> str:
    """The first characters of an id or hash (the full value is in a title)."""
    return (value or "")[:length]


def wait_in_words(seconds: int) -> str:
    """`1 second`, `40 seconds`, `3 minutes`, `15 minutes`."""
    if seconds < 90:
        return f"{seconds} second{'s' if seconds != 1 else ''}"
    return f"{(seconds + 59) // 60} minutes"


def duration(seconds: float | None) -> str:
    """`0:42`, `1:02:05`, or an em dash."""
    if seconds is None:
        return "—"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"
