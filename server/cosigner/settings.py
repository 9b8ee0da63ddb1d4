"""The cosigner's settings, from `WITNESS_COSIGNER_*` environment variables
(docs/cosigner.md has the table), and the logs file it cosigns for.

The logs file (`WITNESS_COSIGNER_LOGS`) has one line per log key:

    <origin> <vkey>

the log's origin line exactly as its checkpoints carry it (no spaces) and
one of its Ed25519 verifier keys as a C2SP vkey (`name+keyid+base64`, type
0x01). Several lines with one origin give that log several keys (a key
rotation); blank lines and lines starting with `#` are skipped.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from crypto.tlog import Malformed
from crypto.tlog.note import Ed25519Verifier, valid_key_name

from .errors import ConfigurationError

DEFAULT_BIND = "127.0.0.1:7380"
MAX_BODY_BYTES = 64 * 1024


@dataclass(frozen=True)
class LogConfig:
    """One log this witness cosigns for: its origin and verifier keys."""

    origin: str
    verifiers: tuple[Ed25519Verifier, ...]


@dataclass(frozen=True)
class CosignerSettings:
    """Everything the cosigner is told at start."""

    name: str
    data_dir: Path
    keys_dir: Path
    logs: Mapping[str, LogConfig] = field(default_factory=dict)
    bind: str = DEFAULT_BIND
    workers: int = 2
    threads: int = 4
    max_body_bytes: int = MAX_BODY_BYTES


def settings_from_environ(environ: Mapping[str, str] = os.environ, *, need_logs: bool = True) -> CosignerSettings:
    """The settings in `environ`. Raises `ConfigurationError` naming what to
    fix: no or a bad `WITNESS_COSIGNER_NAME`, a logs file that is missing or
    wrong (when `need_logs`), a number that is not one."""
    name = environ.get("WITNESS_COSIGNER_NAME", "")
    if not valid_key_name(name):
        raise ConfigurationError(
            "set WITNESS_COSIGNER_NAME to this witness's name, a URL-like name without spaces or '+' "
            "(for example witness.example-clinic.org/w1); it appears in every cosignature")
    logs: dict[str, LogConfig] = {}
    logs_file = environ.get("WITNESS_COSIGNER_LOGS")
    if need_logs:
        if not logs_file:
            raise ConfigurationError("set WITNESS_COSIGNER_LOGS to the file listing the logs to cosign "
                                     "(one '<origin> <vkey>' line per log key)")
        try:
            text = Path(logs_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigurationError(f"WITNESS_COSIGNER_LOGS: cannot read {logs_file}: {exc}") from exc
        logs = read_logs(text, source=logs_file)
    return CosignerSettings(
        name=name,
        data_dir=Path(environ.get("WITNESS_COSIGNER_DATA_DIR", "./witness-cosigner-data")),
        keys_dir=Path(environ.get("WITNESS_COSIGNER_KEYS_DIR", "./witness-cosigner-keys")),
        logs=logs,
        bind=environ.get("WITNESS_COSIGNER_BIND", DEFAULT_BIND),
        workers=_positive(environ, "WITNESS_COSIGNER_WORKERS", 2),
        threads=_positive(environ, "WITNESS_COSIGNER_THREADS", 4),
    )


def read_logs(text: str, *, source: str = "the logs file") -> dict[str, LogConfig]:
    """The logs of a logs file's text (module docstring). Raises
    `ConfigurationError` naming the line for a line that is not an origin
    and an Ed25519 vkey, a key given twice, or a file listing no log."""
    keys: dict[str, list[Ed25519Verifier]] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2:
            raise ConfigurationError(f"{source}, line {number}: expected '<origin> <vkey>'")
        origin, vkey = parts
        try:
            verifier = Ed25519Verifier.from_vkey(vkey)
        except Malformed:
            raise ConfigurationError(f"{source}, line {number}: not an Ed25519 vkey (name+keyid+base64)") from None
        held = keys.setdefault(origin, [])
        if any(v.vkey == verifier.vkey for v in held):
            raise ConfigurationError(f"{source}, line {number}: this key is already listed for {origin}")
        held.append(verifier)
    if not keys:
        raise ConfigurationError(f"{source} lists no log")
    return {origin: LogConfig(origin, tuple(verifiers)) for origin, verifiers in keys.items()}


def _positive(environ: Mapping[str, str], variable: str, default: int) -> int:
    text = environ.get(variable)
    if text is None:
        return default
    if not text.isdigit() or int(text) < 1:
        raise ConfigurationError(f"{variable} must be a whole number of at least 1, not {text!r}")
    return int(text)
