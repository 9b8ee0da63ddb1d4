"""An organisation's people over HTTP: custodians managing accounts, second
factors, throttled logins, sessions that end, devices that are revoked, and
organisations kept apart."""

from __future__ import annotations

import base64
import json
import time

import pytest
import requests

from crypto.totp import current_code
from tests.support import Phone, ServerProcess, Staff


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def me(server, token: str) -> requests.Response:
    return requests.get(server.url + "/v1/auth/me", headers=bearer(token))


def login(server, username: str, password: str, **extra) -> requests.Response:
    return requests.post(server.url + "/v1/auth/login", json={"username": username, "password": password, **extra})


def error(answer: requests.Response) -> tuple[int, str]:
    return answer.status_code, answer.json()["error"]


def totp_secret(answer: requests.Response) -> bytes:
    text = answer.json()["secret"]
    return base64.b32decode(text + "=" * (-len(text) % 8))


@pytest.fixture(scope="module")
def custodian(server) -> Staff:
    return Staff(server, "acc-custodian", "custodian")


def test_a_custodian_creates_changes_disables_and_enables_an_account(server, custodian):
    made = requests.post(server.url + "/v1/staff", headers=custodian.auth,
                         json={"username": "acc-maria", "role": "observer", "password": "twelve chars ok"})
    assert made.status_code == 201, made.text
    assert made.json() == {**made.json(), "username": "acc-maria", "role": "observer", "disabled": False,
                           "totp_enabled": False}
    assert "password_hash" not in made.text and "twelve" not in made.text
    maria_id = made.json()["id"]
    token = login(server, "acc-maria", "twelve chars ok").json()["access_token"]
    assert me(server, token).json()["role"] == "observer"

    promoted = requests.patch(f"{server.url}/v1/staff/{maria_id}", headers=custodian.auth, json={"role": "lawyer"})
    assert promoted.status_code == 200 and promoted.json()["role"] == "lawyer"
    assert error(me(server, token)) == (401, "token_revoked")  # a token of the old role stops at once
    token = login(server, "acc-maria", "twelve chars ok").json()["access_token"]
    assert me(server, token).json()["role"] == "lawyer"

    disabled = requests.patch(f"{server.url}/v1/staff/{maria_id}", headers=custodian.auth, json={"disabled": True})
    assert disabled.status_code == 200 and disabled.json()["disabled"] is True
    assert error(me(server, token)) == (401, "token_revoked")
    assert error(login(server, "acc-maria", "twelve chars ok")) == (401, "bad_credentials")

    enabled = requests.patch(f"{server.url}/v1/staff/{maria_id}", headers=custodian.auth, json={"disabled": False})
    assert enabled.json()["disabled"] is False
    assert error(me(server, token)) == (401, "token_revoked")  # tokens from before the disable stay dead
    assert login(server, "acc-maria", "twelve chars ok").status_code == 200

    listed = requests.get(server.url + "/v1/staff", headers=custodian.auth).json()["staff"]
    assert {"acc-maria", "acc-custodian"} <= {account["username"] for account in listed}


@pytest.mark.parametrize("body,status,code", [
    ({"username": "Bad Name", "role": "observer", "password": "twelve chars ok"}, 400, "invalid_username"),
    ({"username": "acc-x", "role": "admin", "password": "twelve chars ok"}, 400, "invalid_role"),
    ({"username": "acc-x", "role": "observer", "password": "short"}, 400, "weak_password"),
    ({"username": "acc-custodian", "role": "observer", "password": "twelve chars ok"}, 400, "username_taken"),
])
def test_bad_new_accounts_are_refused_clearly(server, custodian, body, status, code):
    answer = requests.post(server.url + "/v1/staff", headers=custodian.auth, json=body)
    assert error(answer) == (status, code)


