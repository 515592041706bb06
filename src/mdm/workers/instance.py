"""One instance of a recall, from the PACS's bytes to a complete encrypted file in the cache.

``InstanceProcessor.process`` is what the recall worker's thread pool runs for every instance
it receives: decode, anonymize, encode (element by element where it can:
``mdm.workers.elementwise``), check that the pseudonymous SOP Instance UID is the one of the
LFN, then either the *first encryption* (new key, registered on the key servers with k+1
acknowledgements, recipe written) or the *replay* of the recorded one (``mdm.workers.recipe``),
size and checksums compared with the catalog's, and the ciphertext written through a
temporary name and a rename. A first encryption with a key of the batch does not wait for
its registration: it is renamed, and its recipe written, only once the registration is
confirmed (at once if it is in, else by ``settle`` after the batch). Every problem becomes
an ``Outcome`` with a reason for that file alone. Files and recipes are written without
fsync: the worker flushes once per batch before recording anything ONLINE.

Also here: what ``mdm register`` and the worker share (the anonymizer built from the settings,
the worker's service identity in the catalog) and per-stage timings.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import socket
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom import dcmread

from mdm.acl import Identity
from mdm.catalog.access import Caller
from mdm.crypto import Header, new_key
from mdm.dicom.anonymize import Anonymizer, Options
from mdm.errors import ChecksumMismatch, ConfigError, MDMError, UsageError
from mdm.keystore import KeyStore
from mdm.settings import Settings
from mdm.workers import cache
from mdm.workers.elementwise import Elementwise
from mdm.workers.header import HeaderMemo, header_json
from mdm.workers.part10 import encode
from mdm.workers.recipe import Recipe, RecipeStore, Scratch, first_encryption, replay

logger = logging.getLogger(__name__)


@dataclass
class Work:
    """One file of the batch (one or more staging rows naming the same LFN)."""

    file_ids: list[int]
    lfn: str
    guid: str
    pacs: str
    size: int | None
    adler32: str | None
    sha256: str | None
    original_sop: str = ""


@dataclass(frozen=True)
class Outcome:
    """What became of one file: ``reason`` is None on success, else why it FAILS (shown to
    the grid user by the Tape REST poll, so it never holds an original UID or a name)."""

    work: Work
    reason: str | None = None  # None: success
    size: int = 0
    sums: Mapping[str, str] = field(default_factory=dict)
    key_id: str = ""
    header: Mapping[str, Any] = field(default_factory=dict)
    #: A first encryption waiting for its key's registration (``InstanceProcessor.settle``).
    pending: Pending | None = None


@dataclass(frozen=True, repr=False)
class Pending:
    """A first encryption written under a temporary name while the batch's key registration
    runs: ``settle`` saves its recipe and renames it into place once the key is confirmed,
    or removes it."""

    tmp: Path
    dst: Path
    recipe: Recipe


def read_secret(path: Path) -> bytes:
    """The site secret (trailing newline ignored); too short a secret would make pseudonyms
    guessable, so it is refused rather than used."""
    try:
        data = Path(path).read_bytes().rstrip(b"\r\n")
    except OSError as exc:
        raise ConfigError(f"cannot read the site secret {path}: {exc.strerror}") from exc
    if len(data) < 16:
        raise ConfigError(f"the site secret {path} is shorter than 16 bytes")
    return data


def anonymizer_from(settings: Settings) -> Anonymizer:
    """The anonymizer of the site: ``mdm register`` and every worker must build the same one,
    or LFNs, pseudonymous PatientIDs and re-recalled bytes would disagree."""
    cfg = settings.anonymize
    if cfg.secret_file is None:
        raise ConfigError("the recall worker needs anonymize.secret_file", key="secret_file")
    options = Options.from_names(cfg.options, cfg.allow_burned_in_sop_classes)
    return Anonymizer(options, secret=read_secret(cfg.secret_file))


def service_caller(settings: Settings) -> Caller:
    """The worker as the catalog sees it: a service identity (list, read, write; no identity)."""
    dn = f"/CN=mdm-recall-worker/CN={socket.gethostname()}"
    return Caller(Identity(dn=dn), (f"dn:{dn}",), service=True)


class Timings:
    """Seconds spent per stage, summed over threads: what to tune (``mdm worker recall``
    prints them). Pool stages: ``anonymize``, ``keys`` (waiting for the batch's keys, or a
    fetch), ``encrypt``, ``write``; batch stages: ``keys_batch`` (the batch registration, in
    the background), ``retrieve``, ``drain``, ``sync``, ``record``."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = {}
        self._lock = threading.Lock()

    def add(self, stage: str, since: float) -> float:
        now = time.perf_counter()
        with self._lock:
            self.totals[stage] = self.totals.get(stage, 0.0) + now - since
        return now


