"""`witness-serve`: the server as it is meant to face the public, nginx in
front of two gunicorn pools, started and stopped as one.

    witness-serve            (scripts/serve runs it)

- nginx (`deploy/nginx.conf`, rendered into a run folder) listens on
  `WITNESS_BIND` (default `127.0.0.1:8000`), with TLS (HTTP/2 and HTTP/1.1)
  when `WITNESS_TLS_CERT` and `WITNESS_TLS_KEY` are set. It buffers every
  request body, times out slow clients, limits per address in memory and
  answers its own errors as JSON.
- The ingest pool (`WITNESS_WORKERS` × `WITNESS_THREADS`) serves the device
  routes; the staff pool (`WITNESS_STAFF_WORKERS` × `WITNESS_STAFF_THREADS`),
  at CPU priority `nice` 10, serves everything else and runs the background
  jobs. Both listen on unix sockets in the run folder only, which nothing
  but nginx reaches.
- nginx's error log comes back through a unix socket and is printed with
  every client address removed (no client address is written to any log).

If any of the three stops, the others are stopped and `witness-serve` exits
non-zero, so a supervisor (systemd, docs/operations.md) starts it again.
SIGTERM or SIGINT stops all three gracefully; SIGHUP re-reads the TLS
certificate and key (after a renewal) without dropping a connection. `gunicorn wsgi:app` and
`flask --app wsgi run` still serve the app without a front door.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Mapping

from sync.settings import Settings

PROJECT_ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = PROJECT_ROOT / "deploy" / "nginx.conf"
GUNICORN_CONF = PROJECT_ROOT / "gunicorn.conf.py"
STAFF_POOL_NICENESS = 10


@dataclass(frozen=True)
class AddressLimits:
    """nginx's limits per client address (docs/operations.md explains each).

    `*_rate` is requests per second sustained, `*_burst` how many may come
    at once beyond it; past the burst nginx answers 429 with Retry-After at
    once (nothing waits in a queue). Registrations: 1,000 phones behind one
    carrier-NAT address all register the moment officers arrive (burst
    1,200), while a flood from one address is held to 5 a second."""

    registration_rate: int = 5
    registration_burst: int = 1200
    recording_rate: int = 10
    recording_burst: int = 2000
    login_rate: int = 2
    login_burst: int = 20
    staff_rate: int = 50
    staff_burst: int = 400
    connections_per_address: int = 4096

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "AddressLimits":
        """Each field may be set as `WITNESS_LIMIT_<FIELD>` (a positive
        whole number). Raises `ValueError` naming a malformed variable."""
        values = {}
        for field in fields(cls):
            name = "WITNESS_LIMIT_" + field.name.upper()
            raw = env.get(name)
            if raw in (None, ""):
                continue
            if not raw.isdigit() or int(raw) <= 0:
                raise ValueError(f"{name} must be a positive whole number, not {raw!r}")
            values[field.name] = int(raw)
        return cls(**values)


@dataclass(frozen=True)
class FrontDoorConfig:
    """What `witness-serve` needs beyond the app's own `Settings`."""

    listen_host: str
    listen_port: int
    tls_cert: Path | None
    tls_key: Path | None
    run_dir: Path | None
    ingest_workers: int
    ingest_threads: int
    staff_workers: int
    staff_threads: int
    limits: AddressLimits
    access_log: str
    proxy_protocol_from: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "FrontDoorConfig":
        """Read `WITNESS_BIND`, `WITNESS_TLS_CERT`/`_KEY`, `WITNESS_RUN_DIR`,
        the pool sizes, `WITNESS_LIMIT_*` and `WITNESS_ACCESS_LOG` (a file
        for nginx's JSON access log; default standard output; `off`).
        Raises `ValueError` naming what is wrong."""
        host, port = parse_bind(env.get("WITNESS_BIND") or "127.0.0.1:8000")
        cert, key = env.get("WITNESS_TLS_CERT") or None, env.get("WITNESS_TLS_KEY") or None
        if bool(cert) != bool(key):
            raise ValueError("set both WITNESS_TLS_CERT and WITNESS_TLS_KEY, or neither")
        for name, value in (("WITNESS_TLS_CERT", cert), ("WITNESS_TLS_KEY", key)):
            if value and not os.access(value, os.R_OK):
                raise ValueError(f"{name}={value!r} is not a readable file")
        cores = os.cpu_count() or 1
        return cls(
            listen_host=host, listen_port=port,
            tls_cert=Path(cert).resolve() if cert else None, tls_key=Path(key).resolve() if key else None,
            run_dir=Path(env["WITNESS_RUN_DIR"]) if env.get("WITNESS_RUN_DIR") else None,
            ingest_workers=_whole(env, "WITNESS_WORKERS", min(4, cores + 1)),
            ingest_threads=_whole(env, "WITNESS_THREADS", 8),
            staff_workers=_whole(env, "WITNESS_STAFF_WORKERS", 2),
            staff_threads=_whole(env, "WITNESS_STAFF_THREADS", 4),
            limits=AddressLimits.from_env(env),
            access_log=env.get("WITNESS_ACCESS_LOG") or "/dev/stdout",
            proxy_protocol_from=parse_networks(env.get("WITNESS_PROXY_PROTOCOL_FROM") or ""),
        )


