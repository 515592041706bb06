"""Byte ranges of a GET (RFC 9110 §14): the ``Range`` header and ``multipart/byteranges`` bodies.

Grid readers ask for parts of a file: python3-gfal2 ``pread`` sends one range, davix vector
reads (ROOT, XRootD-over-HTTP) and ``curl -r a-b,c-d`` send several at once. Answering several
ranges with the whole file is correct but wastes bandwidth on large files, so the storage
element answers them with one ``multipart/byteranges`` body (RFC 9110 §14.6):

* ``parse_ranges`` turns the header into the spans to send. Unsatisfiable specs are dropped
  (all of them unsatisfiable: ``Unsatisfiable``, a 416); a malformed header, or one with more
  specs than the cap, is ignored (``None``: 200 and the whole file, which §14.2 allows).
  Overlapping and adjacent spans are coalesced (§14.2 allows it "regardless of the order"), and
  the rest keeps the order of the request (§14.6 SHOULD); a span merged from several specs
  takes the place of its first one. Coalescing bounds the body by the file size plus the part
  headers, whatever the client repeats: the Apache "Range: bytes=0-,0-,0-,..." amplification
  (CVE-2011-3192) gives one part here.
* ``Multipart`` fixes the random boundary and every part header before the first byte is sent,
  so the exact ``Content-Length`` is known up front (davix and curl both rely on it).
* ``multipart_body`` / ``span_body`` stream from the open file a chunk at a time through the
  thread pool: memory stays flat whatever the file and range sizes.

The wire shape is the one davix 0.8 parses (``src/fileops/httpiovec.cpp``): an unquoted
boundary of at most 70 characters, each part ``--boundary``, ``Content-Type``, then
``Content-Range`` as the *last* header line before the blank line, the bytes, CRLF; the body ends
with ``--boundary--``. davix maps every part onto its requests by the part's ``Content-Range``,
so coalesced or reordered parts are fine for it.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO

from starlette.concurrency import run_in_threadpool

#: Bytes read from the file per thread-pool call (and the largest body piece sent at once).
CHUNK = 1 << 20

#: Small pieces (part headers, short spans) are gathered up to this size before being sent,
#: so a vector read of many tiny ranges is not one ASGI ``send`` per part header.
_GATHER = 64 << 10

#: Media type of every part: the SE serves each file as opaque bytes.
PART_TYPE = "application/octet-stream"

#: Any number with more significant digits than this is larger than any file we serve; it is
#: clamped before ``int()`` so a hostile header cannot hit Python's int-parsing digit limit.
_MAX_DIGITS = 18
_HUGE = 1 << 63

_SPEC = re.compile(r"[ \t]*([0-9]*)[ \t]*-[ \t]*([0-9]*)[ \t]*")


class Unsatisfiable(ValueError):
    """No range of the header selects a byte of the file: answer 416, ``bytes */size``."""


@dataclass(frozen=True)
class Span:
    """Bytes ``first`` to ``last`` of a file, both included (the ``Content-Range`` notation)."""

    first: int
    last: int

    @property
    def length(self) -> int:
        return self.last - self.first + 1

    def content_range(self, size: int) -> str:
        return f"bytes {self.first}-{self.last}/{size}"


def _number(digits: str) -> int:
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= _MAX_DIGITS else _HUGE


def _span(spec: str, size: int) -> Span | None:
    """The span of one range-spec (``None``: unsatisfiable); ``ValueError`` if it is invalid."""
    m = _SPEC.fullmatch(spec)
    if m is None or not (m.group(1) or m.group(2)):
        raise ValueError(f"not a byte range: {spec!r}")
    first, last = m.group(1), m.group(2)
    if not first:  # suffix-range: the last N bytes; "-0" selects nothing (§14.1.2)
        n = _number(last)
        return Span(max(0, size - n), size - 1) if n and size else None
    a = _number(first)
    b = _number(last) if last else _HUGE
    if b < a:  # §14.1.1: an invalid int-range makes the whole header invalid
        raise ValueError(f"last byte before first byte: {spec!r}")
    return Span(a, min(b, size - 1)) if a < size else None


def coalesce(spans: Sequence[Span]) -> list[Span]:
    """Merge overlapping and adjacent spans; each result sits where its first member was."""
    order = sorted(range(len(spans)), key=lambda i: spans[i].first)
    merged: list[tuple[int, Span]] = []  # (index of the first member in the request, span)
    for i in order:
        span = spans[i]
        if merged and span.first <= merged[-1][1].last + 1:
            at, top = merged[-1]
            merged[-1] = (min(at, i), Span(top.first, max(top.last, span.last)))
        else:
            merged.append((i, span))
    return [span for _at, span in sorted(merged, key=lambda m: m[0])]


def parse_ranges(header: str | None, size: int, max_ranges: int) -> list[Span] | None:
    """The spans to send for a ``Range`` header, coalesced, in request order.

    ``None`` means "ignore the header and send the whole file": no header, another unit than
    ``bytes``, a malformed or invalid spec, or more than *max_ranges* specs (an amplification
    guard; ``max_ranges`` below 2 turns multi-range answers off, a single range still works).
    Raises ``Unsatisfiable`` when no spec selects a byte of a *size*-byte file.
    """
    if not header:
        return None
    unit, eq, spec_list = header.partition("=")
    if not eq or unit.strip().lower() != "bytes":
        return None
    specs = [s for s in spec_list.split(",") if s.strip()]  # §5.6.1: empty elements are fine
    if not specs or (len(specs) > 1 and len(specs) > max_ranges):
        return None
    try:
        spans = [_span(s, size) for s in specs]
    except ValueError:
        return None
    satisfiable = [s for s in spans if s is not None]
    if not satisfiable:
        raise Unsatisfiable(f"no range lies within the {size} bytes of the file")
    return coalesce(satisfiable)


@dataclass(frozen=True)
class Multipart:
    """A ``multipart/byteranges`` answer, laid out before sending (exact ``Content-Length``).

    ``parts`` pairs each part's header block (with the CRLF that ends the previous part's
    bytes) with its span; ``tail`` closes the body.
    """

    boundary: str
    parts: tuple[tuple[bytes, Span], ...]
    tail: bytes

    @classmethod
    def plan(cls, spans: Sequence[Span], size: int) -> Multipart:
        # 128 random bits: a boundary that occurs in the file's bytes is not a practical risk,
        # and nothing about the file or the reader can be learnt from it.
        boundary = secrets.token_hex(16)
        parts = tuple(
            ((b"\r\n" if i else b"") + _part_head(boundary, span, size), span)
            for i, span in enumerate(spans)
        )
        return cls(boundary, parts, f"\r\n--{boundary}--\r\n".encode("ascii"))

    @property
    def content_type(self) -> str:
        return f"multipart/byteranges; boundary={self.boundary}"

    @property
    def content_length(self) -> int:
        return sum(len(head) + span.length for head, span in self.parts) + len(self.tail)

    @property
    def payload(self) -> int:
        """File bytes in the body (for the audit log)."""
        return sum(span.length for _head, span in self.parts)


def _part_head(boundary: str, span: Span, size: int) -> bytes:
    return (
        f"--{boundary}\r\nContent-Type: {PART_TYPE}\r\n"
        f"Content-Range: {span.content_range(size)}\r\n\r\n"
    ).encode("ascii")


def _read_at(fh: BinaryIO, offset: int, n: int) -> bytes:
    fh.seek(offset)
    return fh.read(n)


async def _chunks(fh: BinaryIO, span: Span) -> AsyncIterator[bytes]:
    """The bytes of *span*, a chunk per thread-pool call; never pads a short file."""
    pos, end = span.first, span.last + 1
    while pos < end:
        chunk = await run_in_threadpool(_read_at, fh, pos, min(CHUNK, end - pos))
        if not chunk:  # cannot happen with an open unlinked copy; never pad or invent
            raise OSError("cache copy shorter than its size")
        pos += len(chunk)
        yield chunk


async def span_body(fh: BinaryIO, span: Span) -> AsyncIterator[bytes]:
    """A plain (200 or 206) body: the bytes of *span*; closes *fh* at the end or on abort."""
    try:
        async for chunk in _chunks(fh, span):
            yield chunk
    finally:
        fh.close()


async def multipart_body(fh: BinaryIO, multipart: Multipart) -> AsyncIterator[bytes]:
    """The ``multipart/byteranges`` body of *multipart*; closes *fh* at the end or on abort.

    Part headers and short spans are gathered into pieces of up to ``_GATHER`` bytes; large
    chunks go out as read. At most ``CHUNK + _GATHER`` bytes are held at any time.
    """
    gathered = bytearray()
    try:
        for head, span in multipart.parts:
            gathered += head
            async for chunk in _chunks(fh, span):
                if len(chunk) >= _GATHER:
                    if gathered:
                        yield bytes(gathered)
                        gathered.clear()
                    yield chunk
                else:
                    gathered += chunk
                    if len(gathered) >= _GATHER:
                        yield bytes(gathered)
                        gathered.clear()
        gathered += multipart.tail
        yield bytes(gathered)
    finally:
        fh.close()


__all__ = [
    "CHUNK",
    "Multipart",
    "Span",
    "Unsatisfiable",
    "coalesce",
    "multipart_body",
    "parse_ranges",
    "span_body",
]