class KeyBatch:
    """The new keys of one batch, registered together (``KeyStore.register_many``) while the
    PACS retrieval runs; ``take`` hands each instance its key once the registration is in.

    Keys are random and independent of the data, so they can be made before the instances
    arrive. A key registered but never taken (the instance did not arrive or failed before
    encryption) is rolled back by ``discard_unused``, leaving no share behind.
    """

    def __init__(
        self, keystore: KeyStore, keys: Mapping[str, tuple[uuid.UUID, bytes]], future: Any
    ) -> None:
        self._keystore = keystore
        self._keys = dict(keys)
        self._future = future
        self._taken: set[str] = set()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, guid: object) -> bool:
        """Whether a new key was prepared for file *guid* (it has no recipe yet)."""
        return guid in self._keys

    def take(self, guid: str) -> tuple[uuid.UUID, bytes] | None:
        """The registered ``(key_id, key)`` for file *guid*; ``None`` if none was prepared
        for it; raises the error its registration failed with (``claim`` + ``confirm``)."""
        got = self.claim(guid)
        if got is not None:
            self.confirm(guid)
        return got

    def claim(self, guid: str) -> tuple[uuid.UUID, bytes] | None:
        """The ``(key_id, key)`` prepared for file *guid*, at once, whether or not its
        registration is in yet; ``None`` if none was prepared or it was claimed already
        (never one key for two encryptions). Nothing encrypted with it may become visible
        before ``confirm``."""
        got = self._keys.get(guid)
        if got is None:
            return None
        with self._lock:
            if guid in self._taken:
                return None
            self._taken.add(guid)
        return got

    def ready(self) -> bool:
        """Whether the batch's registration has answered (``confirm`` will not wait)."""
        return self._future is None or bool(self._future.done())

    def confirm(self, guid: str) -> None:
        """Wait for the batch's registration; raise the error the key of *guid* got."""
        outcome = self._future.result()[str(self._keys[guid][0])]
        if isinstance(outcome, MDMError):
            raise outcome

    def discard_unused(self) -> int:
        """Roll back the registered keys nobody took; returns how many."""
        if not self._keys:
            return 0
        try:
            results = self._future.result()
        except Exception:  # the registration itself failed: nothing to roll back
            return 0
        unused = 0
        for guid, (key_id, _) in self._keys.items():
            res = results.get(str(key_id))
            if guid not in self._taken and res is not None and not isinstance(res, MDMError):
                self._keystore.discard(str(key_id), res.acked)
                unused += 1
        return unused