def parse_networks(text: str) -> tuple[str, ...]:
    """`WITNESS_PROXY_PROTOCOL_FROM`: comma-separated addresses or networks
    (`10.0.0.5`, `10.0.0.0/24`, `fd00::/8`) of the balancers in front.
    Raises `ValueError` for anything else."""
    networks = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        try:
            networks.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError:
            raise ValueError(f"WITNESS_PROXY_PROTOCOL_FROM holds {item!r}, which is not an address or a "
                             "network such as 10.0.0.0/24") from None
    return tuple(networks)


def parse_bind(bind: str) -> tuple[str, int]:
    """`host:port`, `[v6 address]:port` or `port` -> (host, port). Raises
    `ValueError` for anything else."""
    match = re.fullmatch(r"(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9.\-]+))?:?(\d{1,5})", bind.strip())
    if not match or not 0 < int(match.group(3)) < 65536 or (":" in bind and bind.count(":") > 1 and "[" not in bind):
        raise ValueError(f"WITNESS_BIND must be host:port (or [v6]:port), not {bind!r}")
    host = match.group(1) or match.group(2) or "127.0.0.1"
    return host, int(match.group(3))


def render_nginx_conf(config: FrontDoorConfig, settings: Settings, run_dir: Path) -> str:
    """deploy/nginx.conf with its @@NAME@@ values filled in for this run."""
    host = f"[{config.listen_host}]" if ":" in config.listen_host else config.listen_host
    listen = f"{host}:{config.listen_port}"
    tls = ""
    if config.tls_cert:
        listen += " ssl http2"
        tls = "\n".join(f"        {line}" for line in (
            f"ssl_certificate {config.tls_cert};",
            f"ssl_certificate_key {config.tls_key};",
            "ssl_protocols TLSv1.2 TLSv1.3;",
            "ssl_prefer_server_ciphers off;",
            "ssl_session_cache shared:witness_tls:10m;",
            "ssl_session_timeout 1d;",
            "ssl_session_tickets off;",
        ))
    # Behind TCP balancers (several nodes): every connection starts with a
    # PROXY protocol header naming the phone's address, which nginx takes
    # as the client's (limits, X-Real-IP) from the balancers' addresses only.
    real_ip = ""
    if config.proxy_protocol_from:
        listen += " proxy_protocol"
        real_ip = "\n".join([f"        set_real_ip_from {network};" for network in config.proxy_protocol_from]
                            + ["        real_ip_header proxy_protocol;"])
    # Run as root (a container, CI), nginx's workers drop to nobody; run as
    # anyone else (systemd's witness user), they stay that user.
    user = "user nobody nogroup;" if os.geteuid() == 0 else ""
    access_log = "off" if config.access_log == "off" else f"{config.access_log} witness_json"
    values = {
        "USER": user, "RUN_DIR": str(run_dir), "LISTEN": listen, "TLS": tls, "REAL_IP": real_ip,
        "ACCESS_LOG": access_log,
        "MAX_BODY": str(settings.max_chunk_bytes + 64 * 1024),
        "CONNECTIONS_PER_ADDRESS": str(config.limits.connections_per_address),
    }
    for field in fields(AddressLimits):
        values[field.name.upper()] = str(getattr(config.limits, field.name))
    text = TEMPLATE.read_text()
    for name, value in values.items():
        text = text.replace(f"@@{name}@@", value)
    left = re.findall(r"@@[A-Z_]+@@", text)
    if left:
        raise ValueError(f"deploy/nginx.conf has values witness-serve does not fill: {sorted(set(left))}")
    return text


