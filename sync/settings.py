"""Configuration, read from `WITNESS_*` environment variables with safe
defaults: a plain start needs none of them."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

DEFAULT_MAX_CHUNK_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class Settings:
    """Everything the domain needs to know about its surroundings."""

    data_dir: Path
    keys_dir: Path
    idle_finalize_seconds: float = 60.0
    max_chunk_bytes: int = DEFAULT_MAX_CHUNK_BYTES
    open_enrollment: bool = True
    scheduler_interval_seconds: float = 1.0
    device_access_minutes: int = 15
    device_refresh_days: int = 365
    staff_access_minutes: int = 15
    staff_refresh_hours: int = 12
    require_custodian_totp: bool = False
    login_max_failures: int = 5
    login_lockout_seconds: int = 900
    totp_issuer: str = "Witness Sync"
    # An external RFC 3161 TSA whose tokens are kept beside the built-in
    # one's, and the PEM file of the certificates its tokens chain to.
    tsa_url: str | None = None
    tsa_ca_file: Path | None = None
    # False in the front door's ingest pool: only the staff pool competes to
    # run the scheduler, so bundle builds never take an upload's CPU.
    background_jobs: bool = True

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
            require_custodian_totp=_flag(env, "WITNESS_REQUIRE_CUSTODIAN_TOTP", False),
            login_max_failures=_number(env, "WITNESS_LOGIN_MAX_FAILURES", 5, int),
            login_lockout_seconds=_number(env, "WITNESS_LOGIN_LOCKOUT_SECONDS", 900, int),
            totp_issuer=env.get("WITNESS_TOTP_ISSUER") or "Witness Sync",
            tsa_url=env.get("WITNESS_TSA_URL") or None,
            tsa_ca_file=Path(env["WITNESS_TSA_CA_FILE"]) if env.get("WITNESS_TSA_CA_FILE") else None,
            background_jobs=_flag(env, "WITNESS_BACKGROUND_JOBS", True),
        )
        values.update(overrides)
        settings = cls(**values)
        if settings.data_dir.resolve() == settings.keys_dir.resolve():
            raise ValueError("WITNESS_KEYS_DIR must not be WITNESS_DATA_DIR: keys live apart from data")
        if settings.tsa_url is not None:
            if not settings.tsa_url.startswith(("http://", "https://")):
                raise ValueError(f"WITNESS_TSA_URL must be an http:// or https:// URL, not {settings.tsa_url!r}")
            if settings.tsa_ca_file is None:
                raise ValueError("WITNESS_TSA_URL needs WITNESS_TSA_CA_FILE: the PEM certificates its tokens "
                                 "chain to, which every copy bundle carries so lawyers can verify the tokens")
        return settings


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
