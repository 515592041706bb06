"""File keys kept in files: for ``mdm encrypt``/``mdm decrypt`` and tests, not for production.

In production a file key never touches disk: the recall worker splits it onto the key servers
and the client rebuilds it in memory. A key file is the escape hatch (and the README round
trip). Two encodings are accepted, and cannot be confused because their lengths differ:

* exactly 32 raw bytes;
* 64 hexadecimal digits (either case), optionally followed by one ``\\n`` or ``\\r\\n``.

:func:`write_key_file` writes the hex form (it survives copy and paste, and ``cat``), creating
the file with mode 0600 and refusing to overwrite an existing one: overwriting a key file loses
the only copy of that key.
"""

from __future__ import annotations

import binascii
import os
import stat
from pathlib import Path

from mdm.errors import UsageError

__all__ = ["key_file_is_private", "read_key_file", "write_key_file"]

_KEY_LEN = 32


def read_key_file(path: str | os.PathLike[str]) -> bytes:
    """The 32-byte key stored in *path* (raw or hex); UsageError naming the problem."""
    p = Path(path)
    try:
        # A key file is tiny; reading a little more than the largest valid form lets us say
        # "too long" without reading a huge file by mistake.
        with p.open("rb") as f:
            data = f.read(_KEY_LEN * 2 + 3)
    except FileNotFoundError:
        raise UsageError(f"key file {p} does not exist") from None
    except OSError as exc:
        raise UsageError(f"cannot read key file {p}: {exc.strerror}") from None
    if len(data) == _KEY_LEN:
        return data
    text = data.removesuffix(b"\n").removesuffix(b"\r")
    if len(text) == _KEY_LEN * 2:
        try:
            return binascii.unhexlify(text)
        except binascii.Error:
            pass
    raise UsageError(
        f"key file {p} holds neither 32 raw bytes nor 64 hex digits "
        f"({len(data)}{'+' if len(data) > _KEY_LEN * 2 + 2 else ''} bytes)"
    )


def write_key_file(path: str | os.PathLike[str], key: bytes, *, overwrite: bool = False) -> None:
    """Create *path* (mode 0600) holding *key* as 64 hex digits and a newline.

    An existing *path* is refused unless *overwrite* (``mdm keys fetch --out``: the user asked
    for that file to be written).
    """
    if len(key) != _KEY_LEN:
        raise UsageError("an MDM file key is exactly 32 bytes")
    p = Path(path)
    try:
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL), 0o600)
    except FileExistsError:
        raise UsageError(f"key file {p} already exists; refusing to overwrite a key") from None
    except OSError as exc:
        raise UsageError(f"cannot create key file {p}: {exc.strerror}") from None
    with os.fdopen(fd, "wb") as f:
        f.write(key.hex().encode("ascii") + b"\n")
        f.flush()
        os.fsync(f.fileno())


def key_file_is_private(path: str | os.PathLike[str]) -> bool:
    """Whether no one but the owner may read or write *path* (like ssh's check on keys)."""
    return not stat.S_IMODE(os.stat(path).st_mode) & 0o077
