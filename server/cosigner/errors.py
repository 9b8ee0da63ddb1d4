"""What the cosigner refuses, and why, in the witness's own words. Nothing
here knows HTTP: `app.py` maps each to c2sp.org/tlog-witness's status in one
table."""

from __future__ import annotations


class CosignerError(Exception):
    """Base of every refusal; `str()` is the one line the client is told."""


class ConfigurationError(CosignerError):
    """The cosigner cannot start: a setting or the logs file is wrong. The
    message names the variable or line to fix."""


class MalformedRequest(CosignerError):
    """The body is not an add-checkpoint request, or its checkpoint is not a
    well-formed signed checkpoint, or its old size is beyond the new one."""


class UnknownLog(CosignerError):
    """No log with this origin is configured here (or, for a read, none was
    ever cosigned)."""


class BadLogSignature(CosignerError):
    """The checkpoint carries no valid signature from the log's keys, or a
    signature from one of them fails."""


class OldSizeMismatch(CosignerError):
    """The request's old size is not the size this witness last cosigned for
    the log; `size` is that size, for the client to retry from."""

    def __init__(self, size: int) -> None:
        super().__init__(f"the latest checkpoint cosigned for this log has size {size}")
        self.size = size


class Inconsistent(CosignerError):
    """The checkpoint is not consistent with the one held: the proof does not
    verify, or it has the held size with another root hash (a split view)."""
