"""Operator commands, through Flask's CLI runner."""

import pytest

from sync.domain import logins
from sync.errors import BadCredentials


def test_create_user_takes_the_password_from_the_environment(app, runner, monkeypatch):
    monkeypatch.setenv("WITNESS_PASSWORD", "a long enough password")
    result = runner.invoke(args=["witness", "create-user", "ana", "--role", "custodian"])
    assert result.exit_code == 0, result.output
    assert "created custodian ana" in result.output
    staff = logins.authenticate_staff(app.extensions["witness"], "ana", "a long enough password", client="test")
    assert staff.role == "custodian"
    with pytest.raises(BadCredentials):
        logins.authenticate_staff(app.extensions["witness"], "ana", "a wrong password!!", client="test")


def test_passwords_are_stored_as_argon2id(app, runner, monkeypatch):
    monkeypatch.setenv("WITNESS_PASSWORD", "a long enough password")
    runner.invoke(args=["witness", "create-user", "ben", "--role", "lawyer"])
    row = app.extensions["witness"].database.one("SELECT password_hash FROM staff WHERE username = 'ben'")
    assert row["password_hash"].startswith("$argon2id$")
    assert "a long enough password" not in row["password_hash"]


@pytest.mark.parametrize("args,password,message", [
    (["ana", "--role", "observer"], "short", "at least 12"),
    (["Bad Name", "--role", "observer"], "a long enough password", "Usernames"),
    (["ana", "--role", "admin"], "a long enough password", "admin"),
])
def test_create_user_refuses_bad_input(runner, monkeypatch, args, password, message):
    monkeypatch.setenv("WITNESS_PASSWORD", password)
    result = runner.invoke(args=["witness", "create-user", *args])
    assert result.exit_code != 0
    assert message in result.output


def test_duplicate_user_is_refused(runner, monkeypatch):
    monkeypatch.setenv("WITNESS_PASSWORD", "a long enough password")
    assert runner.invoke(args=["witness", "create-user", "cy", "--role", "observer"]).exit_code == 0
    again = runner.invoke(args=["witness", "create-user", "cy", "--role", "lawyer"])
    assert again.exit_code != 0 and "already exists" in again.output


def test_init_keys_prints_the_ids(app, runner):
    result = runner.invoke(args=["witness", "init-keys"])
    assert app.extensions["witness"].keys.hpke_key_id in result.output
