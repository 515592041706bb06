"""The recall's per-instance anonymization, element by element against the whole dataset.

Usage::

    .venv/bin/python bench/elementwise.py [--corpus recall|ct] [--count 300] [--rounds 3]
        [--undefined-lengths]

What the recall worker's pool does to each received instance before encrypting it: read it,
anonymize it (Basic Profile), encode the Part 10 plaintext, and convert the de-identified
header to DICOM JSON. Two ways, in the same process, alternating, on the same bytes held in
memory:

* whole: ``dcmread`` + ``Anonymizer.anonymize`` + ``part10.encode`` + ``header_json``;
* elementwise: ``mdm.workers.elementwise.Elementwise.process`` (same output, checked here on
  every instance of the first round).

Corpora: ``recall`` is what ``bench/recall.py`` sends through Orthanc (``CorpusSpec.ct_bench``:
series of ~0.5 MB CT instances); ``ct`` has realistic CT headers with identifying values where
scanners put them and a vendor's private block (``tests/helpers/phi_corpus.ct_like``). Prints
the CPU milliseconds per instance of each way (median of the rounds) and their ratio.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

from pydicom import dcmread  # noqa: E402

from mdm.dicom.anonymize import Anonymizer  # noqa: E402
from mdm.dicom.corpus import CorpusSpec, generate, to_bytes  # noqa: E402
from mdm.workers.elementwise import Elementwise  # noqa: E402
from mdm.workers.header import HeaderMemo, header_json  # noqa: E402
from mdm.workers.part10 import encode  # noqa: E402

SECRET = b"bench site secret, 32 bytes long"


def corpus(kind: str, count: int) -> list[bytes]:
    if kind == "recall":
        return [to_bytes(ds) for _, ds in generate(CorpusSpec.ct_bench(count))][:count]
    from tests.helpers.phi_corpus import generate as phi_generate

    where = Path(tempfile.mkdtemp(prefix="mdm-bench-ew-"))
    per_series = max(1, -(-count // 8))
    manifest = phi_generate(
        where, patients=2, studies=2, series=2, instances=per_series, rows=512, cols=512, full=False
    )
    return [f.path.read_bytes() for f in manifest.files][:count]


def as_dcmtk_writes(data: bytes) -> bytes:
    """*data* with every sequence and item of undefined length, as dcmtk writes them (what
    Orthanc stores and getscu hands over; pydicom writes defined lengths)."""
    ds = dcmread(io.BytesIO(data))

    def undefined(dataset: Any) -> None:
        for elem in dataset:
            if elem.VR == "SQ":
                elem.is_undefined_length = True
                for item in elem.value:
                    item.is_undefined_length_sequence_item = True
                    undefined(item)

    undefined(ds)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def whole(anonymizer: Anonymizer, memo: HeaderMemo, data: bytes) -> tuple[bytes, dict[str, Any]]:
    result = anonymizer.anonymize(dcmread(io.BytesIO(data)))
    return encode(result.dataset), header_json(result.dataset, memo)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--corpus", choices=("recall", "ct"), default="recall")
    ap.add_argument("--count", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--undefined-lengths",
        action="store_true",
        help="sequences and items of undefined length, as dcmtk (Orthanc, getscu) writes them",
    )
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    datas = corpus(args.corpus, args.count)
    if args.undefined_lengths:
        datas = [as_dcmtk_writes(d) for d in datas]
    size = sum(len(d) for d in datas) / len(datas) / 1e6
    how = ", sequences of undefined length" if args.undefined_lengths else ""
    print(f"corpus ({args.corpus}{how}): {len(datas)} instances, {size:.2f} MB each")
    anonymizer = Anonymizer(secret=SECRET)
    memo = HeaderMemo()
    path = Elementwise(anonymizer, HeaderMemo())
    for data in datas:  # both ways once (memos warm, as in a running worker), and compared
        expected = whole(anonymizer, memo, data)
        got = path.process(data)
        if got is None:
            continue
        if (got.plaintext, got.header) != expected:
            raise SystemExit("the element-wise path differs from the whole-dataset path")
    taken = path.taken
    times: dict[str, list[float]] = {"whole": [], "elementwise": []}
    for r in range(args.rounds):
        for name in ("whole", "elementwise")[:: 1 if r % 2 == 0 else -1]:
            t0 = time.process_time()
            if name == "whole":
                for data in datas:
                    whole(anonymizer, memo, data)
            else:
                for data in datas:
                    path.process(data)
            times[name].append((time.process_time() - t0) / len(datas) * 1e3)
            print(f"round {r + 1} {name:11s} {times[name][-1]:.3f} ms CPU per instance")
    w, e = (statistics.median(times[k]) for k in ("whole", "elementwise"))
    print(
        f"element by element: {taken} of {len(datas)} instances; "
        f"whole {w:.3f} ms, element by element {e:.3f} ms per instance: {w / e:.1f} x"
    )


if __name__ == "__main__":
    main()
