"""Three users x every verb, against the real local grid: allowed and refused as designed.

The grid is the one ``mdm up`` and ``mdm demo`` run (``mdm.demo.grid``): real mutual TLS, the
catalog, five key servers (k = 3), the catalog-backed SE, the recall worker and a real PACS,
loaded with the synthetic hospital and registered. The data manager grants:

* the grid user level 1 (ciphertext) on every study;
* the researchers' VOMS group (or the researcher's DN without voms-proxy-fake) level 2;
* the physician level 3 on study A only;

then stages everything once, so every file has a key whose ACL the recall worker derived from
the catalog. Each row of ``MATRIX`` is one verb by one user on study A or B.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mdm.client import Client
from mdm.demo.grid import Grid
from mdm.demo.hospital import Hospital
from mdm.errors import AuthError, MDMError, NotEnoughShares, NotFound

pytestmark = pytest.mark.timeout(240)


@dataclass
class World:
    grid: Grid
    hospital: Hospital
    studies: dict[str, str]  # "A" / "B" -> /dicom/<study>
    clients: dict[str, Client]
    tmp: Path

    def files(self, study: str) -> list[dict[str, Any]]:
        return self.clients["manager"].files(self.studies[study])


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("grid")
    with Grid(root) as grid:
        assert not grid.missing, grid.missing
        hospital = Hospital()
        hospital.load(grid)
        hospital.register(grid)
        clients = {n: Client(grid.settings_for(n)) for n in grid.people if n != "worker"}
        mgr = clients["manager"]
        studies = [str(e["path"]) for e in mgr.catalog.ls("/dicom")]
        researcher = grid.people["researcher"]
        group = f"fqan:{researcher.fqans[-1]}" if researcher.fqans else researcher.principal
        for s in studies:
            assert mgr.grant(s, grid.people["gridUser"].principal, 1).ok
            assert mgr.grant(s, group, 2).ok
        assert mgr.grant(studies[0], grid.people["physician"].principal, 3).ok
        lfns = [str(f["path"]) for s in studies[:2] for f in mgr.files(s)]
        _, states = mgr.stage(lfns, timeout=120)
        assert set(states.values()) <= {"COMPLETED", "ONLINE"}, states
        try:
            yield World(grid, hospital, {"A": studies[0], "B": studies[1]}, clients,
                        tmp_path_factory.mktemp("out"))  # fmt: skip
        finally:
            for c in clients.values():
                c.close()


def _ls(w: World, c: Client, s: str) -> object:
    return c.catalog.ls(w.studies[s])


def _find(w: World, c: Client, s: str) -> object:
    found = {f"/dicom/{d['0020000D']['Value'][0]}" for d in c.catalog.search_studies()}
    if w.studies[s] not in found:
        raise NotFound("study not in the QIDO answer")  # scoped away = not visible
    return found


def _stat(w: World, c: Client, s: str) -> object:
    return c.catalog.stat(str(w.files(s)[0]["path"]))


def _stage(w: World, c: Client, s: str) -> object:
    return c.storage.stage([str(w.files(s)[0]["path"])])


def _download(w: World, c: Client, s: str) -> object:
    entry = w.files(s)[0]
    dest = w.tmp / f"{os.urandom(4).hex()}.mdm"
    c.storage.download(str(entry["path"]), dest, size=entry["size"], sha256=entry["sha256"])
    return dest


def _key(w: World, c: Client, s: str) -> object:
    return c.keys.fetch(str(w.files(s)[0]["key_id"]))


def _get_decrypted(w: World, c: Client, s: str) -> object:
    results = c.get([str(w.files(s)[0]["path"])], w.tmp / os.urandom(4).hex())
    if results[0].error is not None:
        raise results[0].error
    return results


def _open(w: World, c: Client, s: str) -> object:
    from pydicom import dcmread

    with c.open(str(w.files(s)[0]["path"])) as fh:
        return dcmread(fh, stop_before_pixels=True).Modality


def _identity(w: World, c: Client, s: str) -> object:
    return c.catalog.study_identity(w.studies[s].rsplit("/", 1)[1], reason="access matrix")


def _grant(w: World, c: Client, s: str) -> object:
    change = c.grant(w.studies[s], "dn:/DC=org/DC=mdmtest/CN=Nobody", 1)
    if change.catalog_error is not None:
        raise change.catalog_error
    return change


def _revoke(w: World, c: Client, s: str) -> object:
    change = c.revoke(w.studies[s], w.grid.people["gridUser"].principal, 3)
    if change.catalog_error is not None:
        raise change.catalog_error
    return change


VERBS: dict[str, Callable[[World, Client, str], object]] = {
    "ls": _ls, "find": _find, "stat": _stat, "stage": _stage, "download": _download,
    "key": _key, "get": _get_decrypted, "open": _open, "identity": _identity,
    "grant": _grant, "revoke": _revoke,
}  # fmt: skip
Y, N = "allowed", "refused"
#: verb -> expected for (gridUser, researcher, physician) on study A, then physician on B.
MATRIX = {
    "ls": (Y, Y, Y, N),
    "find": (Y, Y, Y, N),
    "stat": (Y, Y, Y, N),
    "stage": (Y, Y, Y, N),
    "download": (Y, Y, Y, N),
    "key": (N, Y, Y, N),
    "get": (N, Y, Y, N),
    "open": (N, Y, Y, N),
    "identity": (N, N, Y, N),
    "grant": (N, N, N, N),
    "revoke": (N, N, N, N),
}
CASES = [
    pytest.param(user, verb, study, MATRIX[verb][i], id=f"{user}-{verb}-{study}")
    for verb in MATRIX
    for i, (user, study) in enumerate(
        [("gridUser", "A"), ("researcher", "A"), ("physician", "A"), ("physician", "B")]
    )
]


def _refused(exc: MDMError) -> bool:
    if isinstance(exc, AuthError | NotFound):
        return True  # NotFound: scoped away, the caller cannot even see it
    failures = getattr(exc, "failures", {}) or {}
    return isinstance(exc, NotEnoughShares) and set(failures.values()) == {"denied"}


@pytest.mark.parametrize(("user", "verb", "study", "expected"), CASES)
def test_access_matrix(world: World, user: str, verb: str, study: str, expected: str) -> None:
    client = world.clients[user]
    if expected == Y:
        VERBS[verb](world, client, study)
        return
    with pytest.raises(MDMError) as refused:
        VERBS[verb](world, client, study)
    assert _refused(refused.value), f"{user} {verb} on {study} failed, not refused"


def test_manager_may_grant_and_revoke_and_every_key_server_follows(world: World) -> None:
    mgr, researcher = world.clients["manager"], world.clients["researcher"]
    group = world.grid.people["researcher"]
    who = f"fqan:{group.fqans[-1]}" if group.fqans else group.principal
    revoked = mgr.revoke(world.studies["B"], who, 2)
    assert revoked.ok
    assert len(revoked.keys.done) == len(world.files("B"))
    with pytest.raises(NotEnoughShares):
        _key(world, researcher, "B")
    _download(world, researcher, "B")  # level 1 stays
    granted = mgr.grant(world.studies["B"], who, 2)
    assert granted.ok
    assert len(granted.keys.done) == len(world.files("B"))
    _key(world, researcher, "B")


def test_grant_reports_key_servers_it_could_not_reach(world: World) -> None:
    mgr, grid = world.clients["manager"], world.grid
    for i in (3, 4, 5):
        grid.kill_keyserver(i)
    try:
        change = mgr.grant(world.studies["B"], "dn:/DC=org/DC=mdmtest/CN=Late Comer", 2)
        assert change.catalog_done
        assert not change.ok
        assert len(change.keys.failed) == len(world.files("B"))
        reasons = [str(e) for e in change.keys.failed.values()]
        assert all("unreachable" in r or "down" in r for r in reasons)
    finally:
        for i in (3, 4, 5):
            grid.restart_keyserver(i)
        mgr.revoke(world.studies["B"], "dn:/DC=org/DC=mdmtest/CN=Late Comer", 1)


def test_cli_verbs_with_a_persons_settings_file(world: World) -> None:
    files = world.grid.write_settings()

    def mdm(who: str, *args: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "mdm", "--settings", str(files[who]), *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)

    out = world.tmp / "cli"
    got = mdm("researcher", "get", world.studies["A"], "-d", str(out), "--json")
    assert got.returncode == 0, got.stderr
    results = json.loads(got.stdout)
    assert results
    assert all(r["error"] is None for r in results)
    first = Path(results[0]["dest"]).read_bytes()
    assert first[128:132] == b"DICM"
    cat = subprocess.run(
        [sys.executable, "-m", "mdm", "--settings", str(files["researcher"]), "cat",
         results[0]["lfn"]], capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert cat.returncode == 0
    assert cat.stdout == first
    refused = mdm("gridUser", "get", world.studies["A"], "-d", str(out / "g"), "--json")
    assert refused.returncode == 1
    assert all("NotEnoughShares" in r["error"] for r in json.loads(refused.stdout))
    denied = mdm("gridUser", "grant", world.studies["A"], "/mdm", "--level", "1")
    assert denied.returncode == 1
    assert "PermissionDenied" in denied.stdout + denied.stderr
    status = mdm("gridUser", "status", "--json")
    assert status.returncode == 0, status.stdout + status.stderr
    assert json.loads(status.stdout)["healthy"] is True


def test_get_verifies_the_catalog_checksums_and_leaves_no_file(world: World) -> None:
    from mdm.workers.cache import cache_path

    entry = world.files("B")[0]
    lfn = str(entry["path"])
    mgr = world.clients["manager"]
    mgr.stage([lfn], timeout=60)
    path = cache_path(world.grid.root / "cache", lfn)
    good = path.read_bytes()
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0x01  # one bit, same size: only a checksum can tell
    path.write_bytes(bytes(bad))
    out = world.tmp / "corrupt"
    try:
        (result,) = mgr.get([lfn], out)
    finally:
        path.write_bytes(good)
    assert type(result.error).__name__ == "ChecksumMismatch"
    assert [p for p in out.rglob("*") if p.is_file()] == []
