"""Login throttling, own-account changes and password strength in the
domain, on a real Archive (real SQLite, real Argon2id) with a clock the
test moves: a stranger's failures slow the stranger down and never keep the
owner out, waits grow and are capped, nothing about a client reaches the
disk, and weak passwords are refused."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import pytest

from crypto.totp import current_code
from sync.archive import Archive
from sync.domain import accounts, audit, logins
from sync.errors import BadCredentials, InvalidInput, OwnAccountElsewhere, TooManyAttempts, WrongSecondFactor
from sync.settings import Settings

PASSWORD = "a long passphrase of mine"


class Clock:
    def __init__(self):
        self.now = datetime(2026, 11, 21, 14, 0, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def archive(tmp_path, clock) -> Archive:
    settings = Settings(data_dir=tmp_path / "data", keys_dir=tmp_path / "keys", login_max_failures=3,
                        login_lockout_seconds=60)
    return Archive(settings, clock=clock)


def fake_seconds():
    moment = [1000.0]
    return moment, lambda: moment[0]


# -- the throttle itself --------------------------------------------------------

def test_waits_start_after_the_free_failures_double_and_are_capped():
    moment, now = fake_seconds()
    throttle = logins.LoginThrottle(3, 60, now=now)
    assert [throttle.failed("rosa", "a")[1] for _ in range(2)] == [0, 0]
    assert throttle.refuse("rosa", "a") == 0
    assert throttle.failed("rosa", "a") == (3, 1)  # the third failure: wait a second
    assert [throttle.refuse("rosa", "a") for _ in range(5)] == [2, 4, 8, 16, 32]  # trying early: longer
    moment[0] += 32
    assert throttle.refuse("rosa", "a") == 0  # the wait is over: this try is checked
    assert throttle.failed("rosa", "a") == (9, 60)  # a wrong one waits the longest
    moment[0] += 59.5
    assert throttle.refuse("rosa", "a") == 60  # still waiting: counted again
    moment[0] += 60
    assert throttle.refuse("rosa", "a") == 0  # waited and quiet for the longest wait: forgotten
    assert throttle.failed("rosa", "a") == (1, 0)


def test_a_pair_is_per_username_and_client():
    _, now = fake_seconds()
    throttle = logins.LoginThrottle(2, 900, now=now)
    for _ in range(5):
        throttle.failed("rosa", "stranger")
    assert throttle.refuse("rosa", "stranger") > 0
    assert throttle.refuse("rosa", "owner") == 0
    assert throttle.refuse("sam", "stranger") == 0


def test_a_success_or_a_quiet_spell_forgets_the_pair():
    moment, now = fake_seconds()
    throttle = logins.LoginThrottle(3, 60, now=now)
    throttle.failed("rosa", "a")
    throttle.failed("rosa", "a")
    throttle.succeeded("rosa", "a")
    assert throttle.failed("rosa", "a") == (1, 0)
    throttle.failed("rosa", "a")
    moment[0] += 60
    assert throttle.failed("rosa", "a") == (1, 0)  # quiet for the longest wait: forgotten
    assert len(throttle) == 1


def test_a_flood_of_made_up_usernames_is_bounded_and_keeps_the_pair_being_guessed():
    _, now = fake_seconds()
    throttle = logins.LoginThrottle(3, 900, now=now, max_entries=100)
    for _ in range(6):
        throttle.failed("rosa", "stranger")
    for number in range(5000):
        throttle.failed(f"made-up-{number}", "stranger")
    assert len(throttle) == 100
    assert throttle.refuse("rosa", "stranger") > 0


def test_counting_is_exact_across_threads():
    _, now = fake_seconds()
    throttle = logins.LoginThrottle(10**9, 900, now=now)
    threads = [threading.Thread(target=lambda: [throttle.failed("rosa", "a") for _ in range(500)])
               for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert throttle.failed("rosa", "a")[0] == 8 * 500 + 1


# -- logging in -------------------------------------------------------------------

def test_a_strangers_wrong_passwords_never_keep_the_owner_out(archive, clock, monkeypatch):
    made = accounts.create_staff_user(archive, "rosa", "observer", PASSWORD)
    checked = []
    real_check = logins.password_matches
    monkeypatch.setattr(logins, "password_matches", lambda *args: checked.append(1) or real_check(*args))
    for _ in range(3):
        with pytest.raises(BadCredentials):
            logins.authenticate_staff(archive, "rosa", "not the password", client="stranger")
    assert len(checked) == 3
    for _ in range(50):
        with pytest.raises(TooManyAttempts) as refused:
            logins.authenticate_staff(archive, "rosa", "not the password", client="stranger")
    assert refused.value.retry_after == 60
    with pytest.raises(TooManyAttempts):  # the right password is not even checked for the stranger
        logins.authenticate_staff(archive, "rosa", PASSWORD, client="stranger")
    assert len(checked) == 3  # a flood costs no hashing
    assert logins.authenticate_staff(archive, "rosa", PASSWORD, client="owner").id == made["id"]

    entries, _ = audit.list_entries(archive, 1, audit.AuditFilter(), limit=500)
    actions = [entry["action"] for entry in entries]
    assert actions.count("staff.login_failed") == 3  # checked failures only: a flood writes nothing
    assert actions.count("staff.login_throttled") == 1 and actions.count("staff.login") == 1
    assert not [entry for entry in entries if "stranger" in str(entry) or "owner" in str(entry)]


def test_the_wait_ends_and_the_right_password_then_works(archive, clock):
    accounts.create_staff_user(archive, "rosa", "observer", PASSWORD)
    for _ in range(3):
        with pytest.raises(BadCredentials):
            logins.authenticate_staff(archive, "rosa", "not the password", client="here")
    with pytest.raises(TooManyAttempts) as refused:
        logins.authenticate_staff(archive, "rosa", PASSWORD, client="here")
    clock.advance(refused.value.retry_after)
    assert logins.authenticate_staff(archive, "rosa", PASSWORD, client="here").username == "rosa"


def test_unknown_usernames_are_throttled_alike_and_seen_only_by_the_operator(archive):
    for _ in range(3):
        with pytest.raises(BadCredentials):
            logins.authenticate_staff(archive, "my secret password", "x" * 14, client="here")
    with pytest.raises(TooManyAttempts):
        logins.authenticate_staff(archive, "my secret password", "x" * 14, client="here")
    organisations_view, _ = audit.list_entries(archive, 1, audit.AuditFilter(action="staff.login_failed"))
    assert organisations_view == []
    operators_view, _ = audit.list_entries(archive, None, audit.AuditFilter(action="staff.login_failed"),
                                           operator=True)
    assert [(e["actor"], e["organisation_id"], e["detail"]["username"]) for e in operators_view] == \
        [("anonymous", None, "my secret password")] * 3
    with pytest.raises(ValueError):
        audit.list_entries(archive, None, audit.AuditFilter())


def test_nothing_about_logins_is_kept_on_disk(archive):
    accounts.create_staff_user(archive, "rosa", "observer", PASSWORD)
    for _ in range(6):
        with pytest.raises((BadCredentials, TooManyAttempts)):
            logins.authenticate_staff(archive, "rosa", "not the password", client="client-key-7f3a")
    assert archive.database.query("SELECT * FROM login_failures") == []
    data = b"".join(path.read_bytes() for path in archive.settings.data_dir.rglob("*") if path.is_file())
    assert b"client-key-7f3a" not in data


def test_a_wrong_current_password_counts_against_the_same_throttle(archive):
    rosa = accounts.create_staff_user(archive, "rosa", "observer", PASSWORD)
    for _ in range(3):
        with pytest.raises(InvalidInput) as wrong:
            logins.change_own_password(archive, rosa["id"], "not the password", "a new long passphrase", client="c")
        assert wrong.value.code == "wrong_current_password"
    with pytest.raises(TooManyAttempts):
        logins.change_own_password(archive, rosa["id"], PASSWORD, "a new long passphrase", client="c")
    with pytest.raises(TooManyAttempts):
        logins.authenticate_staff(archive, "rosa", PASSWORD, client="c")
    assert logins.authenticate_staff(archive, "rosa", PASSWORD, client="elsewhere").username == "rosa"


# -- own second factor and custodians' changes --------------------------------------

def _with_second_factor(archive, clock, staff_id: int) -> bytes:
    import base64

    secret = logins.start_totp_setup(archive, staff_id)["secret"]
    key = base64.b32decode(secret + "=" * (-len(secret) % 8))
    logins.confirm_totp(archive, staff_id, current_code(key, clock().timestamp()))
    return key


def test_removing_ones_own_second_factor_needs_a_fresh_code(archive, clock):
    rosa = accounts.create_staff_user(archive, "rosa", "observer", PASSWORD)
    key = _with_second_factor(archive, clock, rosa["id"])
    now = clock().timestamp()
    for code in (None, "12345", current_code(key, now)):  # the confirming code is spent
        with pytest.raises(WrongSecondFactor):
            logins.remove_own_totp(archive, rosa["id"], code, client="c")
    with pytest.raises(TooManyAttempts):  # wrong codes count like failed logins
        logins.remove_own_totp(archive, rosa["id"], current_code(key, now + 30), client="c")
    assert accounts.staff_account(archive, 1, rosa["id"])["totp_enabled"] is True
    assert logins.remove_own_totp(archive, rosa["id"], current_code(key, now + 30), client="elsewhere") is True
    assert accounts.staff_account(archive, 1, rosa["id"])["totp_enabled"] is False
    assert logins.authenticate_staff(archive, "rosa", PASSWORD, client="elsewhere").totp_enabled is False
    actions = [e["action"] for e in audit.list_entries(archive, 1, audit.AuditFilter(actor="staff:rosa"))[0]]
    assert "staff.totp_removed" in actions


def test_a_custodian_cannot_set_their_own_password_or_reset_their_own_second_factor(archive, clock):
    dana = accounts.create_staff_user(archive, "dana", "custodian", PASSWORD)
    _with_second_factor(archive, clock, dana["id"])
    before = archive.database.one("SELECT * FROM staff WHERE id = ?", [dana["id"]])
    for changes, what in (({"password": "a takeover password"}, "password"),
                          ({"reset_totp": True}, "second_factor"),
                          ({"role": "custodian", "password": "a takeover password"}, "password")):
        with pytest.raises(OwnAccountElsewhere) as refused:
            accounts.update_staff(archive, 1, dana["id"], changes, by=logins.staff_session(archive, dana["id"], None))
        assert refused.value.what == what and refused.value.code == "use_account_endpoint"
    assert archive.database.one("SELECT * FROM staff WHERE id = ?", [dana["id"]]) == before
    # Another custodian may, and it is audited.
    lee = accounts.create_staff_user(archive, "lee", "custodian", PASSWORD)
    accounts.update_staff(archive, 1, dana["id"], {"reset_totp": True, "password": "dana's new passphrase"},
                          by=logins.staff_session(archive, lee["id"], None))
    after = archive.database.one("SELECT * FROM staff WHERE id = ?", [dana["id"]])
    assert after["totp_enabled_at"] is None and after["session_generation"] == before["session_generation"] + 1
    entries = audit.list_entries(archive, 1, audit.AuditFilter(actor="staff:lee"))[0]
    assert {(e["action"], e["detail"]["username"]) for e in entries} >= {("staff.password_set", "dana"),
                                                                        ("staff.totp_reset", "dana")}


# -- password strength ----------------------------------------------------------------

@pytest.mark.parametrize("password", [
    "000000000000", "aaaaaaaaaaaaaaaaaaaa", "abababababab", "aaaabbbbcccc", "123412341234",
    "passwordpassword", "abc123abc123", "Sunshine!Sunshine!",
    "123456789012", "0987654321098", "abcdefghijklm", "qwertyuiopas", "QWERTYUIOPASDF",
    "1qaz2wsx3edc", "zyxwvutsrqponm",
    "password1234", "Password2026!", "iloveyou1234", "P@ssw0rd12345", "letmein!!2026", "welcome12345",
    "Witness Sync 2026", "witnesssync!!", "rosa-12345678", "  rosa  2026  ",
    "short", "", None, 123456789012, "\ud800" * 12, "x" * 1025,
])
def test_weak_passwords_are_refused(password):
    with pytest.raises(InvalidInput) as refused:
        accounts.check_new_password(password, username="rosa")
    assert refused.value.code == "weak_password"


@pytest.mark.parametrize("password", [
    "a long passphrase", "twelve chars ok", "correct horse battery staple", "Tr0ub4dor&3xyz",
    "pw-rosa-correct-horse", "4829 1047 5563 8120", "mississippi river boat", "das Passwort ist lang genug",
])
def test_reasonable_passwords_are_taken(password):
    assert accounts.check_new_password(password, username="rosa") == password
