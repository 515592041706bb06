"""Streaming encryption and decryption of whole MDM objects, in flat memory.

The chunk loop runs in Rust (``cryptography.cobblestone``); this module only feeds it 1 MiB at a
time through two preallocated buffers (``readinto`` / ``update_into``), so memory stays at a few
MiB whatever the file size and the Python overhead stays within a few percent of the raw
library (``bench/crypto.py`` measures both).

Release of plaintext. The Cobblestone decryptor hands out a chunk only after its tag verified,
and it checks the key commitment before the first chunk, so a wrong key or a changed header
never releases a byte. Truncation *at a chunk boundary*, however, can only be detected at the
end, when the final (short) chunk is missing. So :func:`decrypt_stream` may have written
verified chunks of a file that then turns out truncated; it raises and the caller must discard
*dst*. :func:`decrypt_file` does this for you: it writes to a temporary file next to the
destination and renames it into place only after the whole object authenticated, so no partial
plaintext file is ever visible.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from cryptography.cobblestone import Cobblestone256Decryptor, Cobblestone256Encryptor

from mdm.crypto import _primitives as prim
from mdm.crypto.format import Header, read_header_raw
from mdm.errors import InvalidCiphertext, UnsupportedFormat, UsageError

__all__ = [
    "FEED_SIZE",
    "Progress",
    "ciphertext_length",
    "decrypt_file",
    "decrypt_stream",
    "encrypt_again",
    "encrypt_file",
    "encrypt_into",
    "encrypt_stream",
    "new_key",
]

#: Bytes read from the source per call into the library: large enough that the per-call cost
#: is negligible, small enough to keep memory flat.
FEED_SIZE = 1 << 20
#: Called with the number of *input* bytes just consumed (for progress bars).
Progress = Callable[[int], None]

# update_into needs room for every chunk it may emit in one call (measured on cryptography 50:
# the encryptor emits full chunks eagerly, plus the 56-byte preamble on the first call).
_ENC_OUT = (FEED_SIZE // prim.CHUNK_LEN + 2) * prim.CHUNK_CT_LEN + prim.PREAMBLE_LEN
_DEC_OUT = (FEED_SIZE // prim.CHUNK_CT_LEN + 2) * prim.CHUNK_LEN
_DAMAGED = "cannot decrypt: wrong key or damaged ciphertext"


def new_key() -> bytes:
    """A fresh random 32-byte file key (one per file, never reused)."""
    return Cobblestone256Encryptor.generate_key()


def ciphertext_length(plaintext_len: int, header_len: int = 64) -> int:
    """Exact size of the encrypted object: header + 56 + plaintext + 16 per chunk.

    ``chunks = plaintext_len // 16384 + 1`` because the final chunk is always shorter than
    16 KiB (empty when the plaintext is a multiple of 16 KiB), so a server can announce a
    Content-Length before encrypting.
    """
    if plaintext_len < 0 or header_len < 0:
        raise UsageError("lengths must not be negative")
    return header_len + prim.body_length(plaintext_len)


def _check_key(key: bytes) -> None:
    if not isinstance(key, bytes | bytearray | memoryview) or len(key) != prim.KEY_LEN:
        raise UsageError("an MDM file key is exactly 32 bytes")


def _readinto(src: IO[bytes], view: memoryview) -> int:
    readinto = getattr(src, "readinto", None)
    if readinto is not None:
        return int(readinto(view) or 0)
    data = src.read(len(view))
    view[: len(data)] = data
    return len(data)


def encrypt_stream(
    src: IO[bytes],
    dst: IO[bytes],
    key: bytes,
    header: Header,
    *,
    progress: Progress | None = None,
) -> int:
    """Write *header* and the Cobblestone-256 body of *src* to *dst*; return bytes written.

    *src* must deliver exactly ``header.plaintext_len`` bytes: the length is part of the
    header, which is bound into the key derivation before the first byte is encrypted. A
    mismatch raises UsageError (and *dst* holds an unusable partial object).
    """
    _check_key(key)
    context = header.pack()
    encryptor = Cobblestone256Encryptor(bytes(key), context)
    dst.write(context)
    inbuf = memoryview(bytearray(FEED_SIZE))
    outbuf = memoryview(bytearray(_ENC_OUT))
    total = 0
    while True:
        n = _readinto(src, inbuf)
        if not n:
            break
        total += n
        if total > header.plaintext_len:
            raise UsageError(
                f"source is longer than the plaintext_len of the header ({header.plaintext_len})"
            )
        written = encryptor.update_into(inbuf[:n], outbuf)
        dst.write(outbuf[:written])
        if progress is not None:
            progress(n)
    if total != header.plaintext_len:
        raise UsageError(
            f"source gave {total} bytes but the header says plaintext_len={header.plaintext_len}"
        )
    dst.write(encryptor.finalize())
    return ciphertext_length(total, len(context))


def encrypt_into(
    plaintext: bytes | bytearray | memoryview,
    key: bytes,
    header: Header,
    out: bytearray | memoryview,
) -> int:
    """Encrypt a plaintext held in memory into *out* (header, then body); return the length.

    For the recall worker, which has each instance in memory already: one call into the
    library, no intermediate buffers, and *out* is the caller's to reuse (a fresh output
    buffer per file costs more in page faults than the encryption itself). *out* needs
    ``ciphertext_length(len(plaintext), len(header.pack())) + 16384`` bytes (the library asks
    for room for one more chunk than it emits); the same bytes as :func:`encrypt_stream`.
    """
    _check_key(key)
    if len(plaintext) != header.plaintext_len:
        raise UsageError(
            f"the plaintext has {len(plaintext)} bytes but the header says "
            f"plaintext_len={header.plaintext_len}"
        )
    context = header.pack()
    view = memoryview(out)
    size = ciphertext_length(len(plaintext), len(context))
    if len(view) < size + prim.CHUNK_CT_LEN:
        raise UsageError(f"the output buffer needs {size + prim.CHUNK_CT_LEN} bytes")
    encryptor = Cobblestone256Encryptor(bytes(key), context)
    view[: len(context)] = context
    pos = len(context) + encryptor.update_into(plaintext, view[len(context) :])
    final = encryptor.finalize()
    view[pos : pos + len(final)] = final
    if pos + len(final) != size:  # the library and the format document disagree: never ship it
        raise UsageError(f"encrypted {pos + len(final)} bytes where the format says {size}")
    return size


def encrypt_again(
    plaintext: bytes | memoryview, key: bytes, context: bytes, salt: bytes, out: memoryview
) -> int:
    """Rebuild, into *out*, the object an earlier encryption of *plaintext* produced under
    *key* with header *context* and the library's random *salt*; return its length.

    For re-recall only (docs/recall.md, "the recipe"): ``cryptography`` cannot be given a
    salt, so the C2SP derivation is replayed here. Safe **only** for the very plaintext that
    was encrypted first (same key, salt and header: same nonces); the caller must have
    checked that (the recall worker compares a SHA-256 recorded at the first encryption).
    """
    _check_key(key)
    size = ciphertext_length(len(plaintext), len(context))
    if len(out) < size:
        raise UsageError(f"the output buffer needs {size} bytes")
    keys = prim.derive(bytes(key), salt, context)
    pos = 0
    for part in (context, salt, keys.commitment):
        out[pos : pos + len(part)] = part
        pos += len(part)
    view = memoryview(plaintext)
    for index in range(prim.chunk_count(len(plaintext))):
        chunk = view[index * prim.CHUNK_LEN : (index + 1) * prim.CHUNK_LEN]
        sealed = keys.seal_chunk(index, chunk)
        out[pos : pos + len(sealed)] = sealed
        pos += len(sealed)
    return pos


def decrypt_stream(
    src: IO[bytes],
    dst: IO[bytes],
    key: bytes,
    *,
    progress: Progress | None = None,
) -> Header:
    """Decrypt the MDM object read from *src* into *dst*; return its header.

    Every failure raises :class:`~mdm.errors.InvalidCiphertext` (cause chained). Only
    authenticated chunks are written, but if the object turns out truncated at a chunk
    boundary, *dst* already holds the verified chunks before the cut: discard it on error (or
    use :func:`decrypt_file`, which never leaves a partial file).
    """
    _check_key(key)
    header, context = _read_header_for_decryption(src)
    try:
        decryptor = Cobblestone256Decryptor(bytes(key), context)
        inbuf = memoryview(bytearray(FEED_SIZE))
        outbuf = memoryview(bytearray(_DEC_OUT))
        total = 0
        while True:
            n = _readinto(src, inbuf)
            if not n:
                break
            written = decryptor.update_into(inbuf[:n], outbuf)
            total += written
            if total > header.plaintext_len:
                raise ValueError(f"more plaintext than the header's {header.plaintext_len} bytes")
            dst.write(outbuf[:written])
            if progress is not None:
                progress(n)
        final = decryptor.finalize()
        if total + len(final) != header.plaintext_len:
            raise ValueError(
                f"decrypted {total + len(final)} bytes, header says {header.plaintext_len}"
            )
    except Exception as exc:
        # InvalidTag (commitment, tag, truncation, extension) or ValueError (malformed input,
        # length disagreeing with the header) alike: one error, the details only in the cause.
        raise InvalidCiphertext(_DAMAGED) from exc
    dst.write(final)
    return header


def _read_header_for_decryption(src: IO[bytes]) -> tuple[Header, bytes]:
    """read_header, with format problems reported as the one decryption error."""
    try:
        return read_header_raw(src)
    except UnsupportedFormat as exc:
        # The message is about public bytes (magic, version, a field), so it reveals nothing
        # about the key; it tells a user with a newer file to upgrade.
        raise InvalidCiphertext(f"cannot decrypt: {exc.message}") from exc


@contextlib.contextmanager
def _atomic_output(dst: Path) -> Iterator[IO[bytes]]:
    """A temporary file next to *dst*, renamed onto it only if the block succeeds.

    Created with mode 0600 (mkstemp): decrypted output is patient data. The directory entry is
    flushed after the rename so that a crash never leaves a half-written *dst*.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".part", dir=dst.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dst)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):
        dir_fd = os.open(dst.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def encrypt_file(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    key: bytes,
    *,
    key_id: uuid.UUID | None = None,
    file_guid: uuid.UUID | None = None,
    k: int = 0,
    n: int = 0,
    keyserver_set_id: int = 0,
    tlvs: tuple[tuple[int, bytes], ...] = (),
    progress: Progress | None = None,
) -> Header:
    """Encrypt file *src* into *dst* atomically; return the header written.

    ``plaintext_len`` comes from the open file; random UUIDs are drawn for ids not given.
    """
    _check_key(key)
    dst_path = Path(dst)
    with open(src, "rb") as fin:
        header = Header.new(
            os.fstat(fin.fileno()).st_size,
            key_id=key_id,
            file_guid=file_guid,
            k=k,
            n=n,
            keyserver_set_id=keyserver_set_id,
            tlvs=tlvs,
        )
        with _atomic_output(dst_path) as fout:
            encrypt_stream(fin, fout, key, header, progress=progress)
    return header


def decrypt_file(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    key: bytes,
    *,
    progress: Progress | None = None,
) -> Header:
    """Decrypt file *src* into *dst*; *dst* appears only once everything authenticated.

    On any failure (InvalidCiphertext) no *dst* and no temporary file remain.
    """
    _check_key(key)
    with open(src, "rb") as fin, _atomic_output(Path(dst)) as fout:
        return decrypt_stream(fin, fout, key, progress=progress)
