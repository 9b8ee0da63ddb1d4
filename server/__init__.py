"""HTTP only: the app factory, one blueprint per audience, the role
decorator and the one error mapping. Views parse, call `sync`, serialize."""

from __future__ import annotations

import logging
import os

import click

from flask import Flask

from sync.archive import Archive
from sync.domain.scheduler import start_background_jobs
from sync.settings import Settings

from . import account, console, console_account, console_custodians, copies, custodians, devices, log, pages, public, recorder, staff
from . import health
from .auth import VerifiedTokens, register_token_callbacks
from .cli import witness
from .errors import register_error_handlers
from .extensions import jwt


def create_app(test_config: dict | None = None) -> Flask:
    """Build the app. Settings come from `WITNESS_*` environment variables;
    `test_config` may hold `SETTINGS` (a `Settings`), `CLOCK`, and
    `BACKGROUND_JOBS` (default True: compete to run the scheduler)."""
    # Pages (the staff console, the browser recorder) use server/templates and
    # server/static; every API route is under /v1/.
    app = Flask(__name__, static_folder="static", static_url_path="/static")
    config = dict(test_config or {})
    settings = config.pop("SETTINGS", None) or Settings.from_env()
    archive = Archive(settings, **({"clock": config.pop("CLOCK")} if "CLOCK" in config else {}))
    app.extensions["witness"] = archive
    app.extensions["witness_tokens"] = VerifiedTokens()
    app.config.update(
        JWT_SECRET_KEY=archive.keys.token_secret,
        JWT_ALGORITHM="HS256",
        JWT_TOKEN_LOCATION=["headers"],
        JWT_IDENTITY_CLAIM="sub",
        MAX_CONTENT_LENGTH=settings.max_chunk_bytes + 64 * 1024,
        JSON_SORT_KEYS=False,
    )
    app.config.update(config)
    jwt.init_app(app)
    register_token_callbacks()
    register_error_handlers(app)
    pages.configure(app)
    for blueprint in (public.bp, account.bp, devices.bp, staff.bp, copies.bp, custodians.bp, recorder.bp, console.bp,
                      console_custodians.bp, console_account.bp, log.bp):
        app.register_blueprint(blueprint)
    health.init_app(app)  # /healthz, /readyz, /metrics and the device metrics
    app.cli.add_command(witness)
    # Logging first: the scheduler thread may log the moment it starts.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s")
    if app.config.get("BACKGROUND_JOBS", settings.background_jobs) and not _is_cli_command():
        app.extensions["witness_jobs"] = start_background_jobs(archive)
    return app


def _is_cli_command() -> bool:
    """True inside `flask ... witness ...` and other operator commands, which
    build the app too but must not compete to run the scheduler; False when
    serving (gunicorn, or `flask run`)."""
    if os.environ.get("FLASK_RUN_FROM_CLI") != "true":
        return False
    context = click.get_current_context(silent=True)
    while context is not None:
        if context.info_name == "run":
            return False
        context = context.parent
    return True
