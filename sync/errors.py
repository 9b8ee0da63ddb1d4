"""Domain errors. They know nothing of HTTP: `server/errors.py` maps each
class to its status and PROTOCOL.md error code. Messages are written for the
client author and say what to do."""


class WitnessError(Exception):
    """Base of every error the domain raises on purpose."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class InvalidInput(WitnessError):
    """A field is missing or malformed; `code` names which rule was broken."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


class NotFound(WitnessError):
    """No such thing, or not yours to see (the two are not told apart)."""


class Forbidden(WitnessError):
    """Authenticated, but this role may not do this."""


class OwnAccountElsewhere(Forbidden):
    """A custodian tried to set their own password or reset their own second
    factor through the custodians' endpoint, which asks for neither the
    current password nor a code: a stolen token must not take the account
    over. `what` is "password" or "second_factor"."""

    code = "use_account_endpoint"

    def __init__(self, message: str, what: str):
        super().__init__(message)
        self.what = what


class BadCredentials(WitnessError):
    """Wrong username or password (never says which)."""


class EnrollmentRefused(WitnessError):
    """The enrollment code is missing (closed enrollment) or unknown."""


class RecordingConflict(WitnessError):
    """The recording id is taken by a different body or another device."""


class UnknownKeyId(WitnessError):
    """The content key was sealed to a key this server does not hold."""


class BadSealedKey(WitnessError):
    """The sealed content key does not open for this recording."""


class DigestMismatch(WitnessError):
    """Content-Digest does not match the body received."""


class ChunkTooLarge(WitnessError):
    """The chunk body exceeds max_chunk_bytes."""


class ChunkUnreadable(WitnessError):
    """The chunk's AEAD tag does not verify under the recording's key."""


class BadDeviceSignature(WitnessError):
    """The device signature is missing (device registered a key) or wrong."""


class ChunkConflict(WitnessError):
    """Different bytes for an index already held; the first bytes are kept."""


class PastFinal(WitnessError):
    """The index lies after the chunk marked final (or a second, different
    chunk claims to be final)."""


class StorageFull(WitnessError):
    """The disk is full; nothing was kept and the client should retry later."""


class BelowWatermark(StorageFull):
    """Free disk is below the operator's watermark: no new recordings, while
    chunks of recordings already started are still taken."""


class DeviceGone(WitnessError):
    """The device behind a valid token no longer exists (revoked, or expired
    unused) by the time its request reached the records."""


class Busy(WitnessError):
    """The records are held by another program; nothing was kept; retry."""


class StoreUnavailable(Busy):
    """The chunk or bundle store could not be reached or failed (an object
    store down, refusing, timing out): nothing was acknowledged and nothing
    partial kept; retry shortly."""


class NotReady(WitnessError):
    """The thing asked for does not exist yet (e.g. no manifest so far)."""


class SecondFactorRequired(WitnessError):
    """The password was right, but the account has TOTP on: send the code."""


class SecondFactorSetupRequired(WitnessError):
    """The operator requires a second factor for this role and the account
    has none yet: only setting one up (and logging out) is allowed."""


class SecondFactorAlreadyOn(WitnessError):
    """The account already has a confirmed second factor."""


class WrongSecondFactor(WitnessError):
    """The TOTP code does not match (or was already used)."""


class TooManyAttempts(WitnessError):
    """Too many failed logins for this username: refused, without checking,
    for `retry_after` seconds."""

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


class NotPending(WitnessError):
    """The copy request was already decided (or is being built): only a
    pending request can be approved or denied, and a failed one approved
    again."""


class BundleNotReady(WitnessError):
    """The copy request has no bundle (yet, or ever: denied or failed)."""
