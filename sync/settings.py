"""Configuration, read from `WITNESS_*` environment variables with safe
defaults: a plain start needs none of them."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

DEFAULT_MAX_CHUNK_BYTES = 4 * 1024 * 1024
DEFAULT_MIN_FREE_BYTES = 1024 ** 3  # 1 GiB
MIN_METRICS_TOKEN_CHARS = 16


@dataclass(frozen=True)
class Settings:
    """Everything the domain needs to know about its surroundings."""

    data_dir: Path
    keys_dir: Path
    idle_finalize_seconds: float = 60.0
    max_chunk_bytes: int = DEFAULT_MAX_CHUNK_BYTES
    open_enrollment: bool = True
    scheduler_interval_seconds: float = 1.0
    # How often the leader anchors the recordings' audit chains in the
    # server-wide one (sync/domain/audit.py), when any grew.
    audit_anchor_seconds: float = 10.0
    # The transparency log (sync/domain/transparency.py): its origin line
    # (None: derived from its key) and how often the leader signs a checkpoint.
    log_origin: str | None = None
    log_checkpoint_seconds: float = 5.0
    # Witnesses that cosign its checkpoints: (add-checkpoint base URL, vkey).
    log_witnesses: tuple[tuple[str, str], ...] = ()
    device_access_minutes: int = 15
    device_refresh_days: int = 365
    staff_access_minutes: int = 15
    staff_refresh_hours: int = 12
    require_custodian_totp: bool = False
    login_max_failures: int = 5
    login_lockout_seconds: int = 900
    totp_issuer: str = "Witness Sync"
    # External RFC 3161 TSAs (one URL, or several separated by commas, asked
    # in that order) whose tokens are kept beside the built-in one's, and the
    # PEM file of the certificates their tokens chain to (every root).
    tsa_url: str | None = None
    tsa_ca_file: Path | None = None
    # Below this much free disk, new recordings are refused (507); chunks of
    # recordings already started are still taken until the disk is full.
    min_free_bytes: int = DEFAULT_MIN_FREE_BYTES
    # Devices that registered this long ago and never made a recording are
    # deleted by the scheduler (anonymous registration floods).
    unused_device_expiry_hours: float = 24.0
    # Per-device token buckets, per worker process (server/device_limits.py).
    device_request_burst: int = 500
    device_requests_per_second: float = 50.0
    device_recording_burst: int = 30
    device_recording_interval_seconds: float = 10.0
    # GET /metrics answers only with this bearer token; None: not served.
    metrics_token: str | None = field(default=None, repr=False)
    # False in the front door's ingest pool: only the staff pool competes to
    # run the scheduler, so bundle builds never take an upload's CPU.
    background_jobs: bool = True
    # Where chunks and copy bundles live: None for files under data_dir, or
    # s3://bucket/prefix (sync/s3.py) at s3_endpoint_url (None: AWS itself).
    chunk_store: str | None = None
    s3_endpoint_url: str | None = None
    # Where the records live: None for SQLite in data_dir, or a
    # postgresql:// URL (sync/records/postgres.py); the leader lock follows.
    database_url: str | None = field(default=None, repr=False)

    @property
    def tsa_urls(self) -> tuple[str, ...]:
        """The external TSAs, in the order they are asked (`WITNESS_TSA_URL`)."""
        return _split_urls(self.tsa_url)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides) -> "Settings":
        """Build settings from `environ` (default `os.environ`), then apply
        `overrides`. Raises `ValueError` naming the variable that is malformed."""
        env = os.environ if environ is None else environ
        cwd = Path.cwd()
        values = dict(
            data_dir=Path(env.get("WITNESS_DATA_DIR") or cwd / "witness-data"),
            keys_dir=Path(env.get("WITNESS_KEYS_DIR") or cwd / "witness-keys"),
            idle_finalize_seconds=_number(env, "WITNESS_IDLE_FINALIZE_SECONDS", 60.0, float),
            max_chunk_bytes=_number(env, "WITNESS_MAX_CHUNK_BYTES", DEFAULT_MAX_CHUNK_BYTES, int),
            open_enrollment=_flag(env, "WITNESS_OPEN_ENROLLMENT", True),
            scheduler_interval_seconds=_number(env, "WITNESS_SCHEDULER_INTERVAL_SECONDS", 1.0, float),
            audit_anchor_seconds=_number(env, "WITNESS_AUDIT_ANCHOR_SECONDS", 10.0, float),
            log_origin=env.get("WITNESS_LOG_ORIGIN") or None,
            log_checkpoint_seconds=_number(env, "WITNESS_LOG_CHECKPOINT_SECONDS", 5.0, float),
            log_witnesses=_witnesses(env.get("WITNESS_LOG_WITNESSES", "")),
            require_custodian_totp=_flag(env, "WITNESS_REQUIRE_CUSTODIAN_TOTP", False),
            login_max_failures=_number(env, "WITNESS_LOGIN_MAX_FAILURES", 5, int),
            login_lockout_seconds=_number(env, "WITNESS_LOGIN_LOCKOUT_SECONDS", 900, int),
            totp_issuer=env.get("WITNESS_TOTP_ISSUER") or "Witness Sync",
            tsa_url=env.get("WITNESS_TSA_URL") or None,
            tsa_ca_file=Path(env["WITNESS_TSA_CA_FILE"]) if env.get("WITNESS_TSA_CA_FILE") else None,
            min_free_bytes=_number(env, "WITNESS_MIN_FREE_BYTES", DEFAULT_MIN_FREE_BYTES, int),
            unused_device_expiry_hours=_number(env, "WITNESS_UNUSED_DEVICE_EXPIRY_HOURS", 24.0, float),
            device_request_burst=_number(env, "WITNESS_DEVICE_REQUEST_BURST", 500, int),
            device_requests_per_second=_number(env, "WITNESS_DEVICE_REQUESTS_PER_SECOND", 50.0, float),
            device_recording_burst=_number(env, "WITNESS_DEVICE_RECORDING_BURST", 30, int),
            device_recording_interval_seconds=_number(env, "WITNESS_DEVICE_RECORDING_INTERVAL_SECONDS", 10.0, float),
            metrics_token=env.get("WITNESS_METRICS_TOKEN") or None,
            background_jobs=_flag(env, "WITNESS_BACKGROUND_JOBS", True),
            chunk_store=env.get("WITNESS_CHUNK_STORE") or None,
            s3_endpoint_url=env.get("WITNESS_S3_ENDPOINT_URL") or None,
            database_url=env.get("WITNESS_DATABASE_URL") or None,
        )
        values.update(overrides)
        settings = cls(**values)
        if settings.data_dir.resolve() == settings.keys_dir.resolve():
            raise ValueError("WITNESS_KEYS_DIR must not be WITNESS_DATA_DIR: keys live apart from data")
        if settings.metrics_token is not None and len(settings.metrics_token) < MIN_METRICS_TOKEN_CHARS:
            raise ValueError(f"WITNESS_METRICS_TOKEN must be at least {MIN_METRICS_TOKEN_CHARS} characters: "
                             "it is the only thing between the public and GET /metrics")
        if settings.chunk_store is not None and not settings.chunk_store.startswith("s3://"):
            raise ValueError(f"WITNESS_CHUNK_STORE must be s3://bucket/prefix (or unset for files under "
                             f"WITNESS_DATA_DIR), not {settings.chunk_store!r}")
        if settings.s3_endpoint_url is not None:
            if not settings.s3_endpoint_url.startswith(("http://", "https://")):
                raise ValueError(f"WITNESS_S3_ENDPOINT_URL must be an http:// or https:// URL, "
                                 f"not {settings.s3_endpoint_url!r}")
            if settings.chunk_store is None:
                raise ValueError("WITNESS_S3_ENDPOINT_URL is set but WITNESS_CHUNK_STORE is not: chunks would "
                                 "stay in local files; set WITNESS_CHUNK_STORE=s3://bucket/prefix")
        if settings.database_url is not None and not settings.database_url.startswith(
                ("postgresql://", "postgres://")):
            raise ValueError("WITNESS_DATABASE_URL must be a postgresql:// URL (or unset for SQLite in "
                             "WITNESS_DATA_DIR)")
        if settings.tsa_url is not None:
            for url in settings.tsa_urls:
                if not url.startswith(("http://", "https://")):
                    raise ValueError(f"WITNESS_TSA_URL must be http:// or https:// URLs (commas between several), "
                                     f"not {url!r}")
            if settings.tsa_ca_file is None:
                raise ValueError("WITNESS_TSA_URL needs WITNESS_TSA_CA_FILE: the PEM certificates its tokens "
                                 "chain to, which every copy bundle carries so lawyers can verify the tokens")
        return settings


def _split_urls(text: str | None) -> tuple[str, ...]:
    return tuple(part.strip() for part in (text or "").split(",") if part.strip())


def _number(env, name, default, kind):
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number, not {raw!r}") from None
    if value <= 0:
        raise ValueError(f"{name} must be positive, not {raw!r}")
    return value


def _flag(env, name, default):
    raw = env.get(name)
    if raw in (None, ""):
        return default
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name} must be true or false, not {raw!r}")


def _witnesses(text: str) -> tuple[tuple[str, str], ...]:
    """`WITNESS_LOG_WITNESSES`: entries separated by commas or newlines,
    each `<base URL> <vkey>` (the URL the witness's `add-checkpoint` is
    under, and the key line its operator gave). Raises `ValueError` naming
    the entry that is not."""
    witnesses = []
    for entry in (part.strip() for part in text.replace("\n", ",").split(",")):
        if not entry:
            continue
        url, _, vkey = entry.partition(" ")
        vkey = vkey.strip()
        if not url.startswith(("http://", "https://")) or " " in vkey or len(vkey.split("+", 2)) != 3:
            raise ValueError(f"WITNESS_LOG_WITNESSES: {entry!r} is not '<http(s) URL> <vkey>'")
        witnesses.append((url.rstrip("/"), vkey))
    return tuple(witnesses)