def find_nginx() -> str:
    """The nginx binary (Debian keeps it in /usr/sbin, which may not be on
    PATH). Raises `FileNotFoundError` saying how to get it."""
    found = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx")
                                           if os.access(p, os.X_OK)), None)
    if not found:
        raise FileNotFoundError("nginx is not installed: run scripts/bootstrap (or apt-get install nginx)")
    return found


# Addresses in nginx's error lines: "client: 1.2.3.4", any IPv4 or IPv6
# address, and the request line's query string (it may hold an enrollment
# code) and referrer.
_CLIENT = re.compile(r",? ?client: [^,]*")
_IPV4 = re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b")
# Three or more colons, or "::": a clock time (03:22:01) has two.
_IPV6 = re.compile(r"\[?(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){3,7}[0-9A-Fa-f]{0,4}(?![\w:])\]?(?::\d+)?"
                   r"|\[?(?<![\w:])[0-9A-Fa-f]{0,4}::(?:[0-9A-Fa-f]{0,4}:?)*(?![\w:])\]?(?::\d+)?")
_QUERY = re.compile(r'(request: "\S+ [^?" ]*)\?[^" ]*')
_REFERRER = re.compile(r',? ?referrer: "[^"]*"')
_CODE_IN_PATH = re.compile(r"(/(?:v1|console)/enrollment-codes/)[^/\s\"?]+")
# syslog's own header, "<PRI>Mon dd hh:mm:ss tag: ": nginx's line has its time.
_SYSLOG_HEADER = re.compile(r"^<\d+>(?:\w{3} [ \d]\d \d\d:\d\d:\d\d )?(?:[\w.-]+: )?")


def scrub_log_line(line: str) -> str:
    """An nginx error-log line with every client address, query string,
    referrer and enrollment code removed."""
    line = _SYSLOG_HEADER.sub("", line)
    line = _CLIENT.sub("", line)
    line = _QUERY.sub(r"\1", line)
    line = _REFERRER.sub("", line)
    line = _CODE_IN_PATH.sub(r"\1{code}", line)
    line = _IPV4.sub("<address>", line)
    return _IPV6.sub("<address>", line)


class _LogRelay(threading.Thread):
    """Receives nginx's error log (syslog datagrams on a unix socket) and
    prints each line to standard error, scrubbed."""

    def __init__(self, path: Path):
        super().__init__(name="nginx-log", daemon=True)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        os.chmod(path, 0o666)  # nginx's workers may run as another user

    def run(self) -> None:
        while True:
            try:
                data = self.sock.recv(65536)
            except OSError:
                return
            line = scrub_log_line(data.decode("utf-8", "replace").rstrip("\n"))
            print(line, file=sys.stderr, flush=True)


