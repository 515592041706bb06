"""``Client(settings)``: the three access levels as one object, and the high-level verbs.

Composition, not inheritance (STYLE C14): ``client.catalog`` (QIDO-RS, ls, stat, ACLs, identity
vault), ``client.storage`` (Tape REST staging, WebDAV, ciphertext downloads) and
``client.keys`` (the n key servers) are the sub-clients, each created on first use, so a level-1
user who never decrypts needs no key-server settings. On top of them:

* ``get``: expand directories, stage what is NEARLINE in one bulk request and wait, then
  download in parallel (bounded by ``concurrency``), verify size and checksums against the
  catalog, fetch the key from k of n servers and decrypt streaming. Every output file appears
  atomically or not at all; one file's failure is reported in its result, not raised, so a
  batch of 500 is not lost to one bad file.
* ``open``: a seekable plaintext file object that decrypts only the chunks read.
* ``grant``/``revoke``: one call that changes the catalog ACL of a study and the ACL of every
  key of that study on all key servers, and reports what did not take.

Levels (ARCHITECTURE.md): 1 = catalog ``list`` + ``read`` (ciphertext); 2 = 1 + catalog
``decrypt`` (which the recall worker copies onto new keys) + key ``read`` on every existing key
of the study on the key servers (content); 3 = 2 + catalog ``identity`` (original identity).
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mdm.client.access import AccessChange, change_access
from mdm.client.catalog import CatalogClient
from mdm.client.files import open_plaintext
from mdm.client.keys import KeysClient
from mdm.client.storage import StorageClient, lfn_of
from mdm.crypto import RangeReader, decrypt_file, read_header
from mdm.errors import ChecksumMismatch, MDMError, StorageError, UsageError
from mdm.settings import Settings

logger = logging.getLogger(__name__)

ROOT = "/dicom"
#: Paths per Tape REST request (the SE accepts up to ``storage.max_bulk_paths``, 10000).
BULK = 1000


@dataclass
class GetResult:
    """What happened to one file of a ``get``."""

    lfn: str
    dest: Path | None = None
    ciphertext_bytes: int = 0
    plaintext_bytes: int = 0
    staged: bool = False
    seconds: float = 0.0
    error: MDMError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class GetEvents:
    """Optional callbacks for progress display (all called from worker threads)."""

    on_stage: Callable[[Mapping[str, str]], None] | None = None
    on_bytes: Callable[[int], None] | None = None
    on_file: Callable[[GetResult], None] | None = None
    on_plan: Callable[[int], None] | None = None  # number of files, before staging
    on_total: Callable[[int], None] | None = None  # ciphertext bytes, once staging is done


class Client:
    """Everything a user does with MDM, at the level their certificate allows."""

    def __init__(
        self,
        settings: Settings,
        *,
        catalog: CatalogClient | None = None,
        storage: StorageClient | None = None,
        keys: KeysClient | None = None,
        concurrency: int = 4,
    ) -> None:
        self.settings = settings
        self.concurrency = max(1, concurrency)
        self._catalog = catalog
        self._storage = storage
        self._keys = keys
        self._lock = threading.Lock()
        self._keys_pool: ThreadPoolExecutor | None = None

    # ------------------------------------------------------------------- sub-clients

    @property
    def catalog(self) -> CatalogClient:
        with self._lock:
            if self._catalog is None:
                self._catalog = CatalogClient.from_settings(self.settings)
            return self._catalog

    @property
    def storage(self) -> StorageClient:
        with self._lock:
            if self._storage is None:
                self._storage = StorageClient.from_settings(self.settings)
            return self._storage

    @property
    def keys(self) -> KeysClient:
        with self._lock:
            if self._keys is None:
                self._keys = KeysClient(self.settings)
            return self._keys

    def close(self) -> None:
        if self._keys_pool is not None:
            self._keys_pool.shutdown(wait=True, cancel_futures=True)
            self._keys_pool = None
        for sub in (self._catalog, self._storage, self._keys):
            if sub is not None:
                sub.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------ reading

    def files(self, path: str) -> list[dict[str, Any]]:
        """Catalog entries of every file at or below *path* (an LFN, GUID or directory)."""
        entry = self.catalog.stat(path)
        if entry.get("kind") != "directory":
            return [entry]
        out: list[dict[str, Any]] = []
        stack = [str(entry["path"])]
        while stack:
            directory = stack.pop()
            offset = 0
            while True:
                page = self.catalog.ls(directory, limit=1000, offset=offset)
                for child in page:
                    if child.get("kind") == "directory":
                        stack.append(str(child["path"]))
                    else:
                        out.append(child)
                if len(page) < 1000:
                    break
                offset += len(page)
        return sorted(out, key=lambda e: str(e["path"]))

    def stage(
        self,
        paths: Sequence[str],
        *,
        wait: bool = True,
        timeout: float = 600.0,
        on_poll: Callable[[Mapping[str, str]], None] | None = None,
    ) -> tuple[dict[str, list[str]], dict[str, str]]:
        """Bring files online; ``({request id: its paths}, {lfn: state})``; online ones skipped.

        Paths go to the SE in bulk requests of at most ``BULK`` paths (the SE refuses more than
        ``storage.max_bulk_paths``). With ``wait`` the call returns when every file is
        COMPLETED or FAILED (``"FAILED: <reason>"``).
        """
        lfns = list(dict.fromkeys(lfn_of(p) for p in paths))
        where: dict[str, str] = {}
        for batch in _batches(lfns):
            where.update(self.storage.archiveinfo(batch))
        offline = [p for p in lfns if "DISK" not in where.get(p, "")]
        states = {p: "ONLINE" for p in lfns if p not in offline}
        life = self.settings.storage.pin_lifetime_seconds
        ids = {self.storage.stage(b, lifetime_seconds=life): b for b in _batches(offline)}
        if not wait:
            states.update({p: "SUBMITTED" for p in offline})
            return ids, states
        seen: dict[str, str] = {}

        def polled(batch_states: Mapping[str, str]) -> None:
            seen.update(batch_states)
            if on_poll is not None:
                on_poll(seen)

        deadline = time.monotonic() + timeout
        for request_id in ids:
            left = max(1.0, deadline - time.monotonic())
            done = self.storage.wait(request_id, timeout=left, on_poll=polled)
            for p, f in done.items():
                states[p] = f"FAILED: {f['error']}" if f.get("error") else str(f.get("state"))
        return ids, states

    def get(
        self,
        paths: Sequence[str],
        dest: str | os.PathLike[str],
        *,
        decrypt: bool = True,
        timeout: float = 600.0,
        events: GetEvents | None = None,
    ) -> list[GetResult]:
        """Download (and decrypt) every file at or below *paths* into directory *dest*.

        Output: ``dest/<study>/<series>/<instance>.dcm`` (``.mdm`` for ciphertext). One result
        per file; a file's error is in its result. Files this call staged are released after.
        """
        ev = events or GetEvents()
        out_dir = Path(dest)
        out_dir.mkdir(parents=True, exist_ok=True)
        entries = self._entries(paths)
        if ev.on_plan is not None:
            ev.on_plan(len(entries))
        request_ids, states = self.stage(
            [str(e["path"]) for e in entries], timeout=timeout, on_poll=ev.on_stage
        )
        staged = {p for p, s in states.items() if s != "ONLINE"}
        if any(not (e.get("size") and e.get("sha256")) for e in entries):
            # A first recall records size and checksums: read them now, or nothing is verified.
            entries = self._entries(paths)
        if ev.on_total is not None:
            ev.on_total(sum(int(e.get("size") or 0) for e in entries))

        def one(entry: dict[str, Any]) -> GetResult:
            lfn = str(entry["path"])
            result = GetResult(lfn, staged=lfn in staged)
            t0 = time.monotonic()
            try:
                state = states.get(lfn, "")
                if state.startswith("FAILED") or state in ("CANCELLED", "CANCELED"):
                    raise StorageError(f"{lfn}: staging {state.lower()}", lfn=lfn)
                self._fetch_one(entry, out_dir, decrypt, result, ev)
            except MDMError as exc:
                result.error = exc
                logger.info("get %s failed: %s", lfn, exc)
            result.seconds = time.monotonic() - t0
            if ev.on_file is not None:
                ev.on_file(result)
            return result

        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="mdm-get") as pool:
            results = list(pool.map(one, entries))
        for request_id, batch in request_ids.items():
            try:
                self.storage.release(request_id, batch)
            except MDMError as exc:  # the pins expire anyway; say so and go on
                logger.warning("release of staging request %s failed: %s", request_id, exc)
        return results

    def _entries(self, paths: Sequence[str]) -> list[dict[str, Any]]:
        seen: dict[str, dict[str, Any]] = {}
        for p in paths:
            for e in self.files(p):
                seen.setdefault(str(e["path"]), e)
        return list(seen.values())

    def _fetch_one(
        self, entry: Mapping[str, Any], out_dir: Path, decrypt: bool, result: GetResult,
        ev: GetEvents,
    ) -> None:  # fmt: skip
        lfn = str(entry["path"])
        rel = lfn[len(ROOT) :].strip("/") if lfn.startswith(ROOT + "/") else lfn.strip("/")
        target = out_dir / (rel + (".dcm" if decrypt else ".mdm"))
        target.parent.mkdir(parents=True, exist_ok=True)
        cipher = target.with_name(target.name + ".mdm-download") if decrypt else target
        recorded = str(entry.get("key_id") or "")
        # The key fetch (k of n servers) overlaps the download when the catalog names the key.
        early = self._key_pool().submit(self.keys.fetch, recorded) if decrypt and recorded else None
        try:
            result.ciphertext_bytes = self.storage.download(
                lfn,
                cipher,
                size=entry.get("size"),
                sha256=entry.get("sha256"),
                adler32=entry.get("adler32"),
                progress=ev.on_bytes,
            )
            if decrypt:
                with cipher.open("rb") as fh:
                    key_id = str(read_header(fh).key_id)
                if recorded and recorded != key_id:
                    raise ChecksumMismatch(
                        f"{lfn}: the file names key {key_id}, the catalog {recorded}", lfn=lfn
                    )
                key = early.result() if early is not None else self.keys.fetch(key_id)
                header = decrypt_file(cipher, target, key)
                result.plaintext_bytes = header.plaintext_len
        finally:
            if decrypt:
                cipher.unlink(missing_ok=True)
        result.dest = target

    def _key_pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._keys_pool is None:
                self._keys_pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="mdm-key")
            return self._keys_pool

    def open(self, lfn: str) -> RangeReader:
        """A readable, seekable plaintext file object decrypting only the chunks read.

        The file must be ONLINE (``FileOffline`` otherwise: stage it first).
        """
        entry: dict[str, Any] = {"path": lfn}
        if self.settings.catalog.url or self._catalog is not None:
            entry = self.catalog.stat(lfn)
        if entry.get("kind") == "directory":
            raise UsageError(f"{lfn} is a directory; open takes one file")
        raw = self.storage.open_raw(str(entry["path"]), size=entry.get("size"))
        return open_plaintext(raw, self.keys.fetch)

    def cat(self, lfn: str, out: Any) -> int:
        """Decrypt one file to the binary stream *out*, streaming; returns the bytes written."""
        with self.open(lfn) as fh:
            shutil.copyfileobj(fh, out, 1 << 20)
            return int(fh.size)

    # ------------------------------------------------------------------------- access

    def grant(self, study: str, to: str, level: int) -> AccessChange:
        """Give *to* (``dn:``/``fqan:``) access *level* (1, 2 or 3) to a study.

        Order: the catalog first (level 1 and 3 rights), then every key of the study on the
        key servers (level >= 2). Partial failures are in the result, never swallowed.
        """
        return change_access(self, study, to, level, grant=True)

    def revoke(self, study: str, to: str, level: int = 1) -> AccessChange:
        """Take away access *level* and every level above it (``level=1``: everything).

        Keys first (content is what matters most), then the catalog.
        """
        return change_access(self, study, to, level, grant=False)

    # ------------------------------------------------------------------------- health

    def status(self) -> dict[str, Any]:
        """Health of the catalog, the storage element and each key server (never raises)."""
        out: dict[str, Any] = {}
        out["catalog"] = _probe(self.settings.catalog.url, lambda: self.catalog.ls(ROOT, limit=1))
        out["storage"] = _probe(
            self.settings.storage.url, lambda: self.storage.request("OPTIONS", "/")
        )
        servers: list[dict[str, Any]] = []
        if self.settings.keystore.servers:
            try:
                for s in self.keys.status():
                    servers.append(_asdict(s))
            except MDMError as exc:
                servers.append({"ok": False, "error": f"{type(exc).__name__}: {exc.message}"})
        out["keyservers"] = servers
        out["threshold"] = self.settings.keystore.threshold
        return out


def _batches(items: Sequence[str], size: int = 0) -> list[list[str]]:
    size = size or BULK
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def _probe(url: str, call: Callable[[], Any]) -> dict[str, Any]:
    if not url:
        return {"url": "", "ok": False, "error": "not configured"}
    t0 = time.monotonic()
    try:
        call()
    except MDMError as exc:
        # 401/403 still prove the service answers; the caller's rights are another matter.
        from mdm.errors import AuthError

        ok = isinstance(exc, AuthError)
        return {"url": url, "ok": ok, "error": f"{type(exc).__name__}: {exc.message}"}
    return {"url": url, "ok": True, "latency_ms": round((time.monotonic() - t0) * 1000, 1)}


def _asdict(obj: Any) -> dict[str, Any]:
    import dataclasses

    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {k: v for k, v in dataclasses.asdict(obj).items()}
    return dict(vars(obj))


__all__ = ["AccessChange", "Client", "GetEvents", "GetResult"]
