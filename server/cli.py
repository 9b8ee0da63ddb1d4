"""Operator commands: `flask --app wsgi witness ...`."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click
from flask import current_app
from flask.cli import AppGroup

from sync.domain import accounts, audit, backup, finalize, reconcile
from sync.errors import InvalidInput, NotFound, WitnessError

witness = AppGroup("witness", help="Operate the Witness Sync server.")


def _archive():
    return current_app.extensions["witness"]


def _organisation_id(slug: str) -> int:
    try:
        return accounts.organisation_by_slug(_archive(), slug).id
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
    click.echo(f"created organisation {organisation.slug} ({organisation.name})")


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
    click.echo(f"server-wide chain head: entry {report.server_head_id} sha256 {report.server_head_sha256}; "
               f"{report.anchors} anchors of the recordings' chains")
    click.echo(f"transparency log: {report.log_leaves} leaves, each its entry's commitment; newest checkpoint "
               f"(size {report.log_checkpoint_size}) matches them")
    for note in report.notes:
        click.echo(f"note: {note}")
    click.echo("Record the head somewhere else (a notebook, an e-mail to yourself): a later check that ends "
               "at an older head means newest entries were removed.")


def _say(line: str) -> None:
    click.echo(line)


def _archive_step(name: str, run, failed_note: str):
    """Run backup, restore or move-archive: exit 2 on a refusal, 1 on a
    mismatch (with what was left behind), else print the summary line and
    return the summary."""
    try:
        summary = run()
    except backup.UsageProblem as exc:
        click.echo(f"{name} refused: {exc.message}", err=True)
        sys.exit(2)
    except (backup.Mismatch, WitnessError) as exc:
        click.echo(f"{name} FAILED: {exc.message}", err=True)
        click.echo(failed_note, err=True)
        sys.exit(1)
    click.echo(f"{name} complete in {summary.seconds:.1f} s: {summary.counts['recordings']} recordings, "
               f"{summary.counts['chunks']} chunks ({summary.chunk_bytes} bytes), "
               f"{summary.counts['audit']} audit entries, head entry {summary.audit_head['id']} "
               f"sha256 {summary.audit_head['sha256']}")
    return summary


@witness.command("backup")
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
def backup_command(folder: Path):
    """Back the archive up into FOLDER (new or empty) while the server serves:
    the records (a consistent snapshot) and every chunk they name, each
    chunk's SHA-256 and the audit chains checked; BACKUP.json is written last.
    Never the keys (back them up apart) nor copy bundles. Exits 1 naming a
    mismatch (and writes no BACKUP.json), 2 for a folder that is not empty."""
    summary = _archive_step("backup", lambda: backup.backup(_archive(), folder, _say),
                            f"{folder} holds an unfinished backup (no {backup.INDEX_FILE}); remove it.")
    click.echo(f"records sha256 {summary.records_sha256}; the keys are not in it: back "
               f"{_archive().settings.keys_dir} up apart.")


@witness.command("restore")
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
def restore_command(folder: Path):
    """Restore a backup FOLDER into WITNESS_DATA_DIR (which must hold no
    records; no server running on it) and the configured chunk store. Every
    check runs before anything is put in place; exits 1 naming a mismatch
    (nothing written), 2 when the data folder or the keys do not fit."""
    _archive_step("restore", lambda: backup.restore(_archive(), folder, _say),
                  "nothing was put into the data folder.")
    click.echo("copy bundles are not in a backup: a restored ready request's download answers "
               "bundle_not_ready until a new request builds a new one. Start the server with the same keys.")


@witness.command("move-archive")
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
def move_archive_command(folder: Path):
    """Move an embedded archive into PostgreSQL + S3: FOLDER is a backup
    `backup` made of it; run this with the new WITNESS_DATABASE_URL (new,
    empty database, no server on it) and WITNESS_CHUNK_STORE. Every check
    runs first; the rows commit only if the counts and audit chains verify
    in PostgreSQL. Exits 1 naming a mismatch (nothing kept), 2 when the
    target or the keys do not fit."""
    _archive_step("move-archive", lambda: backup.move_archive(_archive(), folder, _say),
                  "nothing was kept in the PostgreSQL records; chunks put were removed again.")
    click.echo("copy bundles are not moved: a ready request's download answers bundle_not_ready until a new "
               "request builds a new one. Start the nodes with the same keys.")
