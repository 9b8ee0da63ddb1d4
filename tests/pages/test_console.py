"""The staff console's own behaviour in a real browser against a real server:
the recordings list follows recordings as they arrive without a reload;
logging in with the keyboard alone, with a second factor, and with wrong
credentials; sessions that end (logout, a disabled account); and no page
breaks its own Content-Security-Policy."""

from __future__ import annotations

import base64
import re
import time
from urllib.parse import urlsplit

import pytest
import requests

from crypto.totp import current_code

from ..browser import LAPTOP, PHONE, screenshot
from ..console_login import console_login, login_form_token
from ..support import MANY_LOGINS, Phone, ServerProcess, Staff

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    process = ServerProcess(tmp_path_factory.mktemp("console"), idle_seconds=3, **MANY_LOGINS).start()
    yield process
    process.stop()


def csp_violations(page) -> list[str]:
    """Collects the browser's console errors (a blocked inline script or
    style shows up there) for the rest of the page's life."""
    found: list[str] = []
    page.on("console", lambda message: found.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: found.append(str(error)))
    return found


def keyboard_login(page, who: Staff, code: str | None = None) -> None:
    """Log in without the mouse: the username field has the focus, Tab moves
    on, Enter sends the form."""
    page.keyboard.type(who.username)
    page.keyboard.press("Tab")
    page.keyboard.type(who.password)
    if code is not None:
        page.keyboard.press("Tab")
        page.keyboard.type(code)
    page.keyboard.press("Enter")


def test_the_recordings_list_follows_a_recording_as_it_arrives(chromium, server):
    observer = Staff(server, "olive", "observer")
    page = chromium.new_page(viewport=PHONE)
    problems = csp_violations(page)
    page.goto(server.url + "/console/recordings")
    keyboard_login(page, observer)
    page.wait_for_url(lambda url: urlsplit(url).path == "/console/recordings")
    page.evaluate("window.sameDocument = true")  # gone if the page were reloaded

    recording = Phone(server).create_recording()
    for index in (0, 1):
        assert recording.put(index, recording.chunk(index)).status_code == 201
    row = page.locator("tbody tr", has=page.locator(f"a[title='{recording.id}']"))
    row.wait_for(timeout=15_000)
    assert row.get_by_text("arriving").is_visible()
    assert row.locator("[data-label=Chunks]").inner_text() == "2"
    screenshot(page, "console-recordings-live")

    assert recording.put(3, recording.chunk(3)).status_code == 201  # chunk 2 never comes
    row.get_by_text("1 missing").wait_for(timeout=15_000)
    row.get_by_text("interrupted").wait_for(timeout=30_000)  # idle finalization, seen without a reload
    assert page.evaluate("window.sameDocument") is True
    assert re.match(r"Live: updated \d\d:\d\d:\d\d UTC\.", page.locator("[data-live-status]").inner_text())

    # The recording page shows where the gap is.
    row.get_by_role("link").click()
    assert page.get_by_text("Chunk 2: missing").is_visible()
    assert page.locator(".timeline rect.missing").count() == 1
    screenshot(page, "console-recording-gap")
    assert problems == []


def test_logging_in_with_a_second_factor(chromium, server):
    lawyer = Staff(server, "lars", "lawyer")
    secret = requests.post(server.url + "/v1/auth/totp", headers=lawyer.auth).json()["secret"]
    key = base64.b32decode(secret + "=" * (-len(secret) % 8))
    confirmed = requests.post(server.url + "/v1/auth/totp/confirm", headers=lawyer.auth,
                              json={"code": current_code(key, time.time())})
    assert confirmed.status_code == 200, confirmed.text

    page = chromium.new_page(viewport=LAPTOP)
    page.goto(server.url + "/console/copies")
    keyboard_login(page, lawyer)  # no code: the page asks for it
    assert page.get_by_role("alert").inner_text().startswith("This account uses a second factor")
    assert page.get_by_label("Username").input_value() == "lars"
    screenshot(page, "console-login-second-factor")

    page.get_by_label("Password").fill(lawyer.password)
    page.get_by_label("Code from your authenticator app").fill("000000" if current_code(key, time.time()) != "000000"
                                                               else "111111")
    page.get_by_role("button", name="Log in").click()
    assert page.get_by_role("alert").inner_text() == "Wrong username, password or code."

    page.get_by_label("Password").fill(lawyer.password)
    # The code confirming the factor was used up; the next step's is taken
    # (one step either side is allowed for clocks that drift).
    page.get_by_label("Code from your authenticator app").fill(current_code(key, time.time() + 30))
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(lambda url: urlsplit(url).path == "/console/copies")  # back where the login began
    assert page.get_by_role("heading", name="Copy requests").is_visible()


