"""The MDM encrypted-file header, format version 1 (docs/format.md specifies it byte by byte).

An MDM encrypted object is this header followed by a C2SP chunked-encryption body
(Cobblestone-256). The header is small, fixed-layout and big-endian so that any reader, in any
language, can tell what a file is, which key it needs and how long the plaintext is *without*
the key: a level-1 user (ciphertext only) may look, and the client fetches key shares by
``key_id`` before it can decrypt anything.

The whole serialized header is the Cobblestone ``context``: it goes into the HKDF that derives
the per-file key and the key commitment, so changing any header byte (GUID, key id, length,
k/n, a TLV) makes decryption fail before any plaintext is released. That is why the header must
have exactly one encoding: ``unpack`` refuses anything ``pack`` would not write back identically.

Parsing untrusted input raises :class:`~mdm.errors.UnsupportedFormat` with a message naming the
field; the decryption functions turn it into the one ``InvalidCiphertext`` (see ``stream.py``).
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass, field
from typing import IO

from mdm.errors import UnsupportedFormat, UsageError

__all__ = [
    "ALG_COBBLESTONE_256",
    "FIXED_HEADER_LEN",
    "FORMAT_VERSION",
    "MAGIC",
    "MAX_HEADER_LEN",
    "MAX_PLAINTEXT_LEN",
    "SCHEME_NONE",
    "SCHEME_SHAMIR_GF256",
    "Header",
    "read_header",
]

#: ``\x89`` catches 7-bit transports, ``\n`` catches CRLF translation (the PNG trick).
MAGIC = b"\x89MDMENC\n"
FORMAT_VERSION = 1
#: c2sp.org/chunked-encryption@v1 with AEAD_AES_256_GCM, HKDF-SHA-512, 16 KiB chunks.
ALG_COBBLESTONE_256 = 1
#: No flag is defined in version 1; every set bit is unknown and refused.
KNOWN_FLAGS = 0x0000
#: The key is not split (held in a key file, or escrowed outside MDM): k = n = 0.
SCHEME_NONE = 0
#: Shamir over GF(2^8), byte-wise, HashiCorp Vault share layout, x = key-server slot.
SCHEME_SHAMIR_GF256 = 1
_SCHEMES = (SCHEME_NONE, SCHEME_SHAMIR_GF256)

#: Bytes 0..63: magic .. keyserver_set_id. TLVs (if any) follow up to ``header_len``.
FIXED_HEADER_LEN = 64
#: Bounds what a reader allocates for a header taken from an untrusted file.
MAX_HEADER_LEN = 8192
#: C2SP chunked-encryption caps a message at 2^38 chunks of 16 KiB (4 PiB).
MAX_PLAINTEXT_LEN = (1 << 38) * 16384 - 1
#: TLV types with this bit set are *critical*: a reader that does not know one must refuse the
#: file. Other unknown types are kept (they are authenticated) and otherwise ignored.
TLV_CRITICAL = 0x8000

# magic, version, alg, flags, header_len, key_id, file_guid, plaintext_len,
# share_scheme, k, n, reserved, keyserver_set_id
_FIXED = struct.Struct(">8sBBHI16s16sQBBBBI")
_PREFIX_LEN = 16  # magic .. header_len: enough to learn how many bytes the header has
_TLV = struct.Struct(">HH")
if _FIXED.size != FIXED_HEADER_LEN:  # pragma: no cover - guards edits of the layout above
    raise ImportError("MDM header layout and FIXED_HEADER_LEN disagree")


@dataclass(frozen=True)
class Header:
    """One MDM v1 header. Build with :meth:`new`, serialize with :meth:`pack`.

    Parameters
    ----------
    key_id
        The per-file key's id: the record name on the key servers.
    file_guid
        The grid GUID of this object in the file catalog.
    plaintext_len
        Exact plaintext size; authenticated, so readers can size range reads from it.
    share_scheme, k, n
        How the key is split: ``SCHEME_SHAMIR_GF256`` with ``2 <= k <= n <= 255``, or
        ``SCHEME_NONE`` with ``k == n == 0``.
    keyserver_set_id
        Which n-server configuration (and epoch) holds the shares.
    tlvs
        Extra ``(type, value)`` fields, in order; see ``TLV_CRITICAL``.
    """

    key_id: uuid.UUID
    file_guid: uuid.UUID
    plaintext_len: int
    share_scheme: int = SCHEME_NONE
    k: int = 0
    n: int = 0
    keyserver_set_id: int = 0
    tlvs: tuple[tuple[int, bytes], ...] = field(default=())
    version: int = FORMAT_VERSION
    alg: int = ALG_COBBLESTONE_256
    flags: int = 0

    def __post_init__(self) -> None:
        # Accept any iterable of pairs but store a tuple of (int, bytes): the header is frozen,
        # hashable, and its TLVs are part of what gets authenticated.
        object.__setattr__(self, "tlvs", tuple((int(t), bytes(v)) for t, v in self.tlvs))
        problem = self._problem()
        if problem:
            # Building a bad header is the caller's mistake; reading one is the file's
            # (``unpack`` re-raises this as UnsupportedFormat).
            raise UsageError(f"invalid MDM header: {problem}")

    @classmethod
    def new(
        cls,
        plaintext_len: int,
        *,
        key_id: uuid.UUID | None = None,
        file_guid: uuid.UUID | None = None,
        k: int = 0,
        n: int = 0,
        keyserver_set_id: int = 0,
        tlvs: tuple[tuple[int, bytes], ...] = (),
    ) -> Header:
        """A v1 header; random UUIDs for ids not given; Shamir scheme iff ``k`` or ``n``."""
        return cls(
            key_id=key_id or uuid.uuid4(),
            file_guid=file_guid or uuid.uuid4(),
            plaintext_len=plaintext_len,
            share_scheme=SCHEME_SHAMIR_GF256 if (k or n) else SCHEME_NONE,
            k=k,
            n=n,
            keyserver_set_id=keyserver_set_id,
            tlvs=tuple(tlvs),
        )

    @property
    def header_len(self) -> int:
        """Total header size in bytes: where the Cobblestone body starts."""
        return FIXED_HEADER_LEN + sum(_TLV.size + len(v) for _, v in self.tlvs)

    def pack(self) -> bytes:
        """The canonical bytes, which are also the Cobblestone ``context``."""
        fixed = _FIXED.pack(
            MAGIC,
            self.version,
            self.alg,
            self.flags,
            self.header_len,
            self.key_id.bytes,
            self.file_guid.bytes,
            self.plaintext_len,
            self.share_scheme,
            self.k,
            self.n,
            0,
            self.keyserver_set_id,
        )
        return fixed + b"".join(_TLV.pack(t, len(v)) + v for t, v in self.tlvs)

    @classmethod
    def unpack(cls, data: bytes) -> Header:
        """Parse exactly one header (``len(data) == header_len``) or raise UnsupportedFormat."""
        data = bytes(data)
        header_len = _check_prefix(data)
        if len(data) != header_len:
            raise UnsupportedFormat(
                f"MDM header is {header_len} bytes by its header_len field, got {len(data)}"
            )
        (_, version, alg, flags, _, key_id, guid, length, scheme, k, n, reserved, ks_set) = (
            _FIXED.unpack_from(data)
        )
        if reserved != 0:
            raise UnsupportedFormat("MDM header: reserved byte 59 is not zero")
        try:
            header = cls(
                key_id=uuid.UUID(bytes=key_id),
                file_guid=uuid.UUID(bytes=guid),
                plaintext_len=length,
                share_scheme=scheme,
                k=k,
                n=n,
                keyserver_set_id=ks_set,
                tlvs=_parse_tlvs(data[FIXED_HEADER_LEN:]),
                version=version,
                alg=alg,
                flags=flags,
            )
        except UsageError as exc:
            raise UnsupportedFormat(exc.message) from exc
        unknown_critical = [t for t, _ in header.tlvs if t & TLV_CRITICAL]
        if unknown_critical:
            raise UnsupportedFormat(
                f"MDM header has critical TLV type 0x{unknown_critical[0]:04x} "
                "that this release does not understand"
            )
        return header

    def _problem(self) -> str:
        if not isinstance(self.key_id, uuid.UUID) or not isinstance(self.file_guid, uuid.UUID):
            return "key_id and file_guid must be uuid.UUID values"
        if self.version != FORMAT_VERSION:
            return f"format version {self.version} (this release reads version {FORMAT_VERSION})"
        if self.alg != ALG_COBBLESTONE_256:
            return f"unknown algorithm id {self.alg} (1 = Cobblestone-256)"
        if self.flags & ~KNOWN_FLAGS:
            return f"unknown flag bits 0x{self.flags & ~KNOWN_FLAGS:04x}"
        if not 0 <= self.plaintext_len <= MAX_PLAINTEXT_LEN:
            return f"plaintext_len {self.plaintext_len} out of range"
        if self.share_scheme not in _SCHEMES:
            return f"unknown share scheme {self.share_scheme}"
        if self.share_scheme == SCHEME_NONE and (self.k or self.n):
            return f"k={self.k}, n={self.n} with share scheme none (both must be 0)"
        if self.share_scheme == SCHEME_SHAMIR_GF256 and not 2 <= self.k <= self.n <= 255:
            return f"k={self.k}, n={self.n}: Shamir needs 2 <= k <= n <= 255"
        if not 0 <= self.keyserver_set_id <= 0xFFFFFFFF:
            return f"keyserver_set_id {self.keyserver_set_id} does not fit in 32 bits"
        for t, v in self.tlvs:
            if not 0 < t <= 0xFFFF or len(v) > 0xFFFF:
                return f"TLV type {t} with {len(v)} bytes is not encodable"
        if self.header_len > MAX_HEADER_LEN:
            return f"header of {self.header_len} bytes exceeds {MAX_HEADER_LEN}"
        return ""


def _check_prefix(data: bytes) -> int:
    """Validate magic, version and header_len from the first 16 bytes; return header_len.

    Checked before the rest is read so that a reader never allocates what a foreign or damaged
    file claims, and so that a newer version gets a message saying so rather than a parse error.
    """
    if data[:8] != MAGIC[: len(data[:8])]:
        raise UnsupportedFormat("not an MDM encrypted file (bad magic)")
    if len(data) < _PREFIX_LEN:
        raise UnsupportedFormat(f"too short to be an MDM encrypted file ({len(data)} bytes)")
    version = data[8]
    if version != FORMAT_VERSION:
        raise UnsupportedFormat(
            f"MDM encrypted file format version {version} is not supported by this release "
            f"(it reads version {FORMAT_VERSION}); upgrade MDM"
        )
    (header_len,) = struct.unpack_from(">I", data, 12)
    if not FIXED_HEADER_LEN <= header_len <= MAX_HEADER_LEN:
        raise UnsupportedFormat(
            f"MDM header_len {header_len} outside {FIXED_HEADER_LEN}..{MAX_HEADER_LEN}"
        )
    return int(header_len)


def _parse_tlvs(data: bytes) -> tuple[tuple[int, bytes], ...]:
    out = []
    pos = 0
    while pos < len(data):
        if len(data) - pos < _TLV.size:
            raise UnsupportedFormat("MDM header: truncated TLV")
        tlv_type, tlv_len = _TLV.unpack_from(data, pos)
        pos += _TLV.size
        if tlv_type == 0 or len(data) - pos < tlv_len:
            raise UnsupportedFormat(f"MDM header: malformed TLV at offset {FIXED_HEADER_LEN + pos}")
        out.append((tlv_type, data[pos : pos + tlv_len]))
        pos += tlv_len
    return tuple(out)


def read_header(src: IO[bytes]) -> Header:
    """Read and parse the header at the current position of *src*; needs no key.

    Raises UnsupportedFormat when *src* is not an MDM v1 object.
    """
    return read_header_raw(src)[0]


def read_header_raw(src: IO[bytes]) -> tuple[Header, bytes]:
    """The header and its exact bytes, which decryption uses as the Cobblestone context.

    ``unpack`` accepts only canonical encodings, so the bytes equal ``header.pack()``; the
    decryptors still use the bytes as read, so that no re-encoding sits on the security path.
    """
    prefix = read_exact(src, _PREFIX_LEN)
    header_len = _check_prefix(prefix)
    raw = prefix + read_exact(src, header_len - _PREFIX_LEN)
    if len(raw) != header_len:
        raise UnsupportedFormat(f"file ends inside the MDM header ({len(raw)} of {header_len})")
    return Header.unpack(raw), raw


def read_exact(src: IO[bytes], size: int) -> bytes:
    """Up to *size* bytes, looping over short reads (pipes, sockets); fewer only at EOF."""
    parts = []
    remaining = size
    while remaining > 0:
        part = src.read(remaining)
        if not part:
            break
        parts.append(part)
        remaining -= len(part)
    return b"".join(parts)
