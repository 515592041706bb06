"""What the client's level 2 costs over level 1: ``Client.get`` decrypted vs ciphertext only.

Starts the local grid of ``mdm up`` (``mdm.demo.grid``: mutual TLS, catalog, 5 key servers with
k = 3, catalog-backed SE, recall worker, Orthanc or qrscp) with a CT hospital of 512 x 512
slices (~0.5 MB each), registers and stages it, then measures with the researcher's
certificate, each pass on files already ONLINE:

* ``get --ciphertext``: download + size and sha256/adler32 verification (level 1): the
  reference;
* ``get``: the same plus header read, key fetch from k of n servers and streaming decryption
  (level 2);
* ``get`` with one key server down;
* ``open`` + ``dcmread(stop_before_pixels=True)``: one header through range reads.

Ratios are against the ciphertext pass of the same run. Usage::

    .venv/bin/python bench/client.py [--instances 60] [--jobs 4] [--pacs auto]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from mdm.client import Client
from mdm.demo.grid import Grid
from mdm.demo.hospital import Hospital
from mdm.demo.story import grant_demo_access
from mdm.dicom.corpus import CorpusSpec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--instances", type=int, default=60)
    ap.add_argument("--jobs", type=int, default=4)
    ap.add_argument("--pacs", default="auto")
    args = ap.parse_args()
    per_series = max(1, args.instances // 2)
    spec = CorpusSpec(
        patients=1, studies_per_patient=1, series_per_study=2, instances_per_series=per_series,
        rows=512, columns=512, modalities=("CT",), seed=3,
    )  # fmt: skip
    with (
        tempfile.TemporaryDirectory(prefix="mdm-bench-client-") as tmp,
        Grid(Path(tmp) / "grid", pacs_kind=args.pacs) as grid,
    ):
        hospital = Hospital(spec=spec)
        hospital.load(grid)
        hospital.register(grid)
        with Client(grid.settings_for("manager")) as mgr:
            studies, _ = grant_demo_access(grid, mgr)
        client = Client(grid.settings_for("researcher"), concurrency=args.jobs)
        files = client.files(studies[0])
        t0 = time.monotonic()
        _, states = client.stage([str(f["path"]) for f in files], timeout=600)
        recall = time.monotonic() - t0
        assert set(states.values()) <= {"COMPLETED", "ONLINE"}, states
        # get releases the pins it made, not these: the files stay ONLINE for every pass.
        out = Path(tmp) / "out"

        def run(decrypt: bool) -> tuple[float, int]:
            shutil.rmtree(out, ignore_errors=True)
            t = time.monotonic()
            results = client.get([studies[0]], out, decrypt=decrypt)
            dt = time.monotonic() - t
            bad = [r for r in results if not r.ok]
            assert not bad, bad[0].error
            return dt, sum(r.ciphertext_bytes for r in results)

        run(False)  # warm the connections
        cipher_s, nbytes = run(False)
        plain_s, _ = run(True)
        from concurrent.futures import ThreadPoolExecutor

        key_ids = [str(f["key_id"]) for f in client.files(studies[0])]
        t = time.monotonic()
        with ThreadPoolExecutor(args.jobs) as pool:
            list(pool.map(client.keys.fetch, key_ids))
        keys_s = time.monotonic() - t
        grid.kill_keyserver(2)
        degraded_s, _ = run(True)
        from pydicom import dcmread

        t = time.monotonic()
        with client.open(str(files[0]["path"])) as fh:
            dcmread(fh, stop_before_pixels=True)
        open_s = time.monotonic() - t
        client.close()
    n, mb = len(files), nbytes / 1e6
    print(f"{n} files, {mb:.1f} MB of ciphertext, {args.jobs} in parallel, PACS {args.pacs}")
    print(
        f"recall (stage: PACS -> anonymize -> encrypt -> 5 key servers): {n / recall:.1f} files/s"
    )
    for name, s in (
        ("get --ciphertext (level 1)", cipher_s),
        ("get, decrypted (level 2)", plain_s),
        ("get, decrypted, 1 key server down", degraded_s),
    ):
        print(f"{name:<36} {s:6.2f} s  {mb / s:6.1f} MB/s  {n / s:6.1f} files/s  "
              f"x{s / cipher_s:.2f}")  # fmt: skip
    print(f"{'key fetches alone (k of n)':<36} {keys_s:6.2f} s  {n / keys_s:6.1f} keys/s")
    print(f"{'open + dcmread(header)':<36} {open_s * 1000:6.0f} ms")


if __name__ == "__main__":
    main()