def test_a_custodian_cannot_lock_themselves_out(server, custodian):
    for change in ({"disabled": True}, {"role": "observer"}):
        answer = requests.patch(f"{server.url}/v1/staff/{custodian.id}", headers=custodian.auth, json=change)
        assert error(answer) == (403, "forbidden")
    assert me(server, custodian.token).json()["role"] == "custodian"
    for change, code in (({"colour": "red"}, "invalid_field"), ({"disabled": "yes"}, "invalid_disabled"),
                         ({}, "invalid_body")):
        answer = requests.patch(f"{server.url}/v1/staff/{custodian.id}", headers=custodian.auth, json=change)
        assert error(answer) == (400, code)


def test_logout_ends_both_tokens_of_that_session_only(server):
    staff = Staff(server, "acc-logout", "observer")
    other_session = staff.login()
    ending = staff.login()
    assert requests.post(server.url + "/v1/auth/logout", headers=bearer(ending["access_token"])).status_code == 204
    assert error(me(server, ending["access_token"])) == (401, "token_revoked")
    refused = requests.post(server.url + "/v1/auth/refresh", headers=bearer(ending["refresh_token"]))
    assert error(refused) == (401, "token_revoked")
    assert me(server, other_session["access_token"]).status_code == 200
    # Logging out with the refresh token works as well.
    third = staff.login()
    assert requests.post(server.url + "/v1/auth/logout", headers=bearer(third["refresh_token"])).status_code == 204
    assert error(me(server, third["access_token"])) == (401, "token_revoked")


def test_a_new_password_ends_every_session(server):
    staff = Staff(server, "acc-password", "observer")
    wrong = requests.post(server.url + "/v1/auth/password", headers=staff.auth,
                          json={"current_password": "not it at all", "new_password": "another long password"})
    assert error(wrong) == (400, "wrong_current_password")
    weak = requests.post(server.url + "/v1/auth/password", headers=staff.auth,
                         json={"current_password": staff.password, "new_password": "short"})
    assert error(weak) == (400, "weak_password")
    changed = requests.post(server.url + "/v1/auth/password", headers=staff.auth,
                            json={"current_password": staff.password, "new_password": "another long password"})
    assert changed.status_code == 204
    assert error(me(server, staff.token)) == (401, "token_revoked")
    assert error(login(server, staff.username, staff.password)) == (401, "bad_credentials")
    assert login(server, staff.username, "another long password").status_code == 200


def test_a_second_factor_is_set_up_confirmed_required_and_not_replayable(server, custodian):
    staff = Staff(server, "acc-totp", "lawyer")
    started = requests.post(server.url + "/v1/auth/totp", headers=staff.auth)
    assert started.status_code == 200
    secret = totp_secret(started)
    uri = started.json()["otpauth_uri"]
    assert uri.startswith("otpauth://totp/Witness%20Sync:acc-totp?") and f"secret={started.json()['secret']}" in uri
    wrong = requests.post(server.url + "/v1/auth/totp/confirm", headers=staff.auth, json={"code": "000000"})
    if current_code(secret, time.time()) != "000000":
        assert error(wrong) == (400, "invalid_totp_code")
    assert login(server, staff.username, staff.password).status_code == 200  # not on until confirmed
    confirmed = requests.post(server.url + "/v1/auth/totp/confirm", headers=staff.auth,
                              json={"code": current_code(secret, time.time())})
    assert confirmed.status_code == 200 and confirmed.json() == {"totp_enabled": True}
    again = requests.post(server.url + "/v1/auth/totp", headers=staff.auth)
    assert error(again) == (409, "totp_already_enabled")

    assert error(login(server, staff.username, staff.password)) == (401, "totp_required")
    assert error(login(server, staff.username, "wrong password!", totp=current_code(secret, time.time()))) == \
        (401, "bad_credentials")
    # The code of the next 30-second step is accepted (clock drift); the one
    # just used for confirming is spent.
    next_code = current_code(secret, time.time() + 30)
    assert login(server, staff.username, staff.password, totp=next_code).status_code == 200
    assert error(login(server, staff.username, staff.password, totp=next_code)) == (401, "bad_credentials")
    assert me(server, staff.token).json()["totp_enabled"] is True

    # Phone lost: a custodian resets the second factor; sessions end.
    reset = requests.patch(f"{server.url}/v1/staff/{staff.id}", headers=custodian.auth, json={"reset_totp": True})
    assert reset.status_code == 200 and reset.json()["totp_enabled"] is False
    assert error(me(server, staff.token)) == (401, "token_revoked")
    assert login(server, staff.username, staff.password).status_code == 200


