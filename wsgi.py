"""The only module-level app: `gunicorn wsgi:app` or `flask --app wsgi run`."""

import sys

from server import create_app
from sync.records import SchemaTooNew, UnknownSchema

try:
    app = create_app()
except (SchemaTooNew, UnknownSchema) as refused:
    # What the operator must do is the whole message; a traceback would bury it.
    sys.exit(f"witness: {refused}")
