"""The recall's element-wise path gives exactly what the whole-dataset path gives: the same
plaintext bytes (a re-recall replays them under the recorded key), the same identity record
and the same header JSON, key order included; and it declines what it does not handle."""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.data import DATA_ROOT
from pydicom.uid import ExplicitVRBigEndian, ImplicitVRLittleEndian

from mdm.dicom.anonymize import Anonymizer, Options
from mdm.dicom.anonymize.elements import CORE, DROP, MEMO, PASS
from mdm.dicom.corpus import CorpusSpec, generate, to_bytes
from mdm.workers.elementwise import Elementwise, skip_sequence
from mdm.workers.header import HeaderMemo, header_json
from mdm.workers.part10 import encode

SECRET = b"unit-test-site-secret-0123456789"

OPTION_SETS = [
    (),
    ("retain_long_modified_dates", "retain_safe_private"),
    ("retain_uids", "retain_long_full_dates"),
    ("retain_device_identity", "retain_institution_identity"),
]


def _whole(anonymizer: Anonymizer, data: bytes) -> tuple[bytes, dict[str, Any], dict[str, Any]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = anonymizer.anonymize(dcmread(io.BytesIO(data)))
        plaintext = encode(result.dataset)
        header = header_json(result.dataset, HeaderMemo())
    return plaintext, result.identity.as_dict(), header


def _variant(data: bytes, implicit: bool) -> bytes:
    """A corpus instance with what real headers have and the corpus lacks: ambiguous VRs
    (US or SS: pydicom settles them from Pixel Representation in implicit VR), a private
    block, a sequence, an empty element, and a de-identification mark that must be reset."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    ds = dcmread(io.BytesIO(data))
    ds.PixelRepresentation = 1
    ds.SmallestImagePixelValue = -5
    ds.LargestImagePixelValue = 900
    for keyword in ("SmallestImagePixelValue", "LargestImagePixelValue"):
        ds[keyword].VR = "SS"  # written as SS; read back from implicit VR as "US or SS"
    ds.PatientIdentityRemoved = "NO"
    ds.private_block(0x0009, "ACME 1.0", create=True).add_new(0x01, "LO", "ward 5")
    item = Dataset()
    item.ReferencedSOPClassUID = ds.SOPClassUID
    item.ReferencedSOPInstanceUID = ds.SOPInstanceUID
    ds.ReferencedImageSequence = Sequence([item])
    # As dcmtk (Orthanc, getscu) writes them: undefined lengths, nested, an empty sequence,
    # and a private sequence (DROP) of undefined length.
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "113691", "DCM", "IPP"
    inner = Dataset()
    inner.ConceptNameCodeSequence = Sequence([code])
    inner["ConceptNameCodeSequence"].is_undefined_length = True
    inner.is_undefined_length_sequence_item = True
    ds.ProcedureCodeSequence = Sequence([inner, Dataset()])
    ds["ProcedureCodeSequence"].is_undefined_length = True
    ds.ReferencedStudySequence = Sequence([])
    ds["ReferencedStudySequence"].is_undefined_length = True
    block = ds.private_block(0x0019, "ACME SEQ", create=True)
    block.add_new(0x01, "SQ", Sequence([code]))
    block[0x01].is_undefined_length = True
    ds.ImageComments = ""
    ds.file_meta.TransferSyntaxUID = (
        ImplicitVRLittleEndian if implicit else ds.file_meta.TransferSyntaxUID
    )
    out = io.BytesIO()
    ds.save_as(out, implicit_vr=implicit, little_endian=True, enforce_file_format=True)
    return out.getvalue()


def _corpus() -> list[bytes]:
    explicit = [to_bytes(ds) for _, ds in generate(CorpusSpec())]
    return (
        explicit
        + [_variant(data, implicit=True) for data in explicit[:8]]
        + [_variant(data, implicit=False) for data in explicit[8:12]]
    )


def _pydicom_files() -> Iterator[tuple[str, bytes]]:
    from pydicom.data import get_charset_files

    paths = sorted(Path(DATA_ROOT, "test_files").glob("*.dcm"))
    paths += [Path(p) for p in get_charset_files("*.dcm")]
    for path in paths:
        if path.stat().st_size < 300_000:
            yield path.name, path.read_bytes()


def _same(path: Elementwise, anonymizer: Anonymizer, data: bytes) -> bool | None:
    """True: taken and equal, twice (the second time from the memos); None: declined.
    Fails the test on any difference."""
    try:
        expected = _whole(anonymizer, data)
    except Exception:  # the whole path refuses it: so must the element-wise one
        assert path.process(data) is None
        return None
    for _ in range(2):
        got = path.process(data)
        if got is None:
            return None
        assert got.plaintext == expected[0]
        assert got.identity.as_dict() == expected[1]
        assert list(got.header.items()) == list(expected[2].items())
    return True


@pytest.mark.parametrize("names", OPTION_SETS, ids=lambda n: ",".join(n) or "basic")
def test_the_corpus_goes_element_by_element_with_the_whole_paths_result(
    names: tuple[str, ...],
) -> None:
    anonymizer = Anonymizer(Options.from_names(names), secret=SECRET)
    path = Elementwise(anonymizer, HeaderMemo())
    corpus = _corpus()
    assert all(_same(path, anonymizer, data) for data in corpus)
    assert path.taken == 2 * len(corpus)
    assert path.declined == 0
    # Instances of one series share their core but the SOP Instance UID: anonymized once.
    assert path.cores.hits > len(corpus)


@pytest.mark.parametrize("names", OPTION_SETS[:2], ids=lambda n: ",".join(n) or "basic")
def test_pydicoms_test_files_give_the_whole_paths_result_or_are_declined(
    names: tuple[str, ...],
) -> None:
    """Private elements, sequences of undefined length, encapsulated pixel data, overlays,
    character sets, implicit VR with ambiguous VRs, empty values, odd files."""
    anonymizer = Anonymizer(Options.from_names(names), secret=SECRET)
    path = Elementwise(anonymizer, HeaderMemo())
    taken = declined = 0
    for _name, data in _pydicom_files():
        outcome = _same(path, anonymizer, data)
        taken += outcome is True
        declined += outcome is None
    assert taken > 15
    assert declined > 5  # big endian, truncated, refused...


def _undefined_sequences(data: bytes) -> Iterator[tuple[int, int, int]]:
    """(element start, value start, end as pydicom's reader finds it) of every top-level
    explicit-VR sequence of undefined length in the Part 10 file *data*."""
    from pydicom.filereader import data_element_generator

    from mdm.dicom import filemeta

    meta = filemeta.read(data)
    if meta is None or meta.transfer_syntax != "1.2.840.10008.1.2.1":
        return
    fp = io.BytesIO(data)
    fp.seek(meta.end)
    while fp.tell() < len(data):
        start = fp.tell()
        elem = next(data_element_generator(fp, False, True))
        if getattr(elem, "is_undefined_length", False) and data[start + 4 : start + 6] == b"SQ":
            yield start, start + 12, fp.tell()


def test_sequences_of_undefined_length_are_walked_to_where_pydicom_ends_them() -> None:
    """``skip_sequence`` finds the end pydicom's reader finds, or says it is not sure
    (None): then pydicom reads the sequence, as before."""
    files = [data for _name, data in _pydicom_files()] + _corpus()
    walked = unsure = 0
    for data in files:
        for _start, value, end in _undefined_sequences(data):
            got = skip_sequence(data, value)
            assert got in (end, None)
            walked += got == end
            unsure += got is None
    assert walked >= 10
    assert unsure == 0  # all regular in these files
    # Irregular: a stray tag where an item should be, a delimiter with a length, truncation.
    data = _corpus()[-1]
    _start, value, end = next(_undefined_sequences(data))
    assert skip_sequence(data[:value] + b"\x08\x00" + data[value + 2 :], value) is None
    delimiter = data.rindex(b"\xfe\xff\xdd\xe0", value, end)
    assert skip_sequence(data[: delimiter + 4] + b"\x01" + data[delimiter + 5 :], value) is None
    assert skip_sequence(data[: end - 1], value) is None
    # Built by hand: a defined-length sequence inside an item must hold whole items exactly.
    code = b"\x08\x00\x00\x01SH\x06\x00113691"  # (0008,0100) Code Value
    nested = _item(code, undefined=False)
    good = _item(_sq(0x0040, 0xA043, nested), undefined=True)
    assert skip_sequence(_sequence(good), 0) == len(_sequence(good))
    stray = _item(_sq(0x0040, 0xA043, nested + code), undefined=True)  # not an item inside
    assert skip_sequence(_sequence(stray), 0) is None
    short = _item(_sq(0x0040, 0xA043, nested[:-2]), undefined=True)  # an item cut short
    assert skip_sequence(_sequence(short), 0) is None


def _item(content: bytes, *, undefined: bool) -> bytes:
    if undefined:
        return b"\xfe\xff\x00\xe0\xff\xff\xff\xff" + content + b"\xfe\xff\x0d\xe0" + bytes(4)
    return b"\xfe\xff\x00\xe0" + len(content).to_bytes(4, "little") + content


def _sq(group: int, number: int, value: bytes) -> bytes:
    """An explicit-VR sequence element of defined length."""
    head = group.to_bytes(2, "little") + number.to_bytes(2, "little") + b"SQ\x00\x00"
    return head + len(value).to_bytes(4, "little") + value


def _sequence(items: bytes) -> bytes:
    """The value of a sequence of undefined length: its items and the delimiter."""
    return items + b"\xfe\xff\xdd\xe0" + bytes(4)


def test_what_it_declines(caplog: pytest.LogCaptureFixture) -> None:
    anonymizer = Anonymizer(secret=SECRET)
    path = Elementwise(anonymizer, HeaderMemo())
    data = to_bytes(next(iter(generate(CorpusSpec(patients=1))))[1])
    assert path.process(data) is not None
    big = Path(DATA_ROOT, "test_files", "MR_small_bigendian.dcm").read_bytes()
    assert dcmread(io.BytesIO(big)).file_meta.TransferSyntaxUID == ExplicitVRBigEndian
    assert _whole(anonymizer, big)[0]  # the whole path takes it
    assert path.process(big) is None
    with caplog.at_level(logging.DEBUG, logger="mdm.workers.elementwise"):
        assert path.process(data[:-100]) is None  # Pixel Data runs past the end
    assert "runs past the end" in caplog.text  # why, for the operator (never a value)
    assert path.process(data[128:]) is None  # no preamble
    assert path.process(b"") is None
    # Options that scrub free text of the instance's own identifiers need the whole dataset.
    scrubbing = Anonymizer(Options(clean_descriptors=True), secret=SECRET)
    assert Elementwise(scrubbing, HeaderMemo()).process(data) is None


def test_the_plan_sorts_elements_by_what_the_walk_needs() -> None:
    path = Elementwise(Anonymizer(secret=SECRET), HeaderMemo())
    kind = path.plan.kind
    assert kind(0x00280010, "US") == PASS  # Rows: not in the table
    assert kind(0x7FE00010, "OW") == PASS  # Pixel Data, explicit VR
    assert kind(0x7FE00010, None) == CORE  # implicit: OB or OW is decided by pydicom
    assert kind(0x00280103, None) == CORE  # ...reading Pixel Representation
    assert kind(0x00080020, "DA") == MEMO  # Study Date: Z
    assert kind(0x0020000D, "UI") == CORE  # Study Instance UID: the identity record
    assert kind(0x00100010, "PN") == CORE  # Patient's Name: the patient's pseudonym
    assert kind(0x00091010, "LO") == DROP  # private: all removed in the Basic Profile...
    safe = Elementwise(Anonymizer(Options(retain_safe_private=True), secret=SECRET), HeaderMemo())
    assert safe.plan.kind(0x00091010, "LO") == CORE  # ...some kept: their creator decides
    assert kind(0x00081030, "LO") == DROP  # Study Description: X, whatever it holds
    assert kind(0x00101002, "SQ") == DROP  # Other Patient IDs Sequence: X
    assert kind(0x00100021, "LO") == CORE  # Issuer of Patient ID: X, but read for the vault
    assert kind(0x00081140, "SQ") == CORE  # a sequence (Referenced Image: U inside)
    assert kind(0x60003000, "OW") == CORE  # overlay data
    assert kind(0x00120062, "CS") == CORE  # a de-identification mark, set on every output


def test_an_element_demoted_to_the_core_gives_the_same_result() -> None:
    """What ``Decline`` does when the walk of one element leaves no raw value: the element
    moves to the core for good; the result stays the whole path's."""
    anonymizer = Anonymizer(secret=SECRET)
    path = Elementwise(anonymizer, HeaderMemo())
    data = to_bytes(next(iter(generate(CorpusSpec(patients=1))))[1])
    for tag in (0x00080020, 0x00080080, 0x00200052):  # Z date, D text, U UID
        path.plan.demote(tag, dcmread(io.BytesIO(data))[tag].VR)
        assert path.plan.kind(tag, dcmread(io.BytesIO(data))[tag].VR) == CORE
    assert _same(path, anonymizer, data) is True


def test_a_core_that_names_its_own_sop_instance_is_not_shared() -> None:
    """The core memo leaves the SOP Instance UID out of its key; a core whose other
    elements hold that UID too (a sequence referring to the instance itself) is not
    remembered, or the next instance would inherit that reference's remapping."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    anonymizer = Anonymizer(secret=SECRET)
    path = Elementwise(anonymizer, HeaderMemo())
    rows = list(generate(CorpusSpec(patients=1, series_per_study=1, instances_per_series=2)))
    first, second = rows[0][1], rows[1][1]
    for ds in (first, second):
        item = Dataset()
        item.ReferencedSOPClassUID = first.SOPClassUID
        item.ReferencedSOPInstanceUID = first.SOPInstanceUID  # the first instance, in both
        ds.ReferencedImageSequence = Sequence([item])
        ds.InstanceNumber = 1  # the two cores differ by the SOP Instance UID alone
        ds.AcquisitionNumber = 1
    for ds in (first, second):
        assert _same(path, anonymizer, to_bytes(ds)) is True


def test_long_values_are_not_remembered() -> None:
    """A long text changed by value (here an Institution Name of 2,000 characters, D) is
    anonymized like any other, but the element memo does not keep it."""
    from mdm.dicom.anonymize.elements import MEMO_VALUE_MAX

    anonymizer = Anonymizer(secret=SECRET)
    path = Elementwise(anonymizer, HeaderMemo())
    _, ds = next(iter(generate(CorpusSpec(patients=1))))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.InstitutionName = "St Elsewhere " * 154  # 2,002 characters
    assert _same(path, anonymizer, to_bytes(ds)) is True
    kept = [key[2] for key in path.memo._memo]
    assert kept
    assert max(len(value) for value in kept) <= MEMO_VALUE_MAX
