"""Random access into an MDM object: decrypt only the chunks a read needs.

C2SP chunked encryption fixes every chunk's place (https://c2sp.org/chunked-encryption,
"Implementation notes"): plaintext byte ``i`` is byte ``i % 16384`` of chunk ``i // 16384``,
and chunk ``c`` starts at ``header_len + 56 + c * (16384 + 16)`` in an MDM object. So a reader
seeks, reads one sealed chunk, and opens it with nonce ``base_nonce XOR c``.

Order of checks, each failing with the one :class:`~mdm.errors.InvalidCiphertext`:

1. the header parses (format problems are public, the message says which);
2. the key commitment matches, compared in constant time, before any chunk is opened; since the
   whole header is the HKDF context, this also authenticates every header field, including
   ``plaintext_len``;
3. the object's size equals ``ciphertext_length(plaintext_len, header_len)`` when the source
   can tell its size (catches truncation and appended data without decrypting anything);
4. every chunk a read touches is authenticated before a byte of it is returned. The final
   chunk (shorter than 16 KiB, possibly empty) is authenticated whenever a read touches it and,
   as the specification requires, before any seek relative to the end.

Chunks a read does not touch are not checked: a damaged chunk elsewhere in the object is found
only when read. Use :func:`mdm.crypto.decrypt_stream` to verify a whole object.
"""

from __future__ import annotations

import io
import os
from typing import IO, Any

from mdm.crypto import _primitives as prim
from mdm.crypto.format import Header, read_exact, read_header_raw
from mdm.crypto.stream import _DAMAGED
from mdm.errors import InvalidCiphertext, UnsupportedFormat, UsageError

__all__ = ["RangeReader", "decrypt_range", "verify_key"]


def _derive(src: IO[bytes], key: bytes) -> tuple[Header, prim.MessageKeys, bytes] | None:
    """Parse the header at offset 0, read salt and commitment, derive the message keys.

    Returns (header, keys, stored commitment), or None if *src* ends before the commitment.
    """
    if len(key) != prim.KEY_LEN:
        raise UsageError("an MDM file key is exactly 32 bytes")
    src.seek(0)
    try:
        header, context = read_header_raw(src)
    except UnsupportedFormat as exc:
        raise InvalidCiphertext(f"cannot decrypt: {exc.message}") from exc
    preamble = read_exact(src, prim.PREAMBLE_LEN)
    if len(preamble) != prim.PREAMBLE_LEN:
        return None
    keys = prim.derive(bytes(key), preamble[: prim.SALT_LEN], context)
    return header, keys, preamble[prim.SALT_LEN :]


def _open(src: IO[bytes], key: bytes) -> tuple[Header, prim.MessageKeys]:
    """Steps 1 and 2: parse the header and check the key commitment."""
    derived = _derive(src, key)
    if derived is None:
        raise InvalidCiphertext(_DAMAGED) from EOFError("object ends before the key commitment")
    header, keys, stored = derived
    if not prim.commitment_matches(keys, stored):
        raise InvalidCiphertext(_DAMAGED) from ValueError("key commitment mismatch")
    return header, keys


def verify_key(prefix: bytes, key: bytes) -> bool:
    """Whether *key* opens the object whose first ``header_len + 56`` bytes are *prefix*.

    The key-store client uses it to accept a key rebuilt from k shares (or to try another
    subset) after fetching only the start of the object. Compared in constant time. Raises
    InvalidCiphertext if *prefix* is not the start of an MDM object, UsageError if it is too
    short to hold the commitment.
    """
    derived = _derive(io.BytesIO(prefix), key)
    if derived is None:
        raise UsageError(f"verify_key needs header_len + 56 bytes, got {len(prefix)}")
    _, keys, stored = derived
    return prim.commitment_matches(keys, stored)


