"""A custodian's pages and everyone's account page, in a real browser
against a real server: a custodian makes an enrollment code (a phone joins
with it over the API), revokes that phone, adds a lawyer and disables them,
and finds all of it in the audit log; a staff member changes their password
and sets up a second factor, then logs in with it; a custodian the operator
requires to use one is kept on the account page until it is on.

Only what a person would do: fill labelled fields, press buttons, follow
links. Screenshots of every page at phone and laptop widths."""

from __future__ import annotations

import base64
import re
import time
from urllib.parse import urlsplit

import pytest
import requests
from playwright.sync_api import expect

from crypto.totp import current_code

from ..browser import LAPTOP, PHONE, screenshot
from ..support import Phone, ServerProcess, Staff

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    # Closed enrollment: a phone joins only with a code a custodian made.
    process = ServerProcess(tmp_path_factory.mktemp("custodians"), WITNESS_OPEN_ENROLLMENT="false").start()
    yield process
    process.stop()


def console_errors(page) -> list[str]:
    """The browser's console errors (a blocked inline script or style shows
    up there) for the rest of the page's life."""
    found: list[str] = []
    # A page answered 400, 401 or 403 on purpose (a refused form or login)
    # is logged as a failed load; anything else is a problem.
    expected = re.compile(r"Failed to load resource: the server responded with a status of 40[013] ")

    def note(message):
        if message.type == "error" and not expected.match(message.text):
            found.append(message.text)
    page.on("console", note)
    page.on("pageerror", lambda error: found.append(str(error)))
    return found


def on_path(path: str):
    return lambda url: urlsplit(url).path == path


def log_in(page, username: str, password: str, code: str | None = None) -> None:
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    if code is not None:
        page.get_by_label("Code from your authenticator app").fill(code)
    page.get_by_role("button", name="Log in").click()


def totp_key(page) -> bytes:
    """The key the account page shows, as a person types it into an app."""
    shown = page.locator("[data-totp-secret]").inner_text()
    secret = re.sub(r"\s", "", shown)
    return base64.b32decode(secret + "=" * (-len(secret) % 8))