def test_repeated_failed_logins_lock_the_username_known_or_not(tmp_path):
    server = ServerProcess(tmp_path / "lockout", WITNESS_LOGIN_MAX_FAILURES=3, WITNESS_LOGIN_LOCKOUT_SECONDS=4)
    server.start()
    try:
        staff = Staff(server, "acc-locked", "observer")
        for username in ("acc-locked", "acc-nobody"):
            for _ in range(3):
                assert error(login(server, username, "wrong password!")) == (401, "bad_credentials")
            locked = login(server, username, staff.password if username == "acc-locked" else "anything at all")
            assert error(locked) == (429, "too_many_attempts")
            assert 1 <= int(locked.headers["Retry-After"]) <= 5
        assert login(server, "acc-other", "wrong password!").json()["error"] == "bad_credentials"  # others unaffected
        time.sleep(4.5)
        assert login(server, "acc-locked", staff.password).status_code == 200
        custodian = Staff(server, "acc-lock-custodian", "custodian")
        actions = [(e["action"], e["detail"].get("username"))
                   for e in requests.get(server.url + "/v1/audit", headers=custodian.auth,
                                         params={"order": "asc", "limit": 500}).json()["entries"]]
        assert actions.count(("staff.login_failed", "acc-locked")) == 3
        assert ("staff.login_locked", "acc-locked") in actions and ("staff.login_locked", "acc-nobody") in actions
    finally:
        server.stop()


def test_custodians_must_set_up_a_second_factor_when_the_operator_requires_it(tmp_path):
    server = ServerProcess(tmp_path / "totp-required", WITNESS_REQUIRE_CUSTODIAN_TOTP="true")
    server.start()
    try:
        custodian = Staff(server, "acc-strict", "custodian")
        observer = Staff(server, "acc-relaxed", "observer")
        assert requests.get(server.url + "/v1/recordings", headers=observer.auth).status_code == 200
        assert error(requests.get(server.url + "/v1/staff", headers=custodian.auth)) == (403, "totp_setup_required")
        assert me(server, custodian.token).json()["totp_setup_required"] is True
        secret = totp_secret(requests.post(server.url + "/v1/auth/totp", headers=custodian.auth))
        requests.post(server.url + "/v1/auth/totp/confirm", headers=custodian.auth,
                      json={"code": current_code(secret, time.time())})
        assert requests.get(server.url + "/v1/staff", headers=custodian.auth).status_code == 200
        assert error(login(server, custodian.username, custodian.password)) == (401, "totp_required")
    finally:
        server.stop()


def test_a_revoked_device_stops_at_once_and_its_footage_stays(server, custodian):
    phone = Phone(server)
    recording = phone.create_recording()
    assert recording.put(0, recording.chunk(0)).status_code == 201
    revoked = requests.post(f"{server.url}/v1/devices/{phone.device_id}/revoke", headers=custodian.auth)
    assert revoked.status_code == 200 and revoked.json()["revoked_by"] == "staff:acc-custodian"
    assert error(recording.put(1, recording.chunk(1))) == (401, "token_revoked")
    assert error(requests.post(server.url + "/v1/auth/refresh", headers=bearer(phone.refresh_token))) == \
        (401, "token_revoked")
    media = requests.get(f"{server.url}/v1/recordings/{recording.id}/media", headers=custodian.auth)
    assert media.status_code == 200 and media.content == b"piece 0 " * 50
    listed = requests.get(server.url + "/v1/devices", headers=custodian.auth, params={"limit": 200}).json()
    mine = next(d for d in listed["devices"] if d["device_id"] == phone.device_id)
    assert (mine["recordings"], mine["revoked_at"] is not None) == (1, True)


