"""The server master key: wraps every share at rest and keys the audit chain.

The file holds 32 random bytes as 64 hex digits and must not be readable by group or others
(like an ssh private key): a server refuses to start otherwise. Two independent subkeys are
derived with HKDF-SHA-256 (RFC 5869), one per purpose, so the audit MAC key can never decrypt
a share. Wrapping is AES-256-GCM with a fresh 96-bit nonce per record and associated data
``"mdm-share-v1" || len(key_id) || key_id || slot``: a wrapped share copied onto another key id
or another slot fails to unwrap instead of being served (notes/keystore-and-crypto.md §6).
This protects stolen disks and backups, not a live compromise of the server process.
"""

from __future__ import annotations

import os
import secrets
import stat
import struct
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from mdm.errors import ConfigError, IntegrityError

KEY_BYTES = 32
_NONCE = 12
_WRAP_INFO = b"mdm-keyserver share wrap v1"
_AUDIT_INFO = b"mdm-keyserver audit chain v1"


def _derive(master: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(master)


def _aad(key_id: str, slot: int) -> bytes:
    kid = key_id.encode()
    return b"mdm-share-v1" + struct.pack(">H", len(kid)) + kid + struct.pack(">B", slot)


class MasterKey:
    """Holds the derived subkeys only; the master bytes are not kept after construction."""

    __slots__ = ("_aead", "audit_key")

    def __init__(self, master: bytes) -> None:
        if len(master) != KEY_BYTES:
            raise ConfigError(f"a master key is {KEY_BYTES} bytes, got {len(master)}")
        self._aead = AESGCM(_derive(master, _WRAP_INFO))
        self.audit_key = _derive(master, _AUDIT_INFO)

    def __repr__(self) -> str:
        return "MasterKey(**********)"

    @classmethod
    def load(cls, path: Path | None) -> MasterKey:
        """Read *path*; a missing, unreadable, malformed or too open file is a ``ConfigError``."""
        if path is None:
            raise ConfigError(
                "keyserver.master_key_file is not set (mdm keyserver init creates one)",
                key="keyserver.master_key_file",
            )
        try:
            mode = path.stat().st_mode
            text = path.read_text().strip()
        except OSError as exc:
            raise ConfigError(
                f"cannot read master key file {path}: {exc.strerror}",
                key="keyserver.master_key_file",
            ) from exc
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(
                f"master key file {path} is accessible by group or others: chmod 600 it",
                key="keyserver.master_key_file",
            )
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            raw = b""
        if len(raw) != KEY_BYTES:
            raise ConfigError(
                f"master key file {path} must hold {2 * KEY_BYTES} hex digits",
                key="keyserver.master_key_file",
            )
        return cls(raw)

    @staticmethod
    def create(path: Path) -> None:
        """Write a fresh random key to *path* (mode 0600); never overwrites an existing file."""
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError as exc:
            raise ConfigError(
                f"master key file {path} already exists; refusing to overwrite it"
            ) from exc
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_bytes(KEY_BYTES).hex() + "\n")

    def wrap(self, key_id: str, slot: int, share: bytes) -> bytes:
        nonce = secrets.token_bytes(_NONCE)
        return nonce + self._aead.encrypt(nonce, share, _aad(key_id, slot))

    def unwrap(self, key_id: str, slot: int, wrapped: bytes) -> bytes:
        try:
            return self._aead.decrypt(wrapped[:_NONCE], wrapped[_NONCE:], _aad(key_id, slot))
        except (InvalidTag, ValueError) as exc:
            raise IntegrityError(
                "the stored share of this key failed its integrity check on this server",
                key_id=key_id,
                slot=slot,
            ) from exc
