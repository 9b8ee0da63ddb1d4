"""Every cell of the "Console pages" table in docs/permissions.md, sent to a
real server over HTTP.

The table is read from the page, like the API's matrix in
tests/e2e/test_permissions.py, so the page and the server cannot drift
apart; and the console's routes are read from the app's url_map, so a new
page without a row fails `test_the_table_covers_every_console_route`.

Browsers are `requests.Session`s that log in through the real
`/console/login` form and post forms as a browser would (with the page's
hidden `csrf_token`, or, for the last column, without it). Every refused
POST is followed by a check that nothing changed; every POST that works is
followed by a check that its change happened.

Organisation A is the default organisation, holding the recording, request,
accounts, devices and codes the paths aim at; organisation B's custodian is
the "other organisation" column.
"""

from __future__ import annotations

import base64
import itertools
import re
import time
from dataclasses import dataclass, field
from typing import Callable
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from crypto.totp import current_code
from tests.console_login import console_login, login_form_token
from tests.support import MANY_LOGINS, PROJECT_ROOT, Phone, ServerProcess, Staff

TABLE_PAGE = PROJECT_ROOT / "docs" / "permissions.md"
COLUMNS = ("anonymous", "device token", "API token", "observer", "lawyer", "custodian", "other organisation",
           "without csrf_token")
ROLES = ("observer", "lawyer", "custodian")
ROLE_NAMES = {"observer": "legal observer", "lawyer": "lawyer", "custodian": "custodian"}
COOKIE = "witness_console"


def read_table() -> dict[str, dict[str, str]]:
    rows = {}
    for line in TABLE_PAGE.read_text("utf-8").splitlines():
        match = re.match(r"^\| (GET|POST) `(/console/\S*)` \|(.*)\|\s*$", line)
        if match:
            cells = [cell.strip() for cell in match.group(3).split("|")]
            assert len(cells) == len(COLUMNS), f"{match.group(1)} {match.group(2)}: {len(cells)} cells"
            rows[f"{match.group(1)} {match.group(2)}"] = dict(zip(COLUMNS, cells))
    return rows


TABLE = read_table()


def allowed_roles(row: dict) -> list[str]:
    return [role for role in ROLES if row[role] in ("200", "302")]


def html_text(answer: requests.Response) -> str:
    assert answer.headers["Content-Type"].startswith("text/html"), (answer.status_code, answer.text[:300])
    return answer.text


# -- the world the requests aim at ---------------------------------------------

class Caller:
    """A browser: a session with (or without) the console cookie."""

    def __init__(self, server, session: requests.Session, role: str | None = None, staff: Staff | None = None):
        self.server, self.session, self.role, self.staff = server, session, role, staff
        self._csrf: str | None = None

    def csrf(self) -> str:
        """The hidden `csrf_token` of this session's forms, as a page gives it."""
        if self._csrf is None:
            if self.session.cookies.get(COOKIE) is None:
                self._csrf = "no-session"
            else:
                page = self.session.get(self.server.url + "/console/account").text
                self._csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
        return self._csrf

    def cookie_still_works(self, cookie: str) -> bool:
        replay = requests.Session()
        replay.cookies.set(COOKIE, cookie)
        return replay.get(self.server.url + "/console/account", allow_redirects=False).status_code == 200


