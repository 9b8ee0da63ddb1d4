"""A real RFC 3161 time-stamping authority for tests: `openssl ts -reply`.

`OpensslTsa` makes, in a folder, a root CA (and optionally an intermediate),
a TSA certificate whose only extended key usage is `timeStamping`, marked
critical (openssl refuses to sign otherwise, FIELD-NOTES.md), and the
`[tsa_config1]` section openssl needs. `TsaHttpServer` answers POSTed
`application/timestamp-query` bodies with it on 127.0.0.1, and can be stopped
and started again on the same port to play a TSA that is down.

Run alone (`python -m tests.openssl_tsa FOLDER [--port N]`) it serves until
killed and prints its URL and CA file.
"""

from __future__ import annotations

import argparse
import secrets
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

POLICY = "1.3.6.1.4.1.4146.2.3"  # any OID will do; openssl needs one
_KEY_OPTIONS = {
    "ec": ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
    "rsa": ["-newkey", "rsa:2048"],
}
_EXTENSIONS = """\
[root]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash

[intermediate]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid

[tsa]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, nonRepudiation
extendedKeyUsage = {eku}timeStamping
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""


def _openssl(*args: str, cwd: Path, stdin: bytes | None = None) -> bytes:
    done = subprocess.run(["openssl", *args], cwd=cwd, input=stdin, capture_output=True)
    if done.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed:\n{done.stderr.decode(errors='replace')}")
    return done.stdout


class OpensslTsa:
    """A CA and a TSA made by openssl in `folder`.

    `key_type`: "ec" (P-256) or "rsa" (2048 bits). `intermediate`: the TSA
    certificate is issued by an intermediate CA under the root. `embed_chain`:
    the TSA puts its CA certificates into every token too (`certs=`).
    `critical_eku=False` makes a TSA certificate openssl itself refuses to
    sign with (useful only for its certificate and key).
    """

    def __init__(self, folder: Path, *, key_type: str = "ec", intermediate: bool = False,
                 embed_chain: bool = False, critical_eku: bool = True, name: str = "Test TSA"):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.key_type = key_type
        self._lock = threading.Lock()  # openssl ts -reply rewrites its serial file
        key = _KEY_OPTIONS[key_type]
        (self.folder / "extensions.cnf").write_text(
            _EXTENSIONS.format(eku="critical, " if critical_eku else ""))
        run = self._run
        run("req", "-x509", *key, "-nodes", "-keyout", "root.key", "-out", "root.pem", "-days", "3650",
            "-subj", f"/O={name}/CN={name} root", "-extensions", "root", "-config", "extensions.cnf")
        issuer = "root"
        if intermediate:
            self._issue("intermediate", f"/O={name}/CN={name} intermediate", issuer, key)
            issuer = "intermediate"
        self._issue("tsa", f"/O={name}/CN={name} authority", issuer, key)
        chain = [self.folder / "intermediate.pem"] if intermediate else []
        chain.append(self.root_pem)
        # What operators give the server as WITNESS_TSA_CA_FILE: the root,
        # and the intermediate too (tokens need not carry it).
        self.ca_file = self.folder / "ca.pem"
        self.ca_file.write_bytes(b"".join(path.read_bytes() for path in chain))
        (self.folder / "serial").write_text("01\n")
        self.config = self.folder / "tsa.cnf"
        self.config.write_text(
            "[tsa]\ndefault_tsa = tsa_config1\n\n[tsa_config1]\n"
            f"dir = {self.folder}\n"
            "serial = $dir/serial\n"
            "crypto_device = builtin\n"
            "signer_cert = $dir/tsa.pem\n"
            "signer_key = $dir/tsa.key\n"
            + ("certs = $dir/ca.pem\n" if embed_chain else "")
            + "signer_digest = sha256\n"
            f"default_policy = {POLICY}\n"
            "digests = sha256, sha384, sha512\n"
            "accuracy = secs:1\n"
            "ordering = no\n"
            "tsa_name = yes\n"
            "ess_cert_id_chain = no\n"
            "ess_cert_id_alg = sha256\n"
        )

    @property
    def root_pem(self) -> Path:
        return self.folder / "root.pem"

    @property
    def tsa_pem(self) -> Path:
        return self.folder / "tsa.pem"

    def _run(self, *args: str, stdin: bytes | None = None) -> bytes:
        return _openssl(*args, cwd=self.folder, stdin=stdin)

    def _issue(self, name: str, subject: str, issuer: str, key: list[str]) -> None:
        self._run("req", "-new", *key, "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subject)
        self._run("x509", "-req", "-in", f"{name}.csr", "-CA", f"{issuer}.pem", "-CAkey", f"{issuer}.key",
                  "-set_serial", str(secrets.randbits(63)), "-days", "3650",
                  "-extfile", "extensions.cnf", "-extensions", name, "-out", f"{name}.pem")

    def reply(self, query_der: bytes) -> bytes:
        """`openssl ts -reply` to a DER TimeStampReq: a DER TimeStampResp
        (a rejection, for a query openssl will not stamp)."""
        with self._lock:
            return self._run("ts", "-reply", "-config", str(self.config), "-queryfile", "/dev/stdin",
                             "-out", "/dev/stdout", stdin=query_der)

    def stamp(self, data: bytes) -> bytes:
        """A DER TimeStampResp over SHA-256 of `data`, asked for with
        `openssl ts -query -cert` (certReq true)."""
        with self._lock:
            (self.folder / "data.bin").write_bytes(data)
            query = self._run("ts", "-query", "-data", "data.bin", "-sha256", "-cert")
        return self.reply(query)


class _ReusingHTTPServer(ThreadingHTTPServer):
    allow_reuse_address = True  # start() again on the same port at once
    daemon_threads = True


class TsaHttpServer:
    """HTTP in front of an `OpensslTsa`: POST a TimeStampReq, get the reply.
    `stop()` closes the port (connections are refused, as with a TSA that is
    down); `start()` opens the same port again. `requests_seen` counts POSTs."""

    def __init__(self, tsa: OpensslTsa, port: int = 0):
        self.tsa = tsa
        self.port = port
        self.requests_seen = 0
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/tsa"

    def start(self) -> "TsaHttpServer":
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                owner.requests_seen += 1
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Content-Type") != "application/timestamp-query":
                    return self._answer(415, "text/plain", b"send application/timestamp-query\n")
                try:
                    reply = owner.tsa.reply(body)
                except RuntimeError as exc:
                    return self._answer(400, "text/plain", str(exc).encode())
                self._answer(200, "application/timestamp-reply", reply)

            def _answer(self, status: int, content_type: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):  # quiet test output
                pass

        self._httpd = _ReusingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="test-tsa", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join()
            self._httpd = self._thread = None


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve an openssl TSA over HTTP on 127.0.0.1.")
    parser.add_argument("folder", type=Path)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--key-type", choices=sorted(_KEY_OPTIONS), default="ec")
    args = parser.parse_args()
    server = TsaHttpServer(OpensslTsa(args.folder, key_type=args.key_type), args.port).start()
    print(f"url {server.url}\nca_file {server.tsa.ca_file}", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
