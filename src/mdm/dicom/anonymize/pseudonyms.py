"""Keyed, deterministic pseudonyms: UIDs, patient identifiers, dummy values, date shifts.

Everything here is HMAC-SHA-256 under a sub-key derived from the site secret, one sub-key per
purpose (RFC 2104 HMAC used as a PRF, labels as in HKDF-Expand's ``info``), so that:

* the same input and secret give the same pseudonym on every run and every machine (a re-recall
  after eviction rebuilds the very same bytes, and references between files stay consistent
  across export batches);
* without the secret nobody can compute or reverse a pseudonym, even knowing the original value
  (unlike unkeyed MD5 schemes such as CTP ``@hashuid`` or deid's ``pydicom_uuid``);
* a UID pseudonym cannot be confused with a patient-ID pseudonym of the same string.

UIDs become ``2.25.<integer>``, the PS3.5 B.2 form for a UUID-derived UID: the integer is the
first 128 bits of the HMAC with the RFC 9562 version-8 (custom) and variant bits set, so the
value is a valid UUIDv8 and at most 44 characters long.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from functools import lru_cache

_MIN_SECRET = 16

#: Largest shift in days (about 10 years); the shift is at least one day, always backwards.
MAX_SHIFT_DAYS = 3652


class Pseudonymizer:
    """All keyed pseudonyms of one site secret; thread-safe (no mutable state but caches)."""

    __slots__ = (
        "_code",
        "_date",
        "_patient",
        "_text",
        "_uid",
        "code",
        "patient_id",
        "person_name",
        "text",
        "uid",
    )

    def __init__(self, secret: bytes) -> None:
        if not isinstance(secret, bytes | bytearray) or len(secret) < _MIN_SECRET:
            raise ValueError(f"the site secret must be at least {_MIN_SECRET} bytes")
        key = bytes(secret)

        def sub(label: bytes) -> bytes:
            return hmac.new(key, b"mdm-anonymize-v1/" + label, hashlib.sha256).digest()

        self._uid = sub(b"uid")
        self._patient = sub(b"patient")
        self._text = sub(b"text")
        self._date = sub(b"date")
        self._code = sub(b"code")
        # UIDs, names, IDs and descriptions repeat across the instances of a series: bounded
        # caches spare the HMAC and the base32 (pure Python), per value.
        self.uid = lru_cache(maxsize=65536)(self._uid_uncached)
        self.patient_id = lru_cache(maxsize=4096)(self._patient_id)
        self.text = lru_cache(maxsize=65536)(self._text_uncached)
        self.person_name = lru_cache(maxsize=4096)(self._person_name)
        self.code = lru_cache(maxsize=4096)(self._code_uncached)

    def _mac(self, key: bytes, value: str) -> bytes:
        return hmac.new(key, value.encode("utf-8", "surrogateescape"), hashlib.sha256).digest()

    def _uid_uncached(self, original: str) -> str:
        """``2.25.<int>`` for *original* (whitespace and NUL padding ignored)."""
        digest = bytearray(self._mac(self._uid, original.strip(" \x00"))[:16])
        digest[6] = (digest[6] & 0x0F) | 0x80  # UUID version 8
        digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 9562 variant
        return "2.25." + str(int.from_bytes(digest, "big"))

    def _patient_id(self, patient_key: str) -> str:
        """Pseudonymous Patient ID: ``MDM`` + 20 base32 characters (100 bits of HMAC)."""
        return "MDM" + _b32(self._mac(self._patient, "id\x00" + patient_key), 20)

    def patient_name(self, patient_key: str) -> str:
        """Pseudonymous Patient's Name, derived from the pseudonymous ID (PN: family^given)."""
        return "ANONYMOUS^" + self.patient_id(patient_key)

    def _text_uncached(self, value: str, length: int) -> str:
        """A keyed dummy for a free-text or ID value, upper-case base32, at most *length*."""
        return _b32(self._mac(self._text, value), max(1, min(length, 26)))

    def _person_name(self, value: str) -> str:
        """Keyed dummy for any other person name: the same person keeps the same dummy."""
        return "ANON^" + _b32(self._mac(self._text, "pn\x00" + value), 12)

    def _code_uncached(self, value: str) -> str:
        """Keyed dummy for a code value that identifies a person or device (SH, 16)."""
        return "C" + _b32(self._mac(self._code, value), 15)

    def date_shift_days(self, patient_key: str) -> int:
        """Days to subtract from every date of this patient: 1..MAX_SHIFT_DAYS, keyed."""
        n = int.from_bytes(self._mac(self._date, patient_key)[:8], "big")
        return 1 + n % MAX_SHIFT_DAYS


def _b32(digest: bytes, length: int) -> str:
    return base64.b32encode(digest).decode("ascii")[:length]
