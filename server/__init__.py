"""HTTP only: the app factory, one blueprint per audience, the role
decorator and the one error mapping. Views parse, call `sync`, serialize."""

from __future__ import annotations

import logging
import os

from flask import Flask

from sync.archive import Archive
from sync.scheduler import start_background_jobs
from sync.settings import Settings

from . import devices, public, staff
from .auth import register_token_callbacks
from .cli import witness
from .errors import register_error_handlers
from .extensions import jwt


def create_app(test_config: dict | None = None) -> Flask:
    """Build the app. Settings come from `WITNESS_*` environment variables;
    `test_config` may hold `SETTINGS` (a `Settings`), `CLOCK`, and
    `BACKGROUND_JOBS` (default True: compete to run the scheduler)."""
    app = Flask(__name__)
    config = dict(test_config or {})
    settings = config.pop("SETTINGS", None) or Settings.from_env()
    archive = Archive(settings, **({"clock": config.pop("CLOCK")} if "CLOCK" in config else {}))
    app.extensions["witness"] = archive
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
    for blueprint in (public.bp, devices.bp, staff.bp):
        app.register_blueprint(blueprint)
    app.cli.add_command(witness)
    if app.config.get("BACKGROUND_JOBS", True) and not _is_cli_command():
        app.extensions["witness_jobs"] = start_background_jobs(archive)
    if not app.debug:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s")
    return app


def _is_cli_command() -> bool:
    # `flask --app wsgi witness ...` builds the app too; an operator command
    # must not become the scheduler leader and hold the lock while it runs.
    import sys

    argv = sys.argv
    return os.path.basename(argv[0]) in ("flask", "flask.exe") and "run" not in argv[1:]