class World:
    """Organisations A and B, their people, a phone, a recording, a copy
    request, and the accounts, devices and codes refused changes aim at."""

    def __init__(self, server):
        self.server = server
        self.numbers = itertools.count(1)
        self.a = {role: Staff(server, f"alpha-{role}", role) for role in ROLES}
        made = server.cli("create-organisation", "beta", "--name", "Organisation B")
        assert made.returncode == 0, made.stderr
        self.b_custodian = Staff(server, "beta-custodian", "custodian", organisation="beta")
        self._token_time = time.monotonic()
        self.phone = Phone(server)
        self.recording = self.phone.create_recording()
        assert self.recording.put(0, self.recording.chunk(0, final=True), final=True).status_code == 201
        self.copy_request = self.new_copy_request()
        # What refused changes aim at; each must come out unchanged.
        self.target = self.new_staff("observer")
        self.disabled = self.new_staff("observer")
        self.patch(self.disabled, {"disabled": True})
        self.totp_target = self.new_staff("observer", with_second_factor=True)
        self.target_phone = Phone(server)
        self.code = self.new_code()
        self._callers: dict[str, Caller] = {}

    # API helpers (a custodian's token), used to set up and to look.
    def api(self, organisation: str = "a") -> dict:
        if time.monotonic() - self._token_time > 600:  # staff access tokens last 15 minutes
            for staff in (self.a["custodian"], self.a["lawyer"], self.b_custodian):
                staff.tokens = staff.login()
            self._token_time = time.monotonic()
        return (self.a["custodian"] if organisation == "a" else self.b_custodian).auth

    def get(self, path: str, organisation: str = "a") -> dict:
        answer = requests.get(self.server.url + path, headers=self.api(organisation))
        assert answer.status_code == 200, answer.text
        return answer.json()

    def patch(self, staff: Staff, changes: dict) -> None:
        answer = requests.patch(f"{self.server.url}/v1/staff/{staff.id}", headers=self.api(), json=changes)
        assert answer.status_code == 200, answer.text

    def new_staff(self, role: str, organisation: str = "a", *, with_second_factor: bool = False) -> Staff:
        maker = self.api(organisation)["Authorization"].removeprefix("Bearer ")
        prefix = "alpha" if organisation == "a" else "beta"
        staff = Staff(self.server, f"{prefix}-{role}-{next(self.numbers)}", role, made_by=maker)
        if with_second_factor:
            secret = requests.post(self.server.url + "/v1/auth/totp", headers=staff.auth).json()["secret"]
            staff.totp_key = base64.b32decode(secret + "=" * (-len(secret) % 8))
            confirmed = requests.post(self.server.url + "/v1/auth/totp/confirm", headers=staff.auth,
                                      json={"code": current_code(staff.totp_key, time.time())})
            assert confirmed.status_code == 200, confirmed.text
        return staff

    def staff_account(self, staff: Staff) -> dict:
        return self.get(f"/v1/staff/{staff.id}")

    def token_works(self, staff: Staff) -> bool:
        return requests.get(self.server.url + "/v1/auth/me", headers=staff.auth).status_code == 200

    def new_copy_request(self) -> dict:
        answer = requests.post(f"{self.server.url}/v1/recordings/{self.recording.id}/copy-requests",
                               headers=self.a["lawyer"].auth,
                               json={"case_reference": f"alpha case {next(self.numbers)}", "purpose": "the table"})
        assert answer.status_code == 201, answer.text
        return answer.json()

    def copy_state(self, request_id: str) -> str:
        return self.get(f"/v1/copy-requests/{request_id}")["state"]

    def new_code(self) -> dict:
        answer = requests.post(self.server.url + "/v1/enrollment-codes", headers=self.api(),
                               json={"note": f"alpha code {next(self.numbers)}"})
        assert answer.status_code == 201, answer.text
        return answer.json()

    def usernames(self) -> set[str]:
        return {person["username"] for organisation in ("a", "b") for person in self.get("/v1/staff", organisation)["staff"]}

    def code_notes(self) -> set[str]:
        return {code["note"] for organisation in ("a", "b")
                for code in self.get("/v1/enrollment-codes", organisation)["enrollment_codes"]}

    # Browsers.
    def console_login(self, staff: Staff) -> Caller:
        session = requests.Session()
        answer = console_login(session, self.server.url, staff.username, staff.password)
        assert answer.status_code == 302 and session.cookies.get(COOKIE), answer.text
        return Caller(self.server, session, staff.role, staff)

    def caller(self, column: str, fresh: str | None = None) -> Caller:
        """The browser of `column`; `fresh`: "session" for a new login of the
        column's account, "user" for a new account of its role."""
        if column == "anonymous":
            return Caller(self.server, requests.Session())
        if column in ("device token", "API token"):
            session = requests.Session()
            token = self.phone.token if column == "device token" else self.api()["Authorization"].split()[1]
            session.headers["Authorization"] = f"Bearer {token}"
            return Caller(self.server, session)
        organisation = "b" if column == "other organisation" else "a"
        role = "custodian" if column == "other organisation" else column
        if fresh == "user":
            return self.console_login(self.new_staff(role, organisation))
        staff = self.b_custodian if organisation == "b" else self.a[role]
        if fresh == "session":
            return self.console_login(staff)
        if column not in self._callers:
            self._callers[column] = self.console_login(staff)
        return self._callers[column]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The module's own server: the matrix logs in afresh for every cell (`MANY_LOGINS`)."""
    process = ServerProcess(tmp_path_factory.mktemp("server"), **MANY_LOGINS).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def world(server) -> World:
    return World(server)


# -- one request per row --------------------------------------------------------

