"""An organisation's people over HTTP: custodians managing accounts, second
factors, throttled logins (a stranger's guesses never keep the owner out),
no account taken over from a token alone, sessions that end, devices that
are revoked, and organisations (and their failed logins) kept apart."""

from __future__ import annotations

import base64
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import requests

from crypto.totp import current_code
from tests.console_login import console_login
from tests.support import PROJECT_ROOT, Phone, ServerProcess, Staff


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
    ({"username": "acc-x", "role": "observer", "password": "000000000000"}, 400, "weak_password"),
    ({"username": "acc-x", "role": "observer", "password": "Password2026!"}, 400, "weak_password"),
    ({"username": "acc-x", "role": "observer", "password": "123456789012"}, 400, "weak_password"),
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


def test_failed_logins_slow_the_guesser_down_and_never_lock_the_account(tmp_path):
    # One worker process, no front door: the counts are this process's own.
    server = ServerProcess(tmp_path / "throttle", workers=1, front_door=False, WITNESS_LOGIN_MAX_FAILURES=3,
                           WITNESS_LOGIN_LOCKOUT_SECONDS=4)
    server.start()
    try:
        staff = Staff(server, "acc-slowed", "observer")
        checked = {}
        for username in ("acc-slowed", "acc-nobody"):  # known or not, alike
            answers = [login(server, username, "wrong password!") for _ in range(8)]
            assert [error(a) for a in answers[:3]] == [(401, "bad_credentials")] * 3
            checked[username] = sum(a.status_code == 401 for a in answers)
            waits = [int(a.headers["Retry-After"]) for a in answers if a.status_code == 429]
            assert waits and all(error(a) == (429, "too_many_attempts") for a in answers if a.status_code == 429)
            # Trying early makes the wait longer (it doubles), up to the longest wait.
            assert waits == sorted(waits) and waits[-1] == 4 and all(1 <= w <= 4 for w in waits), waits
            held = login(server, username, staff.password if username == "acc-slowed" else "anything at all")
            assert error(held) == (429, "too_many_attempts")  # not even checked
        assert error(login(server, "acc-other", "wrong password!")) == (401, "bad_credentials")  # others unaffected
        time.sleep(int(held.headers["Retry-After"]) + 0.5)  # the wait the server named
        assert login(server, "acc-slowed", staff.password).status_code == 200
        assert error(login(server, "acc-slowed", "wrong password!")) == (401, "bad_credentials")  # counted anew

        custodian = Staff(server, "acc-slow-custodian", "custodian")
        entries = requests.get(server.url + "/v1/audit", headers=custodian.auth,
                               params={"order": "asc", "limit": 500}).json()["entries"]
        actions = [(e["action"], e["detail"].get("username")) for e in entries]
        # Checked attempts are audited; a flood of refused ones writes nothing.
        assert actions.count(("staff.login_failed", "acc-slowed")) == checked["acc-slowed"] + 1
        assert ("staff.login_throttled", "acc-slowed") in actions
        assert not [a for a in actions if a[1] in ("acc-nobody", "acc-other")]  # unknown names: the operator's only
        assert "127.0.0.1" not in json.dumps(entries)  # the client's address is nowhere in the log
    finally:
        server.stop()


class UnixSocketServer:
    """`gunicorn wsgi:app` on a unix socket, one worker, as the front door's
    pools run: the client's address then comes in `X-Real-IP`, which nginx
    sets from the real peer (server/clients.py trusts it only on a unix
    socket). Here the test plays nginx, so two clients can have two
    addresses."""

    def __init__(self, root, **env):
        self.root = root
        self.folder = Path(tempfile.mkdtemp(prefix="wsock-"))  # unix socket paths are short
        self.socket_path = str(self.folder / "app.sock")
        self.env = {**os.environ, "WITNESS_DATA_DIR": str(root / "data"), "WITNESS_KEYS_DIR": str(root / "keys"),
                    **{k: str(v) for k, v in env.items()}}
        self.log_path = root / "server.log"
        self.process = None

    def start(self) -> "UnixSocketServer":
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "wsgi:app", "--bind", f"unix:{self.socket_path}",
                 "--workers", "1", "--threads", "4"],
                cwd=PROJECT_ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log_path.read_text()
            try:
                if self.request("GET", "/v1/keys", address="192.0.2.1")[0] == 200:
                    return self
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"server did not start:\n{self.log_path.read_text()}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=30)
        shutil.rmtree(self.folder, ignore_errors=True)

    def cli(self, *args: str, password: str) -> None:
        made = subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", "witness", *args], cwd=PROJECT_ROOT,
                              env={**self.env, "WITNESS_PASSWORD": password}, capture_output=True, text=True,
                              timeout=120)
        assert made.returncode == 0, made.stderr

    def request(self, method: str, path: str, body: dict | None = None, *, address: str,
                token: str | None = None) -> tuple[int, dict, dict]:
        """One request over the socket from a client at `address`: (status,
        headers, JSON body)."""
        connection = _UnixConnection(self.socket_path)
        headers = {"X-Real-IP": address, "Host": "witness.example"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        try:
            connection.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
            answer = connection.getresponse()
            data = answer.read()
            return answer.status, dict(answer.getheaders()), json.loads(data) if data else {}
        finally:
            connection.close()


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str):
        super().__init__("localhost", timeout=60)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(60)
        self.sock.connect(self.path)


