"""Logging in to the staff console over plain HTTP, as a browser does: load
the login page (which sets the login form's cookie and hidden
`csrf_token`), then post the form with both."""

from __future__ import annotations

import re

import requests

LOGIN_PATH = "/console/login"


def login_form_token(session: requests.Session, base_url: str) -> str:
    """The hidden `csrf_token` of the login page, loaded in `session` (which
    keeps the cookie that goes with it)."""
    page = session.get(base_url + LOGIN_PATH)
    assert page.status_code == 200, page.text[:300]
    found = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert found, "the login page has no csrf_token field"
    return found.group(1)


def console_login(session: requests.Session, base_url: str, username: str, password: str, *,
                  allow_redirects: bool = False, **fields) -> requests.Response:
    """Post the login form in `session` after loading it; the answer (a 302
    with the console cookie when the login worked)."""
    token = login_form_token(session, base_url)
    return session.post(base_url + LOGIN_PATH, allow_redirects=allow_redirects,
                        data={"username": username, "password": password, "csrf_token": token, **fields})