@dataclass
class Call:
    path: str
    data: dict = field(default_factory=dict)
    # POST: whether the change happened (asserted after a 302, denied after any refusal).
    done: Callable[[requests.Response], bool] | None = None
    # GET: the page's heading, and what of A's it shows (absent for "none of A's").
    heading: str = ""
    marks: tuple[str, ...] = ()
    redirects_to: str | None = None


# name -> (make(world, column, succeeds, caller) -> Call, fresh caller)
ENDPOINTS: dict[str, tuple[Callable[..., Call], str | None]] = {}


def endpoint(name: str, *, fresh: str | None = None):
    def register(make):
        ENDPOINTS[name] = (make, fresh)
        return make
    return register


@endpoint("GET /console/")
def _console_root(world, column, succeeds, caller):
    return Call("/console/", redirects_to="/console/recordings")


@endpoint("GET /console/login")
def _login_page(world, column, succeeds, caller):
    return Call("/console/login", heading="Log in")


@endpoint("POST /console/login", fresh="session")
def _login(world, column, succeeds, caller):
    observer = world.a["observer"]
    # The login form's own CSRF value, from the login page in this browser.
    token = login_form_token(caller.session, world.server.url)
    return Call("/console/login", {"username": observer.username, "password": observer.password,
                                   "csrf_token": token},
                done=lambda answer: bool(answer.cookies.get(COOKIE)), redirects_to="/console/recordings")


@endpoint("POST /console/logout", fresh="session")
def _logout(world, column, succeeds, caller):
    cookie = caller.session.cookies.get(COOKIE)
    return Call("/console/logout", done=None if cookie is None else lambda _: not caller.cookie_still_works(cookie))


@endpoint("GET /console/recordings")
def _recordings(world, column, succeeds, caller):
    return Call("/console/recordings", heading="Recordings", marks=(world.recording.id,))


@endpoint("GET /console/recordings/{recording_id}")
def _recording(world, column, succeeds, caller):
    return Call(f"/console/recordings/{world.recording.id}", heading="Recording", marks=(world.recording.id,))


@endpoint("POST /console/recordings/{recording_id}/copy-requests")
def _request_copy(world, column, succeeds, caller):
    case = f"console case {next(world.numbers)}"

    def asked(_):
        return any(found["case_reference"] == case
                   for found in world.get("/v1/copy-requests?limit=200")["copy_requests"])
    return Call(f"/console/recordings/{world.recording.id}/copy-requests",
                {"case_reference": case, "purpose": "for the table"}, done=asked)


@endpoint("GET /console/copies")
def _copies(world, column, succeeds, caller):
    return Call("/console/copies", heading="Copy requests", marks=(world.copy_request["case_reference"],))


@endpoint("GET /console/copies/{request_id}")
def _copy(world, column, succeeds, caller):
    case = world.copy_request["case_reference"]
    return Call(f"/console/copies/{world.copy_request['request_id']}", heading=case, marks=(case,))


def _decision(verb: str, data: dict):
    def make(world, column, succeeds, caller):
        request_id = world.new_copy_request()["request_id"] if succeeds else world.copy_request["request_id"]
        return Call(f"/console/copies/{request_id}/{verb}", data,
                    done=lambda _: world.copy_state(request_id) != "pending")
    return make


endpoint("POST /console/copies/{request_id}/approve")(_decision("approve", {}))
endpoint("POST /console/copies/{request_id}/deny")(_decision("deny", {"reason": "Not for this case."}))


@endpoint("GET /console/people")
def _people(world, column, succeeds, caller):
    return Call("/console/people", heading="People", marks=(world.a["observer"].username,))


@endpoint("POST /console/people")
def _add_person(world, column, succeeds, caller):
    username = f"new-person-{next(world.numbers)}"
    return Call("/console/people", {"username": username, "role": "observer", "password": "a long new password"},
                done=lambda _: username in world.usernames())


def _person_change(action: str, data: dict, done: Callable[[World, Staff], bool], *, target: str = "target",
                   **fresh_target):
    def make(world, column, succeeds, caller):
        person = world.new_staff("observer", **fresh_target) if succeeds else getattr(world, target)
        if succeeds and target == "disabled":
            world.patch(person, {"disabled": True})
        return Call(f"/console/people/{person.id}/{action}", data, done=lambda _: done(world, person))
    return make


endpoint("POST /console/people/{staff_id}/role")(_person_change(
    "role", {"role": "lawyer"}, lambda world, person: world.staff_account(person)["role"] == "lawyer"))