def test_a_strangers_wrong_passwords_never_keep_the_owner_out(tmp_path):
    stranger, owner = "203.0.113.77", "198.51.100.23"
    server = UnixSocketServer(tmp_path / "owner", WITNESS_LOGIN_MAX_FAILURES=3).start()
    try:
        password = "the owner's long passphrase"
        server.cli("create-user", "acc-owner", "--role", "observer", password=password)
        server.cli("create-user", "acc-owner-custodian", "--role", "custodian", password=password)

        def log_in(address: str, secret: str, **extra):
            return server.request("POST", "/v1/auth/login", {"username": "acc-owner", "password": secret, **extra},
                                  address=address)

        # The owner has a second factor (confirmed with the previous step's code,
        # one step of drift being allowed, so the current one is still unused).
        status, _, tokens = log_in(owner, password)
        assert status == 200
        secret = totp_secret_of(server.request("POST", "/v1/auth/totp", address=owner,
                                               token=tokens["access_token"])[2])
        confirmed = server.request("POST", "/v1/auth/totp/confirm", {"code": current_code(secret, time.time() - 30)},
                                   address=owner, token=tokens["access_token"])
        assert confirmed[0] == 200, confirmed

        # A stranger who knows the username tries and tries, the right password too.
        answers = [log_in(stranger, f"guess number {n}") for n in range(30)]
        assert [(s, body["error"]) for s, _, body in answers[:3]] == [(401, "bad_credentials")] * 3
        assert {(s, body["error"]) for s, _, body in answers[10:]} == {(429, "too_many_attempts")}
        assert int(answers[-1][1]["Retry-After"]) >= 512  # doubling with every try, up to 900
        checked = sum(s == 401 for s, _, _ in answers)
        status, _, body = log_in(stranger, password, totp=current_code(secret, time.time()))
        assert (status, body["error"]) == (429, "too_many_attempts")  # nothing is checked while it waits

        # Meanwhile the owner, from their own address, gets in with password and code.
        status, _, body = log_in(owner, password)
        assert (status, body["error"]) == (401, "totp_required")
        status, _, body = log_in(owner, password, totp=current_code(secret, time.time()))
        assert status == 200 and set(body) == {"access_token", "refresh_token"}

        # The custodian sees the failures under the username, and no address anywhere.
        status, _, custodian = server.request("POST", "/v1/auth/login",
                                              {"username": "acc-owner-custodian", "password": password},
                                              address=owner)
        status, _, log = server.request("GET", "/v1/audit?limit=500&action=staff.login_failed", address=owner,
                                        token=custodian["access_token"])
        assert status == 200 and len(log["entries"]) == checked
        assert {entry["detail"]["username"] for entry in log["entries"]} == {"acc-owner"}
        stored = b"".join(path.read_bytes() for path in (tmp_path / "owner").rglob("*") if path.is_file())
        for address in (stranger, owner):
            assert address.encode() not in stored and address not in json.dumps(log)
    finally:
        server.stop()


def totp_secret_of(body: dict) -> bytes:
    return base64.b32decode(body["secret"] + "=" * (-len(body["secret"]) % 8))


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
    server = ServerProcess(tmp_path / "guessing", workers=1, front_door=False, WITNESS_LOGIN_MAX_FAILURES=2)
    server.start()
    try:
        staff = Staff(server, "acc-guessed", "observer")
        for guess in ("guess number one", "guess number two"):
            answer = requests.post(server.url + "/v1/auth/password", headers=staff.auth,
                                   json={"current_password": guess, "new_password": "a new long password"})
            assert error(answer) == (400, "wrong_current_password")
        held = requests.post(server.url + "/v1/auth/password", headers=staff.auth,
                             json={"current_password": staff.password, "new_password": "a new long password"})
        assert error(held) == (429, "too_many_attempts") and int(held.headers["Retry-After"]) >= 1
        assert error(login(server, staff.username, staff.password)) == (429, "too_many_attempts")
        assert me(server, staff.token).status_code == 200  # nothing changed: the session goes on
    finally:
        server.stop()


