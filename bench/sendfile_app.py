"""The peer of bench/media.py: the same bytes served by `flask.send_file`.

One file, named by `WITNESS_BENCH_FILE`, at `GET /file`, with
`conditional=True` (Range, If-Range, ETag, 206/416 done by werkzeug) and
nothing else: no token check, no database, no decryption. bench/media.py
serves it with the same `gunicorn.conf.py` as `wsgi:app`:

    WITNESS_BENCH_FILE=/path/to/plaintext gunicorn -c gunicorn.conf.py --pythonpath bench sendfile_app:app
"""

import os

from flask import Flask, send_file

app = Flask(__name__)
FILE = os.environ["WITNESS_BENCH_FILE"]


@app.get("/file")
def file():
    """The whole file, or the single range asked for."""
    return send_file(FILE, mimetype="video/mp4", conditional=True)


@app.get("/ping")
def ping():
    """Ready probe."""
    return "ok"
