"""The per-instance steps of the recall worker that need no server: the anonymized bytes are
deterministic (what makes re-recall possible), and the header kept has no bulk data."""

from __future__ import annotations

import copy
import io
import warnings
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.errors import InvalidDicomError

from mdm.dicom.anonymize import Anonymizer
from mdm.dicom.corpus import CorpusSpec, generate, to_bytes
from mdm.errors import ConfigError
from mdm.settings import Settings
from mdm.workers.header import HeaderMemo, header_json
from mdm.workers.instance import (
    anonymizer_from,
    read_secret,
)
from mdm.workers.part10 import IMPLEMENTATION_CLASS_UID, encode

SECRET = b"unit-test-site-secret-0123456789"


def test_the_anonymized_instance_is_the_same_bytes_every_time() -> None:
    _row, ds = next(iter(generate(CorpusSpec(patients=1, instances_per_series=1))))
    a = encode(Anonymizer(secret=SECRET).anonymize(copy.deepcopy(ds)).dataset)
    b = encode(Anonymizer(secret=SECRET).anonymize(copy.deepcopy(ds)).dataset)
    assert a == b
    assert a[:128] == b"\0" * 128
    assert a[128:132] == b"DICM"
    other = encode(Anonymizer(secret=SECRET[::-1]).anonymize(copy.deepcopy(ds)).dataset)
    assert other != a, "another site secret gives another instance (another version)"


def test_the_header_kept_in_the_catalog_has_no_pixel_or_bulk_data() -> None:
    _row, ds = next(iter(generate(CorpusSpec(patients=1, instances_per_series=1))))
    anon = Anonymizer(secret=SECRET).anonymize(ds).dataset
    header = header_json(anon)
    assert "7FE00010" not in header
    assert all("InlineBinary" not in e and "BulkDataURI" not in e for e in header.values())
    assert header["00080018"]["Value"] == [str(anon.SOPInstanceUID)]
    assert str(ds.PatientName) not in str(header) or str(ds.PatientName).startswith("ANONYMOUS")


def test_the_site_secret_is_required_and_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"anonymize\.secret_file"):
        anonymizer_from(Settings())
    short = tmp_path / "short"
    short.write_bytes(b"tooshort\n")
    with pytest.raises(ConfigError, match="shorter than 16 bytes"):
        read_secret(short)
    with pytest.raises(ConfigError, match="cannot read"):
        read_secret(tmp_path / "missing")
    good = tmp_path / "good"
    good.write_bytes(SECRET + b"\n")
    assert read_secret(good) == SECRET


def test_the_encoded_bytes_do_not_depend_on_who_received_the_instance() -> None:
    """pynetdicom and dcmtk's getscu write different file meta (implementation UID and
    version, source AE title); the anonymized file must be the same bytes either way."""
    _, ds = next(iter(generate(CorpusSpec())))
    outputs = []
    for implementation, version, source in (
        ("1.2.826.0.1.3680043.9.3811.3.0.0", "PYNETDICOM_300", "ORTHANC"),
        ("1.2.276.0.7230010.3.0.3.6.7", "OFFIS_DCMTK_367", "OTHERPACS"),
    ):
        received = copy.deepcopy(ds)
        received.file_meta.ImplementationClassUID = implementation
        received.file_meta.ImplementationVersionName = version
        received.file_meta.SourceApplicationEntityTitle = source
        outputs.append(encode(Anonymizer(secret=SECRET).anonymize(received).dataset))
    assert outputs[0] == outputs[1]
    written = dcmread(io.BytesIO(outputs[0]))
    assert written.file_meta.ImplementationClassUID == IMPLEMENTATION_CLASS_UID
    assert "SourceApplicationEntityTitle" not in written.file_meta
    assert written.file_meta.TransferSyntaxUID == ds.file_meta.TransferSyntaxUID


def _headers_both_ways(path: str, memo: HeaderMemo) -> tuple[object, object]:
    results = []
    for use in (None, memo):
        try:
            results.append(header_json(dcmread(path), use))
        except Exception as exc:  # an invalid file: both ways must refuse it alike
            results.append(type(exc))
    return results[0], results[1]


