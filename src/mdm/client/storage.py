"""Client of a storage element: WLCG Tape REST v1 staging, WebDAV listing, ciphertext downloads.

This is access level 1 (ARCHITECTURE.md): everything here handles *encrypted* files only and
needs nothing but the catalog ACL ``read``/``list`` rights the SE checks. It speaks exactly the
protocols real grid clients speak to ``mdm serve se`` (docs/storage-element.md), so the same
calls work against any WebDAV + Tape REST endpoint:

* ``stage``/``poll``/``wait``/``cancel``/``release``/``archiveinfo``: Tape REST API v1;
* ``stat``/``ls``: ``PROPFIND`` Depth 0/1; ``checksum``: ``HEAD`` with ``Want-Digest``
  (RFC 3230);
* ``download``: ``GET`` with ``Range`` to resume a ``.part`` file after a cut connection, then
  verification of the size and of the catalog's sha256/adler32 before the file is renamed into
  place, so a caller never sees a partial or corrupt ciphertext;
* ``open_raw``: a seekable file object whose reads are HTTP range requests
  (:class:`mdm.client.files.HttpRangeFile`).

Errors are the ``mdm.errors`` classes the SE sent (problem+json ``type``), e.g. ``FileOffline``
for a NEARLINE file; network failures are ``TransportError``.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import os
import time
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit
from xml.etree import ElementTree

import httpx

from mdm.client._http import ServiceClient
from mdm.errors import (
    ChecksumMismatch,
    RemoteError,
    StorageError,
    TransportError,
)

logger = logging.getLogger(__name__)

API = "/api/v1"
DAV = "{DAV:}"
#: Called with the number of bytes just received (progress bars).
Progress = Callable[[int], None]
_TERMINAL = frozenset({"COMPLETED", "FAILED", "CANCELLED", "CANCELED"})
_BLOCK = 1 << 20


@dataclass(frozen=True)
class DavEntry:
    """One PROPFIND answer entry: a file (size exact once ONLINE) or a collection."""

    path: str
    is_dir: bool
    size: int | None
    etag: str | None
    modified: str | None


def lfn_of(url_or_path: str) -> str:
    """``/dicom/...`` from an LFN or from a replica URL (``davs://host:port/dicom/...``)."""
    if "://" in url_or_path:
        return unquote(urlsplit(url_or_path).path) or "/"
    return url_or_path if url_or_path.startswith("/") else "/" + url_or_path


def https_url(url: str) -> str:
    """grid clients write ``davs://``; on the wire it is HTTPS."""
    for scheme, repl in (("davs://", "https://"), ("dav://", "http://")):
        if url.startswith(scheme):
            return repl + url[len(scheme) :]
    return url


class StorageClient(ServiceClient):
    """One storage element. Use as a context manager, or call ``close()``."""

    service = "storage element"
    url_setting = "storage.url"
    default_timeout = 60.0

    def __init__(self, base_url: str, *, poll_interval: float = 0.25, **kw: Any) -> None:
        super().__init__(https_url(base_url) if base_url else base_url, **kw)
        self.poll_interval = poll_interval

    # ----------------------------------------------------------------------- transport

    def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        """One request; a 4xx/5xx answer is raised as the ``mdm.errors`` class it names."""
        try:
            response = self._http.request(method, _quoted(path), **kw)
        except httpx.HTTPError as exc:
            raise TransportError(f"storage {method} {path}: {exc}") from exc
        self._raise_for(response, method, path)
        return response

    @contextlib.contextmanager
    def _stream(self, path: str, headers: Mapping[str, str]) -> Iterator[httpx.Response]:
        try:
            with self._http.stream("GET", _quoted(path), headers=dict(headers)) as response:
                if response.status_code >= 400:
                    response.read()
                    self._raise_for(response, "GET", path)
                yield response
        except httpx.HTTPError as exc:
            raise TransportError(f"storage GET {path}: {exc}") from exc

    # ------------------------------------------------------------------ Tape REST v1

    def stage(self, paths: Sequence[str], *, lifetime_seconds: int | None = None) -> str:
        """Submit one bulk staging request; returns its id."""
        files: list[dict[str, Any]] = []
        for p in paths:
            item: dict[str, Any] = {"path": lfn_of(p)}
            if lifetime_seconds:
                item["diskLifetime"] = f"PT{int(lifetime_seconds)}S"
            files.append(item)
        body = self.request("POST", f"{API}/stage", json={"files": files}).json()
        return str(body["requestId"])

    def poll(self, request_id: str) -> dict[str, Any]:
        """The request as the SE reports it: ``{"id", "files": [{"path", "state", ...}]}``."""
        return dict(self.request("GET", f"{API}/stage/{request_id}").json())

    def wait(
        self,
        request_id: str,
        *,
        timeout: float = 600.0,
        on_poll: Callable[[dict[str, str]], None] | None = None,
    ) -> dict[str, dict[str, Any]]:
        """Poll until every file is terminal; returns ``{path: file record}``.

        Polling backs off from ``poll_interval`` to 2 s. ``on_poll`` gets ``{path: state}``
        after each poll (progress bars). Raises ``StorageError`` on timeout; FAILED files are
        returned, not raised: the caller decides what a partial success means.
        """
        deadline = time.monotonic() + timeout
        delay = self.poll_interval
        while True:
            files = {str(f["path"]): dict(f) for f in self.poll(request_id).get("files", [])}
            if on_poll is not None:
                on_poll({p: str(f.get("state", "")) for p, f in files.items()})
            if all(str(f.get("state")) in _TERMINAL for f in files.values()):
                return files
            if time.monotonic() > deadline:
                pending = sum(str(f.get("state")) not in _TERMINAL for f in files.values())
                raise StorageError(
                    f"staging request {request_id}: {pending} file(s) still pending after "
                    f"{timeout:.0f}s",
                    request_id=request_id,
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 2.0)

    def cancel(self, request_id: str, paths: Sequence[str]) -> None:
        body = {"paths": [lfn_of(p) for p in paths]}
        self.request("POST", f"{API}/stage/{request_id}/cancel", json=body)

    def release(self, request_id: str, paths: Sequence[str]) -> None:
        """Drop this request's pins (the copies may then be evicted)."""
        body = {"paths": [lfn_of(p) for p in paths]}
        self.request("POST", f"{API}/release/{request_id}", json=body)

    def archiveinfo(self, paths: Sequence[str]) -> dict[str, str]:
        """``{path: locality}`` (``TAPE``, ``DISK_AND_TAPE``...) or ``{path: "error: ..."}``."""
        body = {"paths": [lfn_of(p) for p in paths]}
        out: dict[str, str] = {}
        for item in self.request("POST", f"{API}/archiveinfo", json=body).json():
            path = str(item.get("path"))
            out[path] = (
                str(item["locality"]) if "locality" in item else f"error: {item.get('error')}"
            )
        return out

    # ------------------------------------------------------------------------ WebDAV

    def stat(self, path: str) -> DavEntry:
        return self._propfind(path, 0)[0]

    def ls(self, path: str) -> list[DavEntry]:
        """The children of a collection (the collection itself left out)."""
        want = lfn_of(path).rstrip("/")
        return [e for e in self._propfind(path, 1) if e.path.rstrip("/") != want]

    def _propfind(self, path: str, depth: int) -> list[DavEntry]:
        response = self.request("PROPFIND", lfn_of(path), headers={"Depth": str(depth)})
        return parse_multistatus(response.content)

    def checksum(self, path: str, algorithm: str = "adler32") -> str | None:
        """The SE's checksum by ``Want-Digest`` (adler32: 8 hex digits; sha-256: hex)."""
        response = self.request("HEAD", lfn_of(path), headers={"Want-Digest": algorithm})
        for part in response.headers.get("Digest", "").split(","):
            name, _, value = part.strip().partition("=")
            if name.lower() == algorithm.lower():
                if name.lower() in ("sha-256", "md5"):
                    return base64.b64decode(value).hex()
                return value.lower()
        return None

    def download(
        self,
        path: str,
        dest: str | os.PathLike[str],
        *,
        size: int | None = None,
        sha256: str | None = None,
        adler32: str | None = None,
        progress: Progress | None = None,
        attempts: int = 3,
    ) -> int:
        """Download the ciphertext of *path* to *dest*; returns its size.

        Bytes go to ``<dest>.part``; a cut connection resumes with ``Range: bytes=<have>-``
        (up to *attempts* tries), with ``If-Range`` on the ETag so a file that changed meanwhile
        restarts from zero. Then size and checksums are checked and the file is renamed into
        place: on any failure *dest* does not exist (``ChecksumMismatch`` for a bad copy).
        """
        dest = Path(dest)
        part = dest.with_name(dest.name + ".part")
        lfn = lfn_of(path)
        etag: str | None = None
        try:
            for attempt in range(1, attempts + 1):
                have = part.stat().st_size if part.exists() else 0
                headers = {"Range": f"bytes={have}-"} if have else {}
                if have and etag:
                    headers["If-Range"] = etag
                try:
                    with self._stream(lfn, headers) as response:
                        etag = response.headers.get("ETag") or etag
                        mode = "ab" if response.status_code == 206 else "wb"
                        with part.open(mode) as fh:
                            for block in response.iter_bytes(_BLOCK):
                                fh.write(block)
                                if progress is not None:
                                    progress(len(block))
                    break
                except TransportError:
                    if attempt == attempts:
                        raise
                    logger.info("download of %s cut at attempt %d; resuming", lfn, attempt)
            got = part.stat().st_size
            if size is not None and got != size:
                raise ChecksumMismatch(
                    f"{lfn}: got {got} bytes, the catalog records {size}", lfn=lfn
                )
            if sha256 or adler32:
                verify_checksums(part, lfn, sha256=sha256, adler32=adler32)
            os.replace(part, dest)
            return got
        except BaseException:
            part.unlink(missing_ok=True)
            raise

    def open_raw(self, path: str, size: int | None = None) -> Any:
        """A seekable binary file object over the ciphertext, read by HTTP ranges."""
        from mdm.client.files import HttpRangeFile

        return HttpRangeFile(self, lfn_of(path), size=size)


def verify_checksums(
    path: Path, lfn: str, *, sha256: str | None = None, adler32: str | None = None
) -> None:
    """Raise ``ChecksumMismatch`` unless the file's sha256 / adler32 equal the recorded ones."""
    h = hashlib.sha256()
    a = 1
    with path.open("rb") as fh:
        while block := fh.read(_BLOCK):
            h.update(block)
            a = zlib.adler32(block, a)
    if sha256 and h.hexdigest() != sha256.lower():
        raise ChecksumMismatch(f"{lfn}: sha256 differs from the catalog's", lfn=lfn)
    if adler32 and f"{a:08x}" != adler32.lower().rjust(8, "0"):
        raise ChecksumMismatch(f"{lfn}: adler32 differs from the catalog's", lfn=lfn)


def parse_multistatus(body: bytes) -> list[DavEntry]:
    """``DavEntry`` for each ``<d:response>`` of a WebDAV 207 body (RFC 4918 §14.16)."""
    try:
        root = ElementTree.fromstring(body)  # noqa: S314 - our own SE's answer, no DTDs
    except ElementTree.ParseError as exc:
        raise RemoteError(f"storage element sent malformed WebDAV XML: {exc}") from exc
    out = []
    for resp in root.iter(f"{DAV}response"):
        href = unquote(resp.findtext(f"{DAV}href") or "")
        prop = resp.find(f"{DAV}propstat/{DAV}prop")
        is_dir = prop is not None and prop.find(f"{DAV}resourcetype/{DAV}collection") is not None
        length = prop.findtext(f"{DAV}getcontentlength") if prop is not None else None
        out.append(
            DavEntry(
                path=lfn_of(href).rstrip("/") or "/",
                is_dir=is_dir,
                size=int(length) if length and length.isdigit() else None,
                etag=prop.findtext(f"{DAV}getetag") if prop is not None else None,
                modified=prop.findtext(f"{DAV}getlastmodified") if prop is not None else None,
            )
        )
    return out


def _quoted(path: str) -> str:
    return quote(path, safe="/:@-._~")


__all__ = [
    "DavEntry",
    "StorageClient",
    "https_url",
    "lfn_of",
    "parse_multistatus",
    "verify_checksums",
]