def test_enrollment_codes_put_devices_in_their_organisation(server, custodian):
    made = server.cli("create-organisation", "acc-legal-aid", "--name", "Legal Aid Collective")
    assert made.returncode == 0 and "created organisation acc-legal-aid" in made.stdout
    assert server.cli("create-organisation", "acc-legal-aid", "--name", "Again").returncode != 0
    assert "no organisation" in server.cli("create-user", "x-y", "--role", "observer", "--organisation", "nope",
                                           password="twelve chars ok").stderr.lower()
    theirs = Staff(server, "acc-their-custodian", "custodian", organisation="acc-legal-aid")
    code = requests.post(server.url + "/v1/enrollment-codes", headers=theirs.auth, json={"note": "march 3"}).json()
    assert code["note"] == "march 3" and code["devices"] == 0
    phone = Phone(server, enrollment_code=code["code"])
    recording = phone.create_recording()
    recording.put(0, recording.chunk(0))
    assert requests.get(f"{server.url}/v1/recordings/{recording.id}", headers=theirs.auth).status_code == 200
    assert requests.get(f"{server.url}/v1/recordings/{recording.id}", headers=custodian.auth).status_code == 404
    assert requests.get(f"{server.url}/v1/devices/{phone.device_id}", headers=custodian.auth).status_code == 404
    codes = requests.get(server.url + "/v1/enrollment-codes", headers=theirs.auth).json()["enrollment_codes"]
    assert [(c["code"], c["devices"]) for c in codes] == [(code["code"], 1)]
    revoked = requests.post(f"{server.url}/v1/enrollment-codes/{code['code']}/revoke", headers=theirs.auth)
    assert revoked.json()["revoked_at"] is not None
    refused = requests.post(server.url + "/v1/devices", json={"enrollment_code": code["code"]})
    assert error(refused) == (403, "enrollment_refused")
    listing = server.cli("organisations").stdout
    assert "acc-legal-aid\tLegal Aid Collective\t1 staff\t1 devices" in listing


def test_a_stolen_session_cannot_guess_the_password_for_long(tmp_path):
    server = ServerProcess(tmp_path / "guessing", WITNESS_LOGIN_MAX_FAILURES=2)
    server.start()
    try:
        staff = Staff(server, "acc-guessed", "observer")
        for guess in ("guess number one", "guess number two"):
            answer = requests.post(server.url + "/v1/auth/password", headers=staff.auth,
                                   json={"current_password": guess, "new_password": "a new long password"})
            assert error(answer) == (400, "wrong_current_password")
        locked = requests.post(server.url + "/v1/auth/password", headers=staff.auth,
                               json={"current_password": staff.password, "new_password": "a new long password"})
        assert error(locked) == (429, "too_many_attempts") and "Retry-After" in locked.headers
        assert error(login(server, staff.username, staff.password)) == (429, "too_many_attempts")
    finally:
        server.stop()


@pytest.mark.parametrize("path,body", [
    ("/v1/auth/login", {"username": "\ud800", "password": "x"}),
    ("/v1/devices", {"enrollment_code": "\ud800"}),
    ("/v1/enrollment-codes", {"note": "street \udfff team"}),
])
def test_escapes_that_are_not_unicode_text_are_refused_clearly(server, custodian, path, body):
    # json.dumps writes the lone surrogate as the escape \\ud800, as a client would.
    answer = requests.post(server.url + path, data=json.dumps(body),
                           headers={**custodian.auth, "Content-Type": "application/json"})
    assert error(answer) == (400, "invalid_body"), answer.text


@pytest.mark.parametrize("path,params", [
    ("/v1/audit", {"order": "desc"}),
    ("/v1/audit", {"order": "asc"}),
])
def test_cursors_with_numbers_out_of_range_are_refused(server, custodian, path, params):
    for number in (10**30, 2**63, -1):
        kind = "audit-DESC" if params["order"] == "desc" else "audit-ASC"
        cursor = base64.urlsafe_b64encode(f'["{kind}",{number}]'.encode()).rstrip(b"=").decode()
        answer = requests.get(server.url + path, headers=custodian.auth, params={**params, "cursor": cursor})
        assert error(answer) == (400, "invalid_cursor"), (number, answer.text)