class InstanceProcessor:
    """Processes instances for the recall worker (thread-safe; see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        anonymizer: Anonymizer,
        recipes: RecipeStore,
        cache_root: Path,
        timings: Timings,
    ) -> None:
        self.settings = settings
        self.anonymizer = anonymizer
        self.recipes = recipes
        self.cache_root = cache_root
        self.timings = timings
        self.headers = HeaderMemo()
        self.elementwise = Elementwise(anonymizer, self.headers)
        self.direct_io = settings.storage.direct_io
        # One KeyStore per pool thread: a KeyStore runs at most 2n server calls at a time,
        # i.e. two registrations, and registrations are latency-bound (fsync on 5 servers).
        self._local = threading.local()
        self._lock = threading.Lock()
        self._keystores: list[KeyStore] = []
        first = self._new_keystore()
        self.k, self.n = first.k, first.n
        self._batch_keystore = first
        self._key_pool = ThreadPoolExecutor(1, thread_name_prefix="mdm-recall-keys")

    def close(self) -> None:
        self._key_pool.shutdown(wait=True, cancel_futures=True)
        for ks in self._keystores:
            ks.close()

    def prepare_keys(self, works: Sequence[tuple[Work, Mapping[str, list[str]]]]) -> KeyBatch:
        """Start registering one new key per file that will be encrypted for the first time
        (no recipe, no recorded checksum), each with its ``(work, acl)`` ACL, in one
        ``register_many``; returns at once."""
        keys = {
            w.guid: (uuid.uuid4(), new_key(), acl)
            for w, acl in works
            if w.guid and w.sha256 is None and self.recipes.load(w.guid) is None
        }
        items = [(str(kid), key, acl) for kid, key, acl in keys.values()]
        future = self._key_pool.submit(self._register_many, items) if items else None
        return KeyBatch(
            self._batch_keystore, {g: (k, key) for g, (k, key, _) in keys.items()}, future
        )

    def _register_many(self, items: list[Any]) -> dict[str, Any]:
        t0 = time.perf_counter()
        try:
            return self._batch_keystore.register_many(items)
        finally:
            self.timings.add("keys_batch", t0)

    def process(
        self,
        w: Work,
        data: bytes,
        acl: Mapping[str, list[str]],
        keys: KeyBatch | None = None,
    ) -> Outcome:
        """Anonymize, encrypt (first time or replay) and write one instance; never raises.

        A first encryption takes its key from *keys* (registered for the whole batch) and
        registers a key of its own only when none was prepared for this file. Its outcome
        may be ``pending`` (the registration not in yet): ``settle`` finishes it."""
        try:
            t0 = time.perf_counter()
            fast = self.elementwise.process(data)
            if fast is not None:
                plaintext, identity, attrs = fast.plaintext, fast.identity, fast.header
            else:  # the whole dataset: the same result, and the reasons when it fails
                anon = self.anonymizer.anonymize(dcmread(io.BytesIO(data)))
                plaintext, identity = encode(anon.dataset), anon.identity
                attrs = header_json(anon.dataset, self.headers)
            if identity.pseudo_sop_instance_uid != w.lfn.rsplit("/", 1)[-1]:
                return Outcome(
                    w,
                    "the anonymized SOP Instance UID does not match the LFN "
                    "(site secret changed since registration?)",
                )
            t1 = self.timings.add("anonymize", t0)
            # A key prepared for this file means prepare_keys found no recipe a moment ago.
            first = keys is not None and w.guid in keys
            recipe = None if first else self.recipes.load(w.guid)
            if recipe is None:
                if w.sha256 is not None:
                    return Outcome(
                        w,
                        "the file was recalled before but its recipe is lost: "
                        "the same bytes cannot be produced again",
                    )
                prepared = keys.claim(w.guid) if keys is not None else None
                if keys is not None and prepared is not None:  # no wait for the servers here
                    return self._first(w, plaintext, prepared, keys, attrs, t1)
                key_id, key = uuid.uuid4(), new_key()
                self._thread_keystore().register(str(key_id), key, acl=acl)
                header = Header.new(
                    len(plaintext),
                    key_id=key_id,
                    file_guid=uuid.UUID(w.guid),
                    k=self.k,
                    n=self.n,
                )
                t1 = self.timings.add("keys", t1)
                blob, recipe = first_encryption(plaintext, key, header, self._scratch())
                self.recipes.save(w.guid, recipe, fsync=False)  # flushed before ONLINE
            else:
                key = self._thread_keystore().fetch(recipe.key_id)
                t1 = self.timings.add("keys", t1)
                blob = replay(plaintext, key, recipe, self._scratch())
            t1 = self.timings.add("encrypt", t1)
            if w.size is not None and w.size != len(blob):
                raise ChecksumMismatch(f"size {len(blob)} differs from the registered {w.size}")
            sums = cache.write_atomically(
                self.cache_root, w.lfn, blob, fsync=False, direct=self.direct_io
            )
            self.timings.add("write", t1)
            if (w.sha256, w.adler32) not in ((None, None), (sums["sha256"], sums["adler32"])):
                raise ChecksumMismatch("the checksums differ from the registered ones")
            return Outcome(w, None, len(blob), sums, recipe.key_id, attrs)
        except MDMError as exc:
            return Outcome(w, f"{type(exc).__name__}: {exc.message}")
        except Exception as exc:  # a parse error deep in pydicom: this instance only
            logger.warning("recall of %s failed: %s", w.lfn, type(exc).__name__)
            return Outcome(w, f"cannot process the instance ({type(exc).__name__})")

    def _first(
        self,
        w: Work,
        plaintext: bytes,
        prepared: tuple[uuid.UUID, bytes],
        keys: KeyBatch,
        attrs: Mapping[str, Any],
        t1: float,
    ) -> Outcome:
        """The first encryption with a key registered for the whole batch: encrypted and
        written under a temporary name without waiting for the registration. If the
        registration is in by then (most of a batch), the recipe is saved and the file
        renamed here; otherwise ``settle`` does it once the key is confirmed. (A pool thread
        waiting here for the key servers, at the start of every batch, was the largest
        pause of the recall: docs/recall.md, "Throughput, seventh round".)"""
        key_id, key = prepared
        header = Header.new(
            len(plaintext), key_id=key_id, file_guid=uuid.UUID(w.guid), k=self.k, n=self.n
        )
        blob, recipe = first_encryption(plaintext, key, header, self._scratch())
        t1 = self.timings.add("encrypt", t1)
        if w.size is not None and w.size != len(blob):
            raise ChecksumMismatch(f"size {len(blob)} differs from the registered {w.size}")
        dst = cache.cache_path(self.cache_root, w.lfn)
        tmp, sums = cache.write_unnamed(self.cache_root, w.lfn, blob, direct=self.direct_io)
        pending: Pending | None = Pending(tmp, dst, recipe)
        if keys.ready():
            try:
                keys.confirm(w.guid)
                self.recipes.save(w.guid, recipe, fsync=False)  # flushed before ONLINE
                cache.commit(tmp, dst)
            except BaseException:
                cache.discard(tmp)
                raise
            pending = None
        self.timings.add("write", t1)
        return Outcome(w, None, len(blob), sums, recipe.key_id, attrs, pending)

    def settle(self, outcomes: Sequence[Outcome], keys: KeyBatch | None) -> list[Outcome]:
        """``settle`` for this processor's recipes (timed as the ``keys`` stage)."""
        t0 = time.perf_counter()
        try:
            return settle(outcomes, keys, self.recipes)
        finally:
            self.timings.add("keys", t0)

    def _new_keystore(self) -> KeyStore:
        ks = KeyStore(self.settings.keystore, tls=self.settings.tls)
        with self._lock:
            self._keystores.append(ks)
        return ks

    def _scratch(self) -> Scratch:
        scratch: Scratch | None = getattr(self._local, "scratch", None)
        if scratch is None:
            scratch = self._local.scratch = Scratch()
        return scratch

    def _thread_keystore(self) -> KeyStore:
        ks: KeyStore | None = getattr(self._local, "keystore", None)
        if ks is None:
            ks = self._local.keystore = self._new_keystore()
        return ks


def settle(
    outcomes: Sequence[Outcome], keys: KeyBatch | None, recipes: RecipeStore
) -> list[Outcome]:
    """Finish a batch's first encryptions once its key registration is in: for each, the
    recipe is saved, then the file renamed into place (both flushed later with the batch,
    before anything is recorded); a file whose key was not registered fails with the reason,
    its temporary file removed. Outcomes without ``pending`` pass unchanged."""
    out: list[Outcome] = []
    for o in outcomes:
        p = o.pending
        if p is None:
            out.append(o)
            continue
        try:
            if keys is None:
                raise UsageError("a pending first encryption without its key batch")
            keys.confirm(o.work.guid)
            recipes.save(o.work.guid, p.recipe, fsync=False)
            cache.commit(p.tmp, p.dst)
            out.append(dataclasses.replace(o, pending=None))
        except MDMError as exc:
            cache.discard(p.tmp)
            out.append(Outcome(o.work, f"{type(exc).__name__}: {exc.message}"))
        except Exception as exc:  # the registration call itself failed
            cache.discard(p.tmp)
            logger.warning("recall of %s failed: %s", o.work.lfn, type(exc).__name__)
            out.append(Outcome(o.work, f"key registration failed ({type(exc).__name__})"))
    return out
