"""Files per second of the MDM anonymizer against a read+write floor and dicognito, one process.

Usage::

    .venv/bin/python bench/anonymize.py [--count 2000] [--rows 512] [--cols 512] [--rounds 3]

Writes CT-like files of about 0.5 MB (realistic CT header with PHI where scanners put it, see
tests/helpers/phi_corpus.ct_like; ``--corpus planted`` puts a value in every Table E.1-1
attribute instead, like the research note's corpus) into a temporary directory, warms the page
cache, then times, in the same process and in rotating round-robin order (after an
``os.sync``) so that machine load and page-cache writeback hit all three alike:

* floor: ``dcmread`` + ``save_as`` of each file (what any pydicom-based tool must pay);
* mdm: ``batch.anonymize_one`` (read, Basic Profile, atomic write into study/series folders);
* dicognito 0.19: ``dcmread`` + ``Anonymizer.anonymize`` + ``save_as``.

Prints files/s (median wall time of the rounds, and files per CPU-second) and the two ratios
on both; the goals are mdm >= 0.7 x floor and >= 2.5 x dicognito.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.helpers.phi_corpus builds the files

from pydicom import dcmread  # noqa: E402
from tests.helpers.phi_corpus import generate  # noqa: E402

from mdm.dicom.anonymize import Anonymizer  # noqa: E402
from mdm.dicom.anonymize.batch import DONE, anonymize_one  # noqa: E402


def make_corpus(where: Path, count: int, rows: int, cols: int, planted: bool = False) -> list[Path]:
    patients, studies, series = 10, 2, 4
    instances = max(1, math.ceil(count / (patients * studies * series)))
    manifest = generate(
        where,
        patients=patients,
        studies=studies,
        series=series,
        instances=instances,
        rows=rows,
        cols=cols,
        full=planted,
    )
    return [f.path for f in manifest.files][:count]


def floor(files: list[Path], out: Path) -> None:
    for i, f in enumerate(files):
        dcmread(f).save_as(out / f"{i}.dcm")


def mdm(files: list[Path], out: Path) -> None:
    anonymizer = Anonymizer(secret=b"bench site secret, 32 bytes long")
    for f in files:
        if anonymize_one(anonymizer, f, out).status != DONE:
            raise SystemExit(f"mdm did not anonymize {f}")


def dicognito(files: list[Path], out: Path) -> None:
    from dicognito.anonymizer import Anonymizer as Dicognito

    anonymizer = Dicognito(seed="bench")
    failed = 0
    for i, f in enumerate(files):
        ds = dcmread(f)
        try:  # dicognito 0.19 raises on some planted date/time pairs; count, do not stop
            anonymizer.anonymize(ds)
        except ValueError:
            failed += 1
            continue
        ds.save_as(out / f"{i}.dcm")
    if failed:
        print(f"  (dicognito raised ValueError on {failed} of {len(files)} files)")


def timed(
    run: Callable[[list[Path], Path], None], files: list[Path], base: Path
) -> tuple[float, float]:
    out = Path(tempfile.mkdtemp(dir=base))
    os.sync()  # start with no dirty pages left by the previous run (writeback is not free)
    wall, cpu = time.perf_counter(), time.process_time()
    run(files, out)
    result = time.perf_counter() - wall, time.process_time() - cpu
    shutil.rmtree(out)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--count", type=int, default=2000)
    ap.add_argument("--rows", type=int, default=512)
    ap.add_argument("--cols", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--corpus",
        choices=("ct", "planted"),
        default="ct",
        help="ct: realistic CT headers; planted: a value in every Table E.1-1 attribute "
        "(the research note's worst case)",
    )
    ap.add_argument("--dir", type=Path, default=None, help="work directory (default: a temp dir)")
    args = ap.parse_args()

    base = Path(tempfile.mkdtemp(prefix="mdm-bench-", dir=args.dir))
    try:
        t0 = time.perf_counter()
        files = make_corpus(
            base / "in", args.count, args.rows, args.cols, planted=args.corpus == "planted"
        )
        size = sum(f.stat().st_size for f in files)
        print(
            f"corpus ({args.corpus}): {len(files)} files, {size / len(files) / 1e6:.2f} MB each, "
            f"generated in {time.perf_counter() - t0:.1f} s"
        )
        for f in files:  # warm the page cache
            f.read_bytes()
        runs: dict[str, list[tuple[float, float]]] = {"floor": [], "mdm": [], "dicognito": []}
        fns = {"floor": floor, "mdm": mdm, "dicognito": dicognito}
        names = list(fns)
        for r in range(args.rounds):
            for name in names[r % 3 :] + names[: r % 3]:  # rotate who goes first
                fn = fns[name]
                runs[name].append(timed(fn, files, base))
                wall, cpu = runs[name][-1]
                print(f"round {r + 1} {name:9s} wall {wall:6.2f} s  cpu {cpu:6.2f} s")
        rate, cpu_rate = {}, {}
        for name, samples in runs.items():
            wall = statistics.median(w for w, _ in samples)
            cpu = statistics.median(c for _, c in samples)
            rate[name] = len(files) / wall
            cpu_rate[name] = len(files) / cpu
            print(
                f"{name:9s} {rate[name]:7.1f} files/s  {size / wall / 1e6:6.1f} MB/s  "
                f"({cpu_rate[name]:6.1f} files per CPU-s)"
            )
        # Wall time is what the goal names; CPU time is the steadier figure on a shared machine
        # (writeback and other jobs inflate wall time unevenly between runs).
        for label, r in (("wall", rate), ("CPU", cpu_rate)):
            print(
                f"{label:4s}: mdm / floor = {r['mdm'] / r['floor']:.2f} (goal >= 0.70), "
                f"mdm / dicognito = {r['mdm'] / r['dicognito']:.2f} (goal >= 2.50)"
            )
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