def test_a_wrong_password_is_a_clear_message_and_no_session(chromium, server):
    page = chromium.new_page(viewport=PHONE)
    page.goto(server.url + "/console/login")
    page.get_by_label("Username").fill("nobody")
    page.get_by_label("Password").fill("not the password")
    with page.expect_response(lambda response: response.url.endswith("/console/login")) as answer:
        page.get_by_role("button", name="Log in").click()
    assert answer.value.status == 401
    assert page.get_by_role("alert").inner_text() == "Wrong username, password or code."
    assert not [cookie for cookie in page.context.cookies() if cookie["name"] == "witness_console"]
    screenshot(page, "console-login-refused")


def test_a_session_ends_at_logout_and_when_the_account_is_disabled(server):
    custodian = Staff(server, "carmen", "custodian")
    observer = Staff(server, "otto", "observer")

    def console_session(who: Staff) -> requests.Session:
        session = requests.Session()
        answer = console_login(session, server.url, who.username, who.password)
        assert answer.status_code == 302 and answer.headers["Location"].endswith("/console/recordings")
        cookie = answer.headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
        return session

    def lands_on_login(session: requests.Session) -> bool:
        answer = session.get(server.url + "/console/recordings", allow_redirects=False)
        return answer.status_code == 302 and "/console/login" in answer.headers["Location"]

    # Logout ends the session on the server: the old cookie, replayed, is refused.
    session = console_session(observer)
    cookie = session.cookies.get("witness_console")
    page = session.get(server.url + "/console/recordings").text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    assert session.post(server.url + "/console/logout", data={"csrf_token": csrf}, allow_redirects=False).status_code == 302
    replay = requests.Session()
    replay.cookies.set("witness_console", cookie)
    assert lands_on_login(replay)

    # A custodian disabling the account stops its console at once.
    session = console_session(observer)
    assert not lands_on_login(session)
    disabled = requests.patch(f"{server.url}/v1/staff/{observer.id}", headers=custodian.auth, json={"disabled": True})
    assert disabled.status_code == 200, disabled.text
    assert lands_on_login(session)


def test_the_login_form_cannot_be_posted_from_another_site(server):
    """Login CSRF: another site's form would log the browser in to an
    account of the attacker's choosing. The login page sets a cookie only
    that page gets back (SameSite=Strict: never on another site's post) and
    its form carries a value signed to go with it."""
    who = Staff(server, "cyril", "observer")
    credentials = {"username": who.username, "password": who.password}
    mine, theirs = requests.Session(), requests.Session()
    page = mine.get(server.url + "/console/login")
    cookie = page.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/console/login" in cookie
    token = login_form_token(mine, server.url)
    theirs_token = login_form_token(theirs, server.url)

    def refused(answer: requests.Response) -> bool:
        return (answer.status_code == 400 and "did not come from this console" in answer.text
                and not answer.cookies.get("witness_console"))

    # As another site's form would arrive: no cookie (SameSite), with or without a token.
    assert refused(requests.post(server.url + "/console/login", data=credentials, allow_redirects=False))
    assert refused(requests.post(server.url + "/console/login", data={**credentials, "csrf_token": token},
                                 allow_redirects=False))
    # This browser's cookie with another browser's value, or a made-up one.
    for value in (theirs_token, "0" * 64, ""):
        assert refused(mine.post(server.url + "/console/login", data={**credentials, "csrf_token": value},
                                 allow_redirects=False)), value
    # A refused form offers a fresh one: logging in from it works.
    again = mine.post(server.url + "/console/login", data=credentials, allow_redirects=False)
    assert refused(again) and 'name="csrf_token"' in again.text
    answer = mine.post(server.url + "/console/login", data={**credentials, "csrf_token": token}, allow_redirects=False)
    assert answer.status_code == 302 and answer.cookies.get("witness_console")