def test_a_custodian_manages_codes_devices_people_and_reads_the_log(chromium, server):
    dana = Staff(server, "dana", "custodian")
    page = chromium.new_page(viewport=LAPTOP)
    problems = console_errors(page)
    page.goto(server.url + "/console/people")
    page.wait_for_url(on_path("/console/login"))
    log_in(page, dana.username, dana.password)
    page.wait_for_url(on_path("/console/people"))  # back where the login began

    # An enrollment code, shown with a link ready to share; a phone joins with it.
    page.get_by_role("link", name="Enrollment codes").click()
    page.get_by_label("Note").fill("march 3 street team")
    page.get_by_role("button", name="Make a code").click()
    expect(page.get_by_role("status")).to_have_text(re.compile("The enrollment code is made"))
    code = page.locator("[data-new-code]").inner_text()
    assert page.locator("[data-share-link]").inner_text() == f"{server.url}/record?code={code}"
    refused = requests.post(server.url + "/v1/devices", json={})
    assert refused.status_code == 403, refused.text  # closed enrollment: no code, no entry
    phone = Phone(server, enrollment_code=code)
    recording = phone.create_recording()
    assert recording.put(0, recording.chunk(0)).status_code == 201
    page.reload()
    row = page.locator("tbody tr", has=page.get_by_text(code, exact=True))
    expect(row.locator("[data-label=Phones]")).to_have_text("1")
    screenshot(page, "console-enrollment-codes")

    # The phone is revoked: it can upload nothing more; its recording stays.
    page.get_by_role("link", name="Devices").click()
    row = page.locator(f"[id='device-{phone.device_id}']")
    expect(row.get_by_role("link", name="1 recording")).to_have_attribute(
        "href", f"/console/recordings?device={phone.device_id}")
    row.get_by_text("Revoke…").click()
    expect(row.get_by_text("This cannot be undone")).to_be_visible()
    screenshot(page, "console-devices")
    row.get_by_role("button", name=re.compile("^Revoke device .* for good$")).click()
    expect(page.get_by_role("status")).to_have_text(re.compile("The device is revoked"))
    expect(page.locator(f"[id='device-{phone.device_id}']").get_by_text("revoked", exact=True)).to_be_visible()
    answer = recording.put(1, recording.chunk(1))
    assert (answer.status_code, answer.json()["error"]) == (401, "token_revoked")
    page.locator(f"[id='device-{phone.device_id}']").get_by_role("link", name="1 recording").click()
    expect(page.locator("tbody tr", has=page.locator(f"a[title='{recording.id}']"))).to_be_visible()

    # A lawyer joins, then is disabled; a custodian cannot disable themselves.
    page.get_by_role("link", name="People").click()
    page.get_by_label("Username").fill("lee")
    page.get_by_label("Role", exact=True).select_option(label="lawyer")
    page.get_by_label("Initial password").fill("a long initial password")
    page.get_by_role("button", name="Add this person").click()
    expect(page.get_by_role("status")).to_have_text(re.compile("The account is made"))
    lee = page.locator("tbody tr", has=page.get_by_text("lee", exact=True))
    expect(lee.locator("[data-label=Role]")).to_have_text("lawyer")
    lee_session = requests.post(server.url + "/v1/auth/login",
                                json={"username": "lee", "password": "a long initial password"})
    assert lee_session.status_code == 200, lee_session.text
    lee.get_by_text("Change lee").click()
    lee.get_by_role("button", name="Disable lee").click()
    expect(page.get_by_role("status")).to_have_text(re.compile("The account is disabled"))
    expect(lee.locator("[data-label=Status]")).to_contain_text("disabled")
    me = requests.get(server.url + "/v1/auth/me",
                      headers={"Authorization": f"Bearer {lee_session.json()['access_token']}"})
    assert me.status_code == 401  # the disabled account's session ended at once

    mine = page.locator("tbody tr", has=page.get_by_text("(you)"))
    mine.get_by_text("Change dana").click()
    mine.get_by_role("button", name="Disable dana").click()
    expect(page.get_by_role("alert")).to_have_text(
        "You cannot disable your own account or change your own role; ask another custodian.")
    page.goto(server.url + "/console/people")
    page.locator("tbody tr", has=page.get_by_text("lee", exact=True)).get_by_text("Change lee").click()
    screenshot(page, "console-people")

    # The audit log, filtered to what dana did, holds each of those steps.
    page.get_by_role("link", name="Audit log").click()
    page.get_by_label("Actor").fill("dana")
    page.get_by_role("button", name="Show").click()
    page.wait_for_url(lambda url: "actor=dana" in url)
    actions = page.locator("tbody [data-label=Action]").all_inner_texts()
    for action in ("enrollment_code.created", "device.revoked", "staff.created", "staff.disabled"):
        assert action in actions, actions
    assert set(page.locator("tbody [data-label=Actor]").all_inner_texts()) == {"staff:dana"}
    page.get_by_label("Action").fill("staff.disabled")
    page.get_by_role("button", name="Show").click()
    page.wait_for_url(lambda url: "action=staff.disabled" in url)
    expect(page.locator("tbody tr")).to_have_count(1)
    expect(page.locator("tbody tr dl.detail")).to_contain_text("lee")
    screenshot(page, "console-audit")

    # A filter that makes no sense is a clear message on the page.
    page.get_by_label("From").fill("last tuesday")
    page.get_by_role("button", name="Show").click()
    expect(page.get_by_role("alert")).to_contain_text("From must be a date (2026-11-21)")
    page.get_by_role("link", name="Clear").click()
    page.get_by_label("Recording").fill(recording.id)
    page.get_by_role("button", name="Show").click()
    page.wait_for_url(lambda url: f"recording={recording.id}" in url)
    assert set(page.locator("tbody [data-label=Action]").all_inner_texts()) >= {"recording.created", "chunk.received"}
    page.locator("tbody [data-label=Recording] a").first.click()
    page.wait_for_url(on_path(f"/console/recordings/{recording.id}"))
    assert problems == []

    # The same pages on a phone.
    phone_page = chromium.new_page(viewport=PHONE)
    problems = console_errors(phone_page)
    phone_page.goto(server.url + "/console/login")
    log_in(phone_page, dana.username, dana.password)
    phone_page.wait_for_url(on_path("/console/recordings"))
    for path, name in (("/console/people", "console-people"), ("/console/devices", "console-devices"),
                       ("/console/enrollment-codes", "console-enrollment-codes"),
                       ("/console/audit?actor=dana", "console-audit")):
        phone_page.goto(server.url + path)
        expect(phone_page.get_by_role("heading", level=1)).to_be_visible()
        screenshot(phone_page, name)
    assert problems == []