endpoint("POST /console/people/{staff_id}/disable")(_person_change(
    "disable", {}, lambda world, person: world.staff_account(person)["disabled"]))
endpoint("POST /console/people/{staff_id}/enable")(_person_change(
    "enable", {}, lambda world, person: not world.staff_account(person)["disabled"], target="disabled"))
endpoint("POST /console/people/{staff_id}/password")(_person_change(
    # Setting a password ends the person's sessions: their token stops.
    "password", {"password": "a fresh password from the custodian"},
    lambda world, person: not world.token_works(person)))
endpoint("POST /console/people/{staff_id}/reset-second-factor")(_person_change(
    "reset-second-factor", {}, lambda world, person: not world.staff_account(person)["totp_enabled"],
    target="totp_target", with_second_factor=True))


@endpoint("GET /console/devices")
def _devices(world, column, succeeds, caller):
    return Call("/console/devices", heading="Devices", marks=(world.phone.device_id,))


@endpoint("POST /console/devices/{device_id}/revoke")
def _revoke_device(world, column, succeeds, caller):
    phone = Phone(world.server) if succeeds else world.target_phone
    return Call(f"/console/devices/{phone.device_id}/revoke",
                done=lambda _: world.get(f"/v1/devices/{phone.device_id}")["revoked_at"] is not None)


@endpoint("GET /console/enrollment-codes")
def _codes(world, column, succeeds, caller):
    return Call("/console/enrollment-codes", heading="Enrollment codes", marks=(world.code["code"],))


@endpoint("POST /console/enrollment-codes")
def _make_code(world, column, succeeds, caller):
    note = f"console code {next(world.numbers)}"
    return Call("/console/enrollment-codes", {"note": note}, done=lambda _: note in world.code_notes())


@endpoint("POST /console/enrollment-codes/{code}/revoke")
def _revoke_code(world, column, succeeds, caller):
    code = world.new_code()["code"] if succeeds else world.code["code"]

    def revoked(_):
        return any(found["code"] == code and found["revoked_at"]
                   for found in world.get("/v1/enrollment-codes")["enrollment_codes"])
    return Call(f"/console/enrollment-codes/{code}/revoke", done=revoked)


@endpoint("GET /console/audit")
def _audit(world, column, succeeds, caller):
    # Filtered by actor, so A's entries are on the first page however many came since.
    custodian = world.a["custodian"].username
    return Call(f"/console/audit?actor={custodian}", heading="Audit log", marks=(f"staff:{custodian}",))


@endpoint("GET /console/account")
def _account(world, column, succeeds, caller):
    return Call("/console/account", heading="Your account", marks=(caller.staff.username,) if caller.staff else ())


@endpoint("POST /console/account/password", fresh="user")
def _own_password(world, column, succeeds, caller):
    me = caller.staff
    new = "my own new password"
    return Call("/console/account/password",
                {"current_password": me.password if me else "", "new_password": new, "new_password_again": new},
                # Changing one's password ends every session: the API token stops.
                done=None if me is None else lambda _: not world.token_works(me))


@endpoint("POST /console/account/totp", fresh="user")
def _start_second_factor(world, column, succeeds, caller):
    def started(_):
        return "data-totp-secret" in caller.session.get(world.server.url + "/console/account").text
    return Call("/console/account/totp", done=None if caller.staff is None else started)


@endpoint("POST /console/account/totp/confirm", fresh="user")
def _confirm_second_factor(world, column, succeeds, caller):
    me = caller.staff
    if me is None:
        return Call("/console/account/totp/confirm", {"code": "123456"})
    secret = requests.post(world.server.url + "/v1/auth/totp", headers=me.auth).json()["secret"]
    key = base64.b32decode(secret + "=" * (-len(secret) % 8))
    return Call("/console/account/totp/confirm", {"code": current_code(key, time.time())},
                done=lambda _: requests.get(world.server.url + "/v1/auth/me", headers=me.auth).json()["totp_enabled"])


@endpoint("POST /console/account/totp/remove", fresh="user")
def _remove_second_factor(world, column, succeeds, caller):
    me = caller.staff
    if me is None:
        return Call("/console/account/totp/remove", {"code": "123456"})
    secret = requests.post(world.server.url + "/v1/auth/totp", headers=me.auth).json()["secret"]
    key = base64.b32decode(secret + "=" * (-len(secret) % 8))
    # Confirmed with the previous step's code (one step of drift is allowed),
    # so the current code is still unused when the form sends it.
    confirmed = requests.post(world.server.url + "/v1/auth/totp/confirm", headers=me.auth,
                              json={"code": current_code(key, time.time() - 30)})
    assert confirmed.status_code == 200, confirmed.text
    return Call("/console/account/totp/remove", {"code": current_code(key, time.time())},
                done=lambda _: not requests.get(world.server.url + "/v1/auth/me",
                                                headers=me.auth).json()["totp_enabled"])


