"""Operator commands: `flask --app wsgi witness ...`."""

from __future__ import annotations

import json
import os
import sys

import click
from flask import current_app
from flask.cli import AppGroup

from sync import accounts, audit, finalize, reconcile
from sync.errors import InvalidInput, NotFound

witness = AppGroup("witness", help="Operate the Witness Sync server.")


def _archive():
    return current_app.extensions["witness"]


def _organisation_id(slug: str) -> int:
    try:
        return accounts.organisation_by_slug(_archive(), slug)["id"]
    except NotFound as exc:
        raise click.ClickException(exc.message) from None


_ORGANISATION = click.option("--organisation", "organisation", default="default", show_default=True,
                             help="The organisation's short name (see `witness organisations`).")


@witness.command("create-organisation")
@click.argument("slug")
@click.option("--name", required=True, help="The organisation's full name.")
def create_organisation(slug: str, name: str):
    """Create an organisation (SLUG: its short name, e.g. nlg-chicago)."""
    try:
        organisation = accounts.create_organisation(_archive(), slug, name)
    except InvalidInput as exc:
        raise click.ClickException(exc.message) from None
    click.echo(f"created organisation {organisation['slug']} ({organisation['name']})")


@witness.command("organisations")
def organisations():
    """List the organisations on this server."""
    for row in accounts.list_organisations(_archive()):
        click.echo(f"{row['slug']}\t{row['name']}\t{row['staff']} staff\t{row['devices']} devices")


@witness.command("create-user")
@click.argument("username")
@click.option("--role", required=True, type=click.Choice(accounts.STAFF_ROLES), help="The account's one role.")
@_ORGANISATION
def create_user(username: str, role: str, organisation: str):
    """Create a staff account (password from WITNESS_PASSWORD, else prompted)."""
    organisation_id = _organisation_id(organisation)
    password = os.environ.get("WITNESS_PASSWORD")
    if not password:
        if not sys.stdin.isatty():
            raise click.ClickException("Set WITNESS_PASSWORD or run in a terminal to be prompted.")
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        accounts.create_staff_user(_archive(), username, role, password, organisation_id=organisation_id)
    except InvalidInput as exc:
        raise click.ClickException(exc.message) from None
    click.echo(f"created {role} {username} in {organisation}")


@witness.command("init-keys")
def init_keys():
    """Make the server keys if missing and print their ids."""
    keys = _archive().keys
    click.echo(f"hpke key {keys.hpke_key_id}\nsigning key {keys.signing_key_id}\n"
               f"in {_archive().settings.keys_dir}")


@witness.command("enrollment-code")
@click.option("--note", default="", help="What the code is for (kept in the records).")
@_ORGANISATION
def enrollment_code(note: str, organisation: str):
    """Make a device enrollment code for an organisation and print it."""
    try:
        code = accounts.create_enrollment_code(_archive(), note, organisation_id=_organisation_id(organisation))
    except InvalidInput as exc:
        raise click.ClickException(exc.message) from None
    click.echo(code["code"])


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


@witness.command("audit-log")
@click.option("--organisation", "organisation", default=None,
              help="Only this organisation's entries (default: every entry, server-wide ones included).")
@click.option("--action", default=None, help="Only entries of this action, e.g. staff.login_failed.")
@click.option("--actor", default=None, help="Only entries by this actor, e.g. anonymous or staff:rosa.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
def audit_log(organisation: str | None, action: str | None, actor: str | None, limit: int):
    """Print audit entries, newest first, one JSON object a line. Only the
    operator sees server-wide entries (failed logins under unknown
    usernames); custodians see their organisation's."""
    organisation_id = _organisation_id(organisation) if organisation else None
    entries, _ = audit.list_entries(_archive(), organisation_id, audit.AuditFilter(action=action, actor=actor),
                                    limit=limit, operator=True)
    for entry in entries:
        click.echo(json.dumps(entry, ensure_ascii=False, sort_keys=True))


@witness.command("audit-verify")
def audit_verify():
    """Check the whole audit log's hash chain; name the first broken entry."""
    report = audit.verify_chain(_archive())
    if not report.ok:
        click.echo(f"BROKEN at entry {report.broken_entry_id}: {report.problem}", err=True)
        click.echo(f"checked {report.entries} entries before stopping", err=True)
        sys.exit(1)
    click.echo(f"audit log intact: {report.entries} entries, {report.recordings} recordings' custody chains")
    click.echo(f"head: entry {report.head_id or 0} sha256 {report.head_sha256}")
    for note in report.notes:
        click.echo(f"note: {note}")
    click.echo("Record the head somewhere else (a notebook, an e-mail to yourself): a later check that ends "
               "at an older head means newest entries were removed.")