def test_a_staff_member_changes_their_password_and_sets_up_a_second_factor(chromium, server):
    olga = Staff(server, "olga", "observer")
    for viewport in (PHONE, LAPTOP):  # the page as it first looks, at both widths
        page = chromium.new_page(viewport=viewport)
        page.goto(server.url + "/console/account")
        log_in(page, olga.username, olga.password)
        page.wait_for_url(on_path("/console/account"))
        expect(page.locator("dl.facts").first).to_contain_text("legal observer")
        screenshot(page, "console-account")
    problems = console_errors(page)

    # A wrong current password changes nothing and says so.
    page.get_by_label("Current password").fill("not my password at all")
    page.get_by_label(re.compile(r"^New password \(")).fill("my brand new passphrase")
    page.get_by_label("New password again").fill("my brand new passphrase")
    page.get_by_role("button", name="Change password and log out").click()
    expect(page.get_by_role("alert")).to_contain_text("That is not your current password. Nothing changed.")

    page.get_by_label("Current password").fill(olga.password)
    page.get_by_label(re.compile(r"^New password \(")).fill("my brand new passphrase")
    page.get_by_label("New password again").fill("my brand new passphrase")
    page.get_by_role("button", name="Change password and log out").click()
    page.wait_for_url(on_path("/console/login"))
    expect(page.get_by_role("status")).to_contain_text("Your password is changed and every session")
    assert requests.get(server.url + "/v1/auth/me", headers=olga.auth).status_code == 401  # every session ended
    log_in(page, olga.username, "my brand new passphrase")
    page.wait_for_url(on_path("/console/recordings"))

    page.get_by_role("link", name="Account").click()
    page.get_by_role("button", name="Set up a second factor").click()
    expect(page.get_by_role("status")).to_contain_text("add the key to your authenticator app")
    key = totp_key(page)
    uri = page.locator("[data-totp-uri]").inner_text()
    assert uri.startswith("otpauth://totp/") and "olga" in uri
    screenshot(page, "console-account-totp")
    page.reload()
    assert totp_key(page) == key  # a reload keeps the key being set up
    page.get_by_label("The 6-digit code the app shows now").fill(
        "000000" if current_code(key, time.time()) != "000000" else "111111")
    page.get_by_role("button", name="Turn the second factor on").click()
    expect(page.get_by_role("alert")).to_contain_text("That code does not match")
    confirmed_at = time.time()
    page.get_by_label("The 6-digit code the app shows now").fill(current_code(key, confirmed_at))
    page.get_by_role("button", name="Turn the second factor on").click()
    expect(page.get_by_role("status")).to_contain_text("Your second factor is on")
    expect(page.locator("dl.facts").first.locator("dt:has-text('Second factor') + dd")).to_have_text("on")

    page.get_by_role("button", name="Log out", exact=True).click()
    page.wait_for_url(on_path("/console/login"))
    log_in(page, olga.username, "my brand new passphrase")  # no code: the page asks for it
    expect(page.get_by_role("alert")).to_contain_text("This account uses a second factor")
    # The confirming code is used up; the app's next one is taken (one step
    # of clock drift either way is allowed).
    log_in(page, olga.username, "my brand new passphrase", code=current_code(key, (int(confirmed_at) // 30 + 1) * 30))
    page.wait_for_url(on_path("/console/recordings"))
    assert problems == []


def test_a_custodian_required_to_use_a_second_factor_is_kept_on_the_account_page(chromium, tmp_path):
    server = ServerProcess(tmp_path / "server", WITNESS_REQUIRE_CUSTODIAN_TOTP="true").start()
    try:
        carla = Staff(server, "carla", "custodian")
        page = chromium.new_page(viewport=PHONE)
        problems = console_errors(page)
        page.goto(server.url + "/console/people")
        log_in(page, carla.username, carla.password)
        page.wait_for_url(on_path("/console/account"))
        expect(page.get_by_role("alert")).to_contain_text("This server requires custodians to use a second factor")
        with page.expect_response(lambda answer: urlsplit(answer.url).path == "/console/audit") as audit:
            page.get_by_role("link", name="Audit log").click()
        assert audit.value.status == 302 and audit.value.headers["location"].endswith("/console/account")
        page.wait_for_url(on_path("/console/account"))  # nothing else opens yet
        screenshot(page, "console-account-totp-required")

        page.get_by_role("button", name="Set up a second factor").click()
        key = totp_key(page)
        screenshot(page, "console-account-totp")
        page.get_by_label("The 6-digit code the app shows now").fill(current_code(key, time.time()))
        page.get_by_role("button", name="Turn the second factor on").click()
        expect(page.get_by_role("status")).to_contain_text("Your second factor is on")
        expect(page.get_by_text("This server requires it for custodians.")).to_be_visible()
        page.get_by_role("link", name="People").click()  # the same session goes on
        page.wait_for_url(on_path("/console/people"))
        expect(page.get_by_role("heading", name="People")).to_be_visible()
        assert problems == []
    finally:
        server.stop()


def test_ones_own_password_and_second_factor_need_proof_and_a_stolen_session_gets_neither(chromium, server):
    """On the people page a custodian's own row offers neither a new password
    nor a second-factor reset, and posting them anyway is refused (a stolen
    session alone must not take the account over); on the account page the
    second factor is removed, and replaced, only with a current code."""
    rhea = Staff(server, "rhea", "custodian")
    secret = requests.post(server.url + "/v1/auth/totp", headers=rhea.auth).json()["secret"]
    key = base64.b32decode(secret + "=" * (-len(secret) % 8))
    # Confirmed with the previous step's code (one step of drift is allowed),
    # so the current code logs in and the next one removes it.
    assert requests.post(server.url + "/v1/auth/totp/confirm", headers=rhea.auth,
                         json={"code": current_code(key, time.time() - 30)}).status_code == 200

    page = chromium.new_page(viewport=LAPTOP)
    problems = console_errors(page)
    page.goto(server.url + "/console/people")
    log_in(page, rhea.username, rhea.password, code=current_code(key, time.time()))
    page.wait_for_url(on_path("/console/people"))
    own = page.locator(f"[id='person-{rhea.id}']")
    own.get_by_text(f"Change {rhea.username}").click()
    expect(own.get_by_text("Your own password and second factor are on your")).to_be_visible()
    expect(own.get_by_role("button", name=re.compile("Set password"))).to_have_count(0)
    expect(own.get_by_role("button", name=re.compile("Reset second factor"))).to_have_count(0)
    csrf = own.locator("input[name=csrf_token]").first.get_attribute("value")
    for action, fields in (("password", {"password": "a thief's new passphrase"}), ("reset-second-factor", {})):
        answer = page.request.post(f"{server.url}/console/people/{rhea.id}/{action}",
                                   form={"csrf_token": csrf, **fields}, max_redirects=0)
        assert answer.status == 403 and "on your Account page" in answer.text(), action
    assert requests.get(f"{server.url}/v1/auth/me", headers=rhea.auth).json()["totp_enabled"] is True

    own.get_by_role("link", name="Account").click()  # where the hint says to go
    page.wait_for_url(on_path("/console/account"))
    removal = page.get_by_label(re.compile("^Remove it, or replace it"))
    removal.fill("000000" if current_code(key, time.time() + 30) != "000000" else "111111")
    page.get_by_role("button", name="Remove the second factor").click()
    expect(page.get_by_role("alert")).to_contain_text("That code does not match, or was used already")
    screenshot(page, "console-account-remove-second-factor")
    page.get_by_label(re.compile("^Remove it, or replace it")).fill(current_code(key, time.time() + 30))
    page.get_by_role("button", name="Remove the second factor").click()
    expect(page.get_by_role("status")).to_contain_text("Your second factor is off")
    expect(page.locator("dl.facts").first.locator("dt:has-text('Second factor') + dd")).to_have_text("off")
    page.get_by_role("button", name="Set up a second factor").click()  # replaced by a new one
    assert totp_key(page) != key
    assert problems == []