def test_repeated_wrong_passwords_are_slowed_down_with_a_clear_page(server):
    who = Staff(server, "cosima", "observer")
    browser = requests.Session()
    answers = []
    while len(answers) < 40 and (not answers or answers[-1].status_code != 429):
        answers.append(console_login(browser, server.url, who.username, "not the password at all"))
    assert answers[0].status_code == 401 and "Wrong username, password or code." in answers[0].text
    held = answers[-1]
    assert held.status_code == 429 and int(held.headers["Retry-After"]) >= 1, [a.status_code for a in answers]
    assert re.search(r"Too many failed attempts for this username from here\. Wait \d+ seconds?, then try again\.",
                     held.text)
    assert not held.cookies.get("witness_console")
    # Only that username from that browser waits: the account itself is not locked.
    assert requests.post(server.url + "/v1/auth/login", json={"username": "olive-unrelated", "password": "x" * 14}
                         ).status_code == 401


def test_pages_send_a_strict_content_security_policy(server):
    for path in ("/", "/console/login", "/record"):
        answer = requests.get(server.url + path)
        assert answer.status_code == 200
        policy = answer.headers["Content-Security-Policy"]
        assert "default-src 'self'" in policy and "'unsafe-inline'" not in policy, (path, policy)
        assert answer.headers["X-Content-Type-Options"] == "nosniff"


def test_the_console_cookie_opens_only_what_a_browser_loads_by_url(server):
    """The player and download links send the console cookie; the rest of
    the API reads only the Authorization header, so the cookie cannot be
    used to list, decide or change anything through it."""
    lawyer = Staff(server, "lucia", "lawyer")
    recording = Phone(server).create_recording()
    assert recording.put(0, recording.chunk(0, b"footage bytes", final=True), final=True).status_code == 201
    session = requests.Session()
    console_login(session, server.url, lawyer.username, lawyer.password)
    assert session.cookies.get("witness_console")

    media = session.get(f"{server.url}/v1/recordings/{recording.id}/media", headers={"Range": "bytes=0-3"})
    assert (media.status_code, media.content) == (206, b"foot")
    for method, path, body in [("GET", "/v1/recordings", None), ("GET", f"/v1/recordings/{recording.id}", None),
                               ("GET", "/v1/copy-requests", None),
                               ("POST", f"/v1/recordings/{recording.id}/copy-requests",
                                {"case_reference": "x", "purpose": "y"})]:
        answer = session.request(method, server.url + path, json=body)
        assert (answer.status_code, answer.json()["error"]) == (401, "unauthorized"), (method, path)
    assert requests.get(f"{server.url}/v1/recordings/{recording.id}/media").status_code == 401


def test_a_wrong_console_address_is_a_page_not_json(server):
    missing = requests.get(server.url + "/console/no-such-page")
    assert missing.status_code == 404 and missing.headers["Content-Type"].startswith("text/html")
    assert "There is no such page here." in missing.text
    wrong_method = requests.get(server.url + "/console/logout")
    assert wrong_method.status_code == 405 and "use its links and buttons" in wrong_method.text
    api = requests.get(server.url + "/v1/no-such-route")
    assert (api.status_code, api.json()["error"]) == (404, "not_found")  # the API stays JSON


def test_a_bad_filter_on_the_recordings_list_is_a_clear_page(server):
    observer = Staff(server, "oona", "observer")
    session = requests.Session()
    console_login(session, server.url, observer.username, observer.password)
    for query, words in [("gaps=maybe", "gaps must be yes, no, or left out."),
                         ("state=lost", "state must be one or more of"),
                         ("cursor=not-a-cursor", "cursor")]:
        answer = session.get(f"{server.url}/console/recordings?{query}")
        assert answer.status_code == 400 and answer.headers["Content-Type"].startswith("text/html"), query
        assert words in answer.text, query