class FrontDoor:
    """The three processes of one `witness-serve`, started and stopped as one."""

    def __init__(self, config: FrontDoorConfig, settings: Settings, environ: Mapping[str, str]):
        self.config, self.settings, self.environ = config, settings, dict(environ)
        self.processes: dict[str, subprocess.Popen] = {}
        self._own_run_dir = config.run_dir is None
        self.run_dir = config.run_dir or Path(tempfile.mkdtemp(prefix="witness-run-"))
        self._stopping = False
        self._reload_wanted = False

    def start(self) -> None:
        """Render the configuration, start both pools, wait for their
        sockets, check and start nginx. Raises `RuntimeError` naming what
        failed (the others are stopped first)."""
        run = self.run_dir
        run.mkdir(parents=True, exist_ok=True)
        # 0711: nginx's workers (nobody, when started as root) reach the
        # sockets by their names but cannot list the folder.
        os.chmod(run, 0o711 if os.geteuid() == 0 else 0o700)
        for stale in ("ingest.sock", "staff.sock", "nginx-log.sock", "nginx.pid"):
            (run / stale).unlink(missing_ok=True)
        metrics = run / "metrics"
        shutil.rmtree(metrics, ignore_errors=True)
        metrics.mkdir(mode=0o700)
        conf = run / "nginx.conf"
        conf.write_text(render_nginx_conf(self.config, self.settings, run))
        self.relay = _LogRelay(run / "nginx-log.sock")
        self.relay.start()

        # nginx writes the request log; the pools would only repeat it.
        env = {
            **{k: v for k, v in self.environ.items() if k != "WITNESS_ACCESS_LOG"},
            # The pools run elsewhere than the caller's folder: make the
            # data and key folders absolute, as the caller meant them.
            "WITNESS_DATA_DIR": str(self.settings.data_dir.resolve()),
            "WITNESS_KEYS_DIR": str(self.settings.keys_dir.resolve()),
            "PROMETHEUS_MULTIPROC_DIR": str(metrics),
        }
        try:
            self._start_pool("ingest", self.config.ingest_workers, self.config.ingest_threads,
                             {**env, "WITNESS_BACKGROUND_JOBS": "false", "WITNESS_POOL": "ingest"}, nice=0)
            self._start_pool("staff", self.config.staff_workers, self.config.staff_threads,
                             {**env, "WITNESS_POOL": "staff"}, nice=STAFF_POOL_NICENESS)
            self._wait_for_sockets(("ingest.sock", "staff.sock"))
            nginx = find_nginx()
            base = [nginx, "-e", "stderr", "-p", str(run), "-c", str(conf)]
            check = subprocess.run([*base, "-t", "-q"], capture_output=True, text=True)
            if check.returncode != 0:
                raise RuntimeError("nginx refused its configuration:\n" + scrub_log_line(check.stderr))
            # -e /dev/null: once running, nginx logs only where its
            # configuration says (the scrubbing relay); the check above
            # already showed any start-up error.
            running = [nginx, "-e", "/dev/null", "-p", str(run), "-c", str(conf), "-g", "daemon off;"]
            self.processes["nginx"] = subprocess.Popen(running)
        except BaseException:
            self.stop()
            raise
        scheme = "https" if self.config.tls_cert else "http"
        print(f"witness-serve: listening on {scheme}://{self._display_address()} (nginx; pools on {run})",
              file=sys.stderr, flush=True)

    def _display_address(self) -> str:
        host = self.config.listen_host
        return f"[{host}]:{self.config.listen_port}" if ":" in host else f"{host}:{self.config.listen_port}"

    def _start_pool(self, name: str, workers: int, threads: int, env: dict, *, nice: int) -> None:
        command = [sys.executable, "-m", "gunicorn", "wsgi:app", "--config", str(GUNICORN_CONF),
                   "--chdir", str(PROJECT_ROOT), "--bind", f"unix:{self.run_dir / (name + '.sock')}",
                   "--workers", str(workers), "--threads", str(threads)]
        self.processes[name] = subprocess.Popen(command, env=env, cwd=PROJECT_ROOT,
                                                preexec_fn=(lambda: os.nice(nice)) if nice else None)

    def _wait_for_sockets(self, names, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise RuntimeError(f"the {name} pool exited at start-up (code {process.returncode})")
            if all((self.run_dir / name).exists() for name in names):
                return
            time.sleep(0.05)
        raise RuntimeError(f"the pools did not open their sockets within {timeout:.0f} s")

    def wait(self) -> int:
        """Block until a signal stops the front door (exit code 0) or one of
        its processes stops by itself (the others are stopped; code 1)."""
        while not self._stopping:
            if self._reload_wanted:
                self._reload_wanted = False
                self.reload()
            for name, process in self.processes.items():
                if process.poll() is not None:
                    print(f"witness-serve: {name} stopped (code {process.returncode}); stopping the rest",
                          file=sys.stderr, flush=True)
                    self.stop()
                    return 1
            time.sleep(0.2)
        return 0

    def reload(self) -> None:
        """Render the configuration again and have nginx load it (SIGHUP:
        new workers with the new certificate, old ones finish their
        requests). A configuration nginx refuses is reported and the running
        one kept."""
        conf = self.run_dir / "nginx.conf"
        candidate = self.run_dir / "nginx.conf.new"
        candidate.write_text(render_nginx_conf(self.config, self.settings, self.run_dir))
        check = subprocess.run([find_nginx(), "-e", "stderr", "-p", str(self.run_dir), "-c", str(candidate), "-t", "-q"],
                               capture_output=True, text=True)
        if check.returncode != 0:
            print("witness-serve: reload refused, the running configuration stays:\n" + scrub_log_line(check.stderr),
                  file=sys.stderr, flush=True)
            candidate.unlink(missing_ok=True)
            return
        candidate.replace(conf)
        self.processes["nginx"].send_signal(signal.SIGHUP)
        print("witness-serve: reloaded nginx (certificate and key read again)", file=sys.stderr, flush=True)

    def stop(self, timeout: float = 25.0) -> None:
        """Stop nginx (graceful: SIGQUIT) and both pools (SIGTERM), then
        kill whatever is left after `timeout` seconds."""
        self._stopping = True
        signals = {"nginx": signal.SIGQUIT}
        for name, process in self.processes.items():
            if process.poll() is None:
                process.send_signal(signals.get(name, signal.SIGTERM))
        deadline = time.monotonic() + timeout
        for process in self.processes.values():
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._own_run_dir:
            shutil.rmtree(self.run_dir, ignore_errors=True)


def _whole(env, name, default):
    raw = env.get(name)
    if raw in (None, ""):
        return default
    if not raw.isdigit() or int(raw) <= 0:
        raise ValueError(f"{name} must be a positive whole number, not {raw!r}")
    return int(raw)


def main(argv: list[str] | None = None) -> int:
    """Entry point of `witness-serve`. Exits 2 with a clear message when the
    configuration is wrong, 1 when a part stops by itself."""
    if argv is None:
        argv = sys.argv[1:]
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    if argv:
        print(f"witness-serve takes no arguments (got {' '.join(argv)}); configure it with WITNESS_* variables "
              "(docs/operations.md)", file=sys.stderr)
        return 2
    try:
        settings = Settings.from_env()
        config = FrontDoorConfig.from_env(os.environ)
        find_nginx()
    except (ValueError, FileNotFoundError) as exc:
        print(f"witness-serve: {exc}", file=sys.stderr)
        return 2
    door = FrontDoor(config, settings, os.environ)

    def _stop(signum, _frame):
        door._stopping = True

    def _reload(signum, _frame):
        door._reload_wanted = True

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _stop)
    signal.signal(signal.SIGHUP, _reload)
    try:
        door.start()
    except (RuntimeError, OSError, ValueError) as exc:
        print(f"witness-serve: {exc}", file=sys.stderr)
        return 1
    code = door.wait()
    door.stop()
    return code


if __name__ == "__main__":
    sys.exit(main())
