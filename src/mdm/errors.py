"""The one exception hierarchy of MDM.

Every error MDM raises on purpose is an ``MDMError``. Each class carries the HTTP status a
server answers with, so servers keep no mapping table, and the class *name* travels over the
wire (problem+json ``type``) so that the client raises the very same class. Context lives in
attributes, never only in the message, and never includes secrets or patient identity.

::

    MDMError
      ConfigError (ValueError)             bad or missing setting / argument
      UsageError (ValueError)              a caller passed arguments that cannot work
        RequestTooLarge                    body over the server's size limit (413)
      NotFound (LookupError)               FileNotFound, KeyNotFound, InstanceNotFound
      AlreadyExists                        DuplicateFile, DuplicateKey
      Conflict                             VersionConflict (compare-and-swap lost)
      AuthError
        AuthenticationRequired             no (valid) client certificate
        PermissionDenied                   authenticated, but the ACL says no
        CredentialError                    a certificate, proxy or VOMS AC failed verification
      IntegrityError                       ChecksumMismatch, AuditChainBroken
      CryptoError                          InvalidCiphertext, UnsupportedFormat
      SecretSharingError (ValueError)      InvalidShares, NotEnoughShares
      KeyStoreError                        KeyServerUnavailable, QuorumNotReached
      DicomError                           InvalidDicom, AssociationRejected, DimseFailure,
                                           AnonymizationRefused
      StorageError                         FileOffline (nearline: stage it first), BackendError
      RateLimited
      RemoteError                          a server answered with an error we could not map
      TransportError                       network failure or timeout (client side)
"""

from __future__ import annotations

import sys
from typing import Any, ClassVar


class MDMError(Exception):
    """Base class of every error MDM raises on purpose."""

    http_status: ClassVar[int] = 500
    #: One line telling the user what to do about it; the CLI prints it after the message.
    hint: ClassVar[str] = ""

    def __init__(self, message: str = "", **context: Any) -> None:
        super().__init__(message or self.__class__.__name__)
        self.message = message or self.__class__.__name__
        self.context = context
        for name, value in context.items():
            setattr(self, name, value)

    def __reduce__(self) -> tuple[Any, ...]:
        # Keep errors picklable with their context (urllib3 does the same): workers ship them.
        return (_rebuild, (self.__class__.__name__, self.message, self.context))

    def to_problem(self) -> dict[str, Any]:
        """RFC 9457 problem details; ``type`` is the class name the client maps back."""
        body: dict[str, Any] = {
            "type": self.__class__.__name__,
            "title": self.__class__.__name__,
            "status": self.http_status,
            "detail": self.message,
        }
        safe = {k: v for k, v in self.context.items() if isinstance(v, str | int | float | bool)}
        if safe:
            body["context"] = safe
        return body


def _rebuild(name: str, message: str, context: dict[str, Any]) -> MDMError:
    cls = error_class(name) or MDMError
    return cls(message, **context)


def error_class(name: str) -> type[MDMError] | None:
    """The ``MDMError`` subclass called *name*, or ``None``: used to rebuild wire errors."""
    obj = getattr(sys.modules[__name__], name, None)
    if isinstance(obj, type) and issubclass(obj, MDMError):
        return obj
    return None


def from_problem(body: dict[str, Any], status: int) -> MDMError:
    """Rebuild the error a server sent as problem+json (falls back to ``RemoteError``)."""
    name = str(body.get("type") or "")
    detail = str(body.get("detail") or body.get("title") or f"HTTP {status}")
    context = body.get("context") if isinstance(body.get("context"), dict) else {}
    cls = error_class(name.rsplit("/", 1)[-1])
    if cls is None:
        return RemoteError(detail, status=status, remote_type=name)
    return cls(detail, **(context or {}))


class ConfigError(MDMError, ValueError):
    """A setting is missing or invalid; the message names the key and the source."""

    hint = "check the settings file (mdm init writes one) and MDM_* environment variables"


class UsageError(MDMError, ValueError):
    """Arguments that cannot work together; nothing was done."""

    http_status = 400


class RequestTooLarge(UsageError):
    """A request body is larger than the server accepts; nothing was read or done."""

    http_status = 413


class NotFound(MDMError, LookupError):
    http_status = 404


class FileNotFound(NotFound):
    pass


class KeyNotFound(NotFound):
    pass


class InstanceNotFound(NotFound):
    pass


class AlreadyExists(MDMError):
    http_status = 409


class DuplicateFile(AlreadyExists):
    pass


class DuplicateKey(AlreadyExists):
    pass


class Conflict(MDMError):
    http_status = 409


class VersionConflict(Conflict):
    """A compare-and-swap write lost against a concurrent writer: re-read and retry."""


class AuthError(MDMError):
    http_status = 403


class AuthenticationRequired(AuthError):
    """No verified client certificate reached the server."""

    http_status = 401
    hint = "present an X.509 certificate or proxy (--cert/--key or X509_USER_PROXY)"


class PermissionDenied(AuthError):
    """The caller is known but no ACL entry grants the right asked for (default deny)."""

    http_status = 403


class CredentialError(AuthError):
    """A certificate, proxy chain or VOMS attribute certificate failed verification."""

    http_status = 403


class IntegrityError(MDMError):
    http_status = 500


class ChecksumMismatch(IntegrityError):
    pass


class AuditChainBroken(IntegrityError):
    """An audit record was removed, reordered or altered after it was written."""


class CryptoError(MDMError):
    http_status = 400


class InvalidCiphertext(CryptoError):
    """The one decryption failure: wrong key, any changed byte, truncation, reordering.

    The cause is kept in ``__cause__`` for debugging but never distinguished to callers, and no
    plaintext is released.
    """


class UnsupportedFormat(CryptoError):
    """Not an MDM encrypted file, or a format version this release cannot read."""


class SecretSharingError(MDMError, ValueError):
    http_status = 400


class InvalidShares(SecretSharingError):
    """Shares are malformed, duplicated, inconsistent, or fail their check value."""


class NotEnoughShares(SecretSharingError):
    """Fewer than k usable shares; ``failures`` names each server and why it failed."""

    http_status = 503


class KeyStoreError(MDMError):
    http_status = 503


class KeyServerUnavailable(KeyStoreError):
    pass


class QuorumNotReached(KeyStoreError):
    """Too few key servers acknowledged a write; what was written has been rolled back."""


class DicomError(MDMError):
    http_status = 502


class InvalidDicom(DicomError):
    """A file is not DICOM, or is truncated or corrupt; it is quarantined, the batch goes on."""

    http_status = 422


class AssociationRejected(DicomError):
    pass


class DimseFailure(DicomError):
    pass


class AnonymizationRefused(DicomError):
    """An instance that cannot be safely exported (e.g. burned-in annotation)."""

    http_status = 422


class StorageError(MDMError):
    http_status = 500


class FileOffline(StorageError):
    """The file is NEARLINE: stage it (Tape REST or ``mdm stage``) and retry after a while."""

    http_status = 503
    hint = "stage it first: mdm stage LFN"


class BackendError(StorageError):
    pass


class RateLimited(MDMError):
    http_status = 429


class RemoteError(MDMError):
    """A server answered with an error that does not map to a known class."""

    http_status = 502


class TransportError(MDMError):
    """The network failed or timed out; the original error is in ``__cause__``."""

    http_status = 503