def test_a_stolen_custodian_token_cannot_take_the_account_over(server):
    dana = Staff(server, "acc-dana", "custodian")
    secret = totp_secret(requests.post(server.url + "/v1/auth/totp", headers=dana.auth))
    spent = current_code(secret, time.time() - 30)  # the previous step's code: the current one stays unused
    assert requests.post(server.url + "/v1/auth/totp/confirm", headers=dana.auth, json={"code": spent}).ok
    own = f"{server.url}/v1/staff/{dana.id}"
    for change in ({"password": "the thief's new passphrase"}, {"reset_totp": True},
                   {"role": "custodian", "password": "the thief's new passphrase"}):
        answer = requests.patch(own, headers=dana.auth, json=change)
        assert error(answer) == (403, "use_account_endpoint"), change
        assert "/v1/auth/" in answer.json()["message"]
    for wrong in ({}, {"code": spent}, {"code": "12345"}):  # no code, a used one, a malformed one
        answer = requests.post(server.url + "/v1/auth/totp/remove", headers=dana.auth, json=wrong)
        assert error(answer) == (400, "invalid_totp_code"), wrong
    # Nothing changed: the old password and the second factor still hold.
    assert me(server, dana.token).json()["totp_enabled"] is True
    assert error(login(server, dana.username, "the thief's new passphrase")) == (401, "bad_credentials")
    assert error(login(server, dana.username, dana.password)) == (401, "totp_required")
    # With the current code, the owner removes it (and could set up a new one).
    removed = requests.post(server.url + "/v1/auth/totp/remove", headers=dana.auth,
                            json={"code": current_code(secret, time.time())})
    assert removed.status_code == 200 and removed.json() == {"totp_enabled": False}
    assert login(server, dana.username, dana.password).status_code == 200
    assert requests.post(server.url + "/v1/auth/totp", headers=dana.auth).status_code == 200


def test_a_custodian_resetting_someone_else_is_audited_and_ends_their_sessions(server, custodian):
    sam = Staff(server, "acc-sam", "observer")
    secret = totp_secret(requests.post(server.url + "/v1/auth/totp", headers=sam.auth))
    assert requests.post(server.url + "/v1/auth/totp/confirm", headers=sam.auth,
                         json={"code": current_code(secret, time.time() - 30)}).ok
    session = sam.login(totp=current_code(secret, time.time()))
    console = requests.Session()
    assert console_login(console, server.url, sam.username, sam.password,
                         totp=current_code(secret, time.time() + 30)).status_code == 302

    def console_works() -> bool:
        return console.get(server.url + "/console/account", allow_redirects=False).status_code == 200

    assert console_works()
    reset = requests.patch(f"{server.url}/v1/staff/{sam.id}", headers=custodian.auth, json={"reset_totp": True})
    assert reset.status_code == 200 and reset.json()["totp_enabled"] is False
    assert error(me(server, session["access_token"])) == (401, "token_revoked") and not console_works()
    fresh = sam.login()  # the password alone now
    assert requests.patch(f"{server.url}/v1/staff/{sam.id}", headers=custodian.auth,
                          json={"password": "sam's new long passphrase"}).status_code == 200
    assert error(me(server, fresh["access_token"])) == (401, "token_revoked")
    assert login(server, sam.username, "sam's new long passphrase").status_code == 200

    entries = requests.get(server.url + "/v1/audit", headers=custodian.auth,
                           params={"actor": "staff:acc-custodian", "limit": 500}).json()["entries"]
    done = [(e["action"], e["detail"].get("username")) for e in entries]
    assert ("staff.totp_reset", "acc-sam") in done and ("staff.password_set", "acc-sam") in done
    assert "sam's new long passphrase" not in json.dumps(entries)


def test_failed_logins_are_shown_only_to_their_own_organisation(server, custodian):
    made = server.cli("create-organisation", "acc-other-org", "--name", "Other organisation")
    assert made.returncode == 0, made.stderr
    theirs = Staff(server, "acc-other-custodian", "custodian", organisation="acc-other-org")
    ours = Staff(server, "acc-ours", "observer")
    assert error(login(server, ours.username, "not the password")) == (401, "bad_credentials")
    typed = "my-password-typed-as-the-username"
    assert error(login(server, typed, "x" * 14)) == (401, "bad_credentials")

    def failures_seen_by(who: Staff) -> set[str]:
        entries = requests.get(server.url + "/v1/audit", headers=who.auth,
                               params={"action": "staff.login_failed", "limit": 500}).json()["entries"]
        return {entry["detail"]["username"] for entry in entries}

    assert ours.username in failures_seen_by(custodian) and typed not in failures_seen_by(custodian)
    assert failures_seen_by(theirs) == set()
    printed = server.cli("audit-log", "--action", "staff.login_failed", "--limit", "500")
    assert printed.returncode == 0, printed.stderr
    lines = [json.loads(line) for line in printed.stdout.splitlines()]
    assert {(line["actor"], line["organisation_id"], line["detail"]["username"]) for line in lines} >= \
        {("anonymous", None, typed)}


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
