"""Operator commands: `flask --app wsgi witness ...`."""

from __future__ import annotations

import os
import sys

import click
from flask import current_app
from flask.cli import AppGroup

from sync import accounts, finalize, reconcile
from sync.errors import InvalidInput

witness = AppGroup("witness", help="Operate the Witness Sync server.")


def _archive():
    return current_app.extensions["witness"]


@witness.command("create-user")
@click.argument("username")
@click.option("--role", required=True, type=click.Choice(accounts.STAFF_ROLES), help="The account's one role.")
def create_user(username: str, role: str):
    """Create a staff account (password from WITNESS_PASSWORD, else prompted)."""
    password = os.environ.get("WITNESS_PASSWORD")
    if not password:
        if not sys.stdin.isatty():
            raise click.ClickException("Set WITNESS_PASSWORD or run in a terminal to be prompted.")
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        accounts.create_staff_user(_archive(), username, role, password, actor="operator")
    except InvalidInput as exc:
        raise click.ClickException(exc.message) from None
    click.echo(f"created {role} {username}")


@witness.command("init-keys")
def init_keys():
    """Make the server keys if missing and print their ids."""
    keys = _archive().keys
    click.echo(f"hpke key {keys.hpke_key_id}\nsigning key {keys.signing_key_id}\n"
               f"in {_archive().settings.keys_dir}")


@witness.command("enrollment-code")
@click.option("--note", default="", help="What the code is for (kept in the records).")
def enrollment_code(note: str):
    """Make a device enrollment code and print it."""
    click.echo(accounts.create_enrollment_code(_archive(), note))


@witness.command("finalize-due")
def finalize_due():
    """Finalize every recording that is complete or idle, now."""
    for recording_id, version in finalize.finalize_due_recordings(_archive()):
        click.echo(f"{recording_id} manifest version {version}")


@witness.command("reconcile")
def reconcile_command():
    """Make chunk files and records agree (also runs at start-up)."""
    report = reconcile.reconcile_storage(_archive())
    click.echo(f"temporary files removed: {report.temporaries_removed}\n"
               f"unacknowledged chunk files removed: {len(report.orphan_files_removed)}\n"
               f"chunks lost (file missing or damaged): {len(report.lost_chunks)}")
    for recording_id, index in report.lost_chunks:
        click.echo(f"  lost {recording_id} chunk {index}")
