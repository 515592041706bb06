"""A strict reader of ``multipart/byteranges`` bodies (RFC 9110 §14.6), for the SE's tests.

Strict on purpose: any framing error fails the test, since davix and curl read these bodies
byte for byte (davix expects Content-Range as the last header line of a part).
"""

from __future__ import annotations

import re


def byteranges(body: bytes, content_type: str, size: int) -> list[tuple[int, int, bytes]]:
    """``(first, last, bytes)`` of each part of *body*; every part says the file is *size*."""
    m = re.fullmatch(r"multipart/byteranges; boundary=([0-9A-Za-z]{1,70})", content_type)
    assert m, content_type
    delim = b"--" + m.group(1).encode()
    out: list[tuple[int, int, bytes]] = []
    pos = 0
    while True:
        lead = b"\r\n" if out else b""
        assert body[pos:].startswith(lead + delim), body[pos : pos + 80]
        pos += len(lead + delim)
        if body[pos:] == b"--\r\n":
            return out
        head_end = body.index(b"\r\n\r\n", pos)
        lines = body[pos:head_end].decode("ascii").split("\r\n")
        assert lines[0] == ""  # the CRLF that ends the delimiter line
        assert lines[1:] == ["Content-Type: application/octet-stream", lines[2]]
        cr = re.fullmatch(r"Content-Range: bytes (\d+)-(\d+)/(\d+)", lines[2])
        assert cr, lines[2]
        first, last = int(cr.group(1)), int(cr.group(2))
        assert int(cr.group(3)) == size
        pos = head_end + 4
        out.append((first, last, body[pos : pos + last - first + 1]))
        pos += last - first + 1