# -- the tests ------------------------------------------------------------------

def test_the_table_covers_every_console_route(make_app):
    app = make_app()
    served = set()
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/console"):
            path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
            served |= {f"{method} {path}" for method in rule.methods - {"HEAD", "OPTIONS"}}
    assert len(served) > 20
    assert served - set(TABLE) == set(), "console routes missing from docs/permissions.md"
    assert set(TABLE) - served == set(), "docs/permissions.md lists console routes that do not exist"
    assert set(TABLE) == set(ENDPOINTS), "every row needs a request in this file"


CELLS = [(name, column) for name in TABLE for column in COLUMNS if TABLE[name][column] != "—"]


@pytest.mark.parametrize("name,column", CELLS, ids=[f"{name} [{column}]" for name, column in CELLS])
def test_console_cell(world, name, column):
    row, expected = TABLE[name], TABLE[name][column]
    method = name.split()[0]
    make, fresh = ENDPOINTS[name]
    acting = allowed_roles(row)[0] if column == "without csrf_token" else column
    caller = world.caller(acting, fresh if acting in (*ROLES, "other organisation") else None)
    call = make(world, acting, expected in ("200", "302"), caller)
    url = world.server.url + call.path
    if method == "GET":
        answer = caller.session.get(url, allow_redirects=False)
    else:
        data = dict(call.data)
        if column == "without csrf_token":
            data.pop("csrf_token", None)
        else:
            data.setdefault("csrf_token", caller.csrf())
        answer = caller.session.post(url, data=data, allow_redirects=False)
    seen = f"{answer.status_code} {answer.headers.get('Location', '')} {answer.text[:600]}"

    if expected == "login":
        assert answer.status_code == 302, seen
        location = urlsplit(answer.headers["Location"])
        assert location.path == "/console/login", seen
        if method == "GET":
            assert parse_qs(location.query).get("next") == [call.path], seen
    elif expected == "302":
        assert answer.status_code == 302, seen
        if call.redirects_to:
            assert urlsplit(answer.headers["Location"]).path == call.redirects_to, seen
    elif expected.startswith("200"):
        assert answer.status_code == 200, seen
        text = html_text(answer)
        assert re.search(r"<h1[^>]*>\s*" + re.escape(call.heading), text), seen
        if expected == "200":
            assert all(mark in text for mark in call.marks), (call.marks, seen)
        else:
            assert expected == "200, none of A's"
            assert call.marks and not any(mark in text for mark in call.marks), (call.marks, seen)
    elif expected == "403":
        assert answer.status_code == 403, seen
        text = html_text(answer)
        names = " or ".join(ROLE_NAMES[role] + "s" for role in allowed_roles(row))
        assert f"This page is for {names}. You are logged in as a {ROLE_NAMES[caller.role]}." in text, seen
    elif expected == "404":
        assert answer.status_code == 404, seen
        assert "Not found" in html_text(answer), seen
    elif expected == "400":
        assert answer.status_code == 400, seen
        assert "This form has expired or did not come from this console" in html_text(answer), seen
    else:
        pytest.fail(f"unknown cell {expected!r}")

    if method == "POST" and call.done is not None:
        assert call.done(answer) is (expected == "302"), f"{'no change' if expected == '302' else 'a change'}: {seen}"


def test_a_form_sent_without_a_session_comes_back_to_its_page_after_login(world):
    """A POST whose session has ended goes to the login page, which returns
    to the page the form was on: the Referer, kept only when it is a page of
    this server (never a way to send the browser elsewhere)."""
    url = world.server.url + "/console/enrollment-codes"
    here = "/console/people?notice=disabled"
    for referrer, expected in ((world.server.url + here, [here]),
                               ("https://elsewhere.example/console/people", None),
                               (None, None)):
        headers = {"Referer": referrer} if referrer else {}
        answer = requests.post(url, data={"note": "x", "csrf_token": "stale"}, headers=headers, allow_redirects=False)
        assert answer.status_code == 302, answer.text
        location = urlsplit(answer.headers["Location"])
        assert location.path == "/console/login"
        assert parse_qs(location.query).get("next") == expected, (referrer, answer.headers["Location"])