def test_the_header_memo_gives_exactly_what_pydicom_gives() -> None:
    """On pydicom's own test files (character sets, implicit VR, big endian, sequences,
    private tags) and twice over each, so the second pass answers from the memo."""
    from pydicom.data import DATA_ROOT  # the files shipped with pydicom (no download)

    memo = HeaderMemo()
    found = sorted(Path(DATA_ROOT, "test_files").glob("*.dcm"))
    paths = [str(p) for p in found if p.stat().st_size < 300_000 and "deflate" not in p.name]
    assert len(paths) > 50
    compared = 0
    for _ in range(2):
        for path in paths:
            plain, memoized = _headers_both_ways(path, memo)
            assert plain == memoized, path
            compared += isinstance(plain, dict)
    assert compared > 100
    assert len(memo._memo) > 1000, "raw elements were remembered"


def test_the_header_memo_serves_a_series_from_memory() -> None:
    rows = list(generate(CorpusSpec(patients=1, series_per_study=1, instances_per_series=4)))
    memo = HeaderMemo()
    received = [dcmread(io.BytesIO(to_bytes(ds))) for _, ds in rows]  # raw, as from a PACS
    anonymized = [Anonymizer(secret=SECRET).anonymize(ds).dataset for ds in received]
    first = header_json(anonymized[0], memo)
    size = len(memo._memo)
    for ds in anonymized[1:]:
        assert header_json(ds, memo) == header_json(copy.deepcopy(ds))
    assert first
    assert len(memo._memo) < size * 2, "the other instances mostly hit the memo"


def test_encode_gives_the_bytes_dcmwrite_gives_in_every_transfer_syntax() -> None:
    """The file meta written directly equals pydicom's, for little and big endian, implicit
    and explicit VR, encapsulated pixel data; odd-length UIDs get their padding."""
    from pydicom.data import DATA_ROOT

    from mdm.workers.part10 import encode_with_dcmwrite

    found = sorted(Path(DATA_ROOT, "test_files").glob("*.dcm"))
    syntaxes = set()
    compared = 0
    for path in (p for p in found if p.stat().st_size < 300_000):
        reference = _dcmwrite_or_none(path, encode_with_dcmwrite)
        if reference is None:
            continue
        ds, expected = reference
        assert encode(ds) == expected, path.name
        syntaxes.add(str(ds.file_meta.TransferSyntaxUID))
        compared += 1
    assert compared > 40
    assert len(syntaxes) >= 5, syntaxes


def test_encode_gives_the_bytes_dcmwrite_gives_for_anonymized_instances() -> None:
    """An anonymized dataset mixes elements still raw, which ``encode`` writes itself, and
    elements the anonymizer changed, which pydicom writes: still pydicom's bytes, in order."""
    from pydicom.data import DATA_ROOT
    from pydicom.dataelem import RawDataElement

    from mdm.workers.part10 import encode_with_dcmwrite

    mixed = 0
    for path in sorted(Path(DATA_ROOT, "test_files").glob("*.dcm")):
        if path.stat().st_size >= 300_000:
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                anon = Anonymizer(secret=SECRET).anonymize(dcmread(path)).dataset
                syntax = anon.file_meta.TransferSyntaxUID
                expected = encode_with_dcmwrite(copy.deepcopy(anon), syntax)
        except Exception:  # noqa: S112 - pydicom's odd files: not instances to recall
            continue
        assert encode(anon) == expected, path.name
        kinds = {type(e) is RawDataElement for e in anon._dict.values()}
        mixed += kinds == {True, False}
    assert mixed > 20


def _dcmwrite_or_none(path: Path, reference: Any) -> tuple[Any, bytes] | None:
    """(dataset, pydicom's bytes), or None for a file that is not a complete instance."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a file pydicom warns about: skipped
            ds = dcmread(path)
            syntax = ds.file_meta.TransferSyntaxUID
            if "SOPClassUID" not in ds or "SOPInstanceUID" not in ds:
                return None
            return ds, reference(copy.deepcopy(ds), syntax)
    except (AttributeError, ValueError, TypeError, KeyError, OSError, InvalidDicomError):
        return None
    except UserWarning:
        return None
