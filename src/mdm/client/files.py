"""Seekable file objects over remote encrypted files: ``Client.open(lfn)`` is built here.

Two layers, each an ordinary ``io`` object so that any library that takes a file (pydicom's
``dcmread``, ``shutil.copyfileobj``, numpy) can use it:

* :class:`HttpRangeFile` is the *ciphertext*: a raw, seekable file whose ``readinto`` is one
  HTTP ``GET`` with ``Range: bytes=a-b`` on the storage element (RFC 9110 §14). Its size comes
  from one ``HEAD``; nothing is downloaded ahead.
* :func:`open_plaintext` wraps it in a small ``io.BufferedReader`` (one Cobblestone chunk plus
  the header per request) and then in :class:`mdm.crypto.RangeReader`, which authenticates and
  decrypts only the 16 KiB chunks a read touches. Reading a DICOM header therefore costs one or
  two range requests and one or two chunk decryptions, not the whole file.

The key is fetched from the key servers only after the header has been read: its ``key_id``
names the key, and the key commitment (checked by ``RangeReader`` before any chunk is opened)
proves the rebuilt key is the right one.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mdm.crypto import RangeReader, read_header
from mdm.errors import RemoteError

if TYPE_CHECKING:
    from mdm.client.storage import StorageClient

#: Ciphertext bytes per range request: the header and one sealed chunk (16 KiB + tag) fit.
READ_AHEAD = 20 * 1024


class HttpRangeFile(io.RawIOBase):
    """Read-only, seekable view of a remote file; every read is one HTTP range request."""

    def __init__(self, storage: StorageClient, lfn: str, *, size: int | None = None) -> None:
        super().__init__()
        self._storage = storage
        self.lfn = lfn
        if size is None:
            head = storage.request("HEAD", lfn)
            size = int(head.headers.get("Content-Length", "-1"))
            if size < 0:
                raise RemoteError(f"storage element sent no Content-Length for {lfn}")
        self._size = size
        self._pos = 0
        #: Range requests made so far (tests and the demo show it).
        self.requests = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    @property
    def size(self) -> int:
        return self._size

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        self._checkClosed()
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self._size}.get(whence)
        if base is None:
            raise ValueError(f"invalid whence ({whence})")
        target = base + offset
        if target < 0:
            raise ValueError(f"negative seek position {target}")
        self._pos = target
        return target

    def readinto(self, buffer: Any) -> int:
        self._checkClosed()
        out = memoryview(buffer).cast("B")
        want = min(len(out), self._size - self._pos)
        if want <= 0:
            return 0
        first, last = self._pos, self._pos + want - 1
        response = self._storage.request(
            "GET", self.lfn, headers={"Range": f"bytes={first}-{last}"}
        )
        data = response.content
        if response.status_code == 200:  # the server ignored Range: take our slice
            data = data[first : last + 1]
        self.requests += 1
        n = min(len(data), want)
        out[:n] = data[:n]
        self._pos += n
        return n


def open_plaintext(
    raw: HttpRangeFile,
    key_for: Callable[[str], bytes],
    *,
    buffer_size: int = READ_AHEAD,
) -> RangeReader:
    """A seekable plaintext file object over *raw* (``key_for(key_id)`` supplies the key).

    Raises ``InvalidCiphertext`` if the key does not open the file (checked before any chunk
    is decrypted), ``UnsupportedFormat`` if *raw* is not an MDM object.
    """
    buffered = io.BufferedReader(raw, buffer_size=buffer_size)
    try:
        header = read_header(buffered)
        key = key_for(str(header.key_id))
        return RangeReader(buffered, key, close_source=True)
    except BaseException:
        buffered.close()
        raise


__all__ = ["READ_AHEAD", "HttpRangeFile", "open_plaintext"]
