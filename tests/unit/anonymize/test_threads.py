"""The anonymizer in several threads at once (the recall worker's pool): a warning pydicom
raises while decoding an original value stays inside the call that raised it.

``warnings.catch_warnings`` swaps module-wide state; two threads each inside their own
capture restored each other's, and warnings escaped to whatever handler was outside (stderr,
in a worker). With a short GIL switch interval the interleaving is common enough to catch.
"""

from __future__ import annotations

import io
import sys
import threading
import warnings

from pydicom import dcmread

from mdm.dicom.anonymize import Anonymizer
from mdm.dicom.corpus import CorpusSpec, generate, to_bytes

from .conftest import SECRET


def _warning_instance() -> bytes:
    """A corpus instance whose Patient ID is too long for LO: pydicom warns on decoding it."""
    _, ds = next(iter(generate(CorpusSpec(patients=1))))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.PatientID = "X" * 80
    return to_bytes(ds)


def test_warnings_never_escape_an_anonymization_running_beside_others() -> None:
    anonymizer = Anonymizer(secret=SECRET)
    data = _warning_instance()
    assert anonymizer.anonymize(dcmread(io.BytesIO(data))).warnings >= 1
    failures: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(300):
                anonymizer.anonymize(dcmread(io.BytesIO(data)))
        except BaseException as exc:  # reported by the assertion below
            failures.append(exc)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        with warnings.catch_warnings(record=True) as outside:
            warnings.simplefilter("always")
            shown, filters = warnings.showwarning, list(warnings.filters)
            threads = [threading.Thread(target=work) for _ in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert warnings.showwarning is shown
            assert warnings.filters == filters
    finally:
        sys.setswitchinterval(interval)
    assert failures == []
    assert [str(w.message) for w in outside] == []