class RangeReader(io.RawIOBase):
    """A read-only, seekable file object over the plaintext of an MDM object.

    Reads decrypt only the chunks they cover and keep the last chunk opened, so sequential
    small reads (as pydicom's ``dcmread`` does) cost one decryption per 16 KiB. *src* must be
    a seekable binary file object positioned anywhere; it is closed with the reader only if
    ``close_source`` is true. Errors: ``InvalidCiphertext``, from the constructor or any read.
    """

    def __init__(self, src: IO[bytes], key: bytes, *, close_source: bool = False) -> None:
        super().__init__()
        self._src = src
        self._close_source = close_source
        self.header, self._keys = _open(src, key)
        self._body = self.header.header_len
        self._size = self.header.plaintext_len
        self._pos = 0
        self._cached_index = -1
        self._cached = b""
        self._final_checked = False
        try:
            actual: int | None = src.seek(0, os.SEEK_END)
        except OSError:  # a source that cannot tell its size: the chunk tags still decide
            actual = None
        expected = self._body + prim.body_length(self._size)
        if actual is not None and actual != expected:
            # Truncated or extended: the details go to the cause, the message stays the one.
            raise InvalidCiphertext(_DAMAGED) from ValueError(
                f"object is {actual} bytes, its header implies {expected}"
            )

    # io.RawIOBase protocol -------------------------------------------------------------
    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        self._checkClosed()
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        self._checkClosed()
        if whence == os.SEEK_SET:
            target = offset
        elif whence == os.SEEK_CUR:
            target = self._pos + offset
        elif whence == os.SEEK_END:
            self._check_final_chunk()
            target = self._size + offset
        else:
            raise ValueError(f"invalid whence ({whence})")
        if target < 0:
            raise ValueError(f"negative seek position {target}")
        self._pos = target
        return target

    def readinto(self, buffer: Any) -> int:
        """Fill *buffer* from the current position; short only at the end of the plaintext."""
        self._checkClosed()
        out = memoryview(buffer).cast("B")
        done = 0
        while done < len(out) and self._pos < self._size:
            index, offset = divmod(self._pos, prim.CHUNK_LEN)
            chunk = self._chunk(index)
            take = min(len(chunk) - offset, len(out) - done)
            out[done : done + take] = chunk[offset : offset + take]
            done += take
            self._pos += take
        return done

    def close(self) -> None:
        if not self.closed:
            self._cached = b""
            if self._close_source:
                self._src.close()
        super().close()

    # ------------------------------------------------------------------------------------
    @property
    def size(self) -> int:
        """Plaintext size from the authenticated header."""
        return self._size

    def _chunk(self, index: int) -> bytes:
        if index != self._cached_index:
            self._cached = self._read_chunks(index, index)[0]
            self._cached_index = index
        return self._cached

    def _check_final_chunk(self) -> None:
        if not self._final_checked:
            self._chunk(self._size // prim.CHUNK_LEN)

    def _read_chunks(self, first: int, last: int) -> list[bytes]:
        """Read chunks first..last with one seek and one read, and open each one."""
        start, _ = prim.chunk_span(self._size, first)
        end_off, end_len = prim.chunk_span(self._size, last)
        self._src.seek(self._body + start)
        sealed = read_exact(self._src, end_off + end_len - start)
        if len(sealed) != end_off + end_len - start:
            raise InvalidCiphertext(_DAMAGED) from EOFError(
                f"object ends inside chunks {first}..{last}"
            )
        chunks = []
        final = self._size // prim.CHUNK_LEN
        view = memoryview(sealed)
        for index in range(first, last + 1):
            off, length = prim.chunk_span(self._size, index)
            piece = view[off - start : off - start + length]
            try:
                chunks.append(self._keys.open_chunk(index, piece))
            except Exception as exc:
                raise InvalidCiphertext(_DAMAGED) from exc
            if index == final:
                self._final_checked = True
        return chunks


def decrypt_range(src: IO[bytes], key: bytes, start: int, length: int) -> bytes:
    """Plaintext bytes ``[start, start + length)`` of the MDM object in seekable *src*.

    Reads and authenticates only the covering chunks, in one read. Like ``file.read``, a range
    reaching past the end is cut at the end. Raises InvalidCiphertext, or UsageError for a
    negative *start* or *length*.
    """
    if start < 0 or length < 0:
        raise UsageError(f"invalid range: start={start}, length={length}")
    with RangeReader(src, key) as reader:
        stop = min(start + length, reader.size)
        if start >= stop:
            return b""
        first, offset = divmod(start, prim.CHUNK_LEN)
        last = (stop - 1) // prim.CHUNK_LEN
        data = b"".join(reader._read_chunks(first, last))
    return data[offset : offset + stop - start]
