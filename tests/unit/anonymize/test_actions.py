"""Each action code does what Table E.1-1a says, at the top level, nested, and in file meta."""

from __future__ import annotations

import io
import re
import uuid

import pytest
from pydicom import dcmread
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import Tag
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from mdm.dicom.anonymize import Anonymizer, IdentityRecord, Options
from mdm.errors import InvalidDicom
from tests.unit.anonymize.conftest import SECRET, make_ct

UID_RE = re.compile(r"^2\.25\.[1-9]\d{0,38}$")


def test_uids_are_remapped_consistently_at_every_depth(anonymizer) -> None:
    a = anonymizer()
    ds = make_ct()
    deep = Dataset()
    deep.ReferencedSOPInstanceUID = "1.2.3.4.1"  # refers to the instance itself, depth 2
    ds.ReferencedImageSequence[0].SourceImageSequence = Sequence([deep])
    result = a.anonymize(ds)
    new_sop = ds.SOPInstanceUID
    assert UID_RE.match(new_sop)
    assert len(new_sop) <= 64
    assert ds.ReferencedImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID == new_sop
    assert ds.file_meta.MediaStorageSOPInstanceUID == new_sop
    assert UID_RE.match(ds.ReferencedImageSequence[0].ReferencedSOPInstanceUID)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2"  # class UIDs are kept
    assert result.identity.sop_instance_uid == "1.2.3.4.1"
    assert result.identity.pseudo_sop_instance_uid == new_sop
    assert result.identity.uid_map["1.2.3.4"] == ds.StudyInstanceUID
    # the UID is a UUIDv8 integer (RFC 9562 version and variant bits)
    u = uuid.UUID(int=int(new_sop[5:]))
    assert u.version == 8
    assert u.variant == uuid.RFC_4122


def test_uid_outside_the_table_is_remapped_unless_defined_by_dicom(anonymizer) -> None:
    ds = make_ct()
    ds.ReferencedFrameOfReferenceUID = "1.2.3.4.9"  # (3006,0024): not in Table E.1-1
    ds.TransferSyntaxUID = "1.2.840.10008.1.2.1"
    anonymizer().anonymize(ds)
    assert ds.ReferencedFrameOfReferenceUID == ds.FrameOfReferenceUID != "1.2.3.4.9"
    assert ds.TransferSyntaxUID == "1.2.840.10008.1.2.1"


def test_retain_uids_keeps_them(anonymizer) -> None:
    ds = make_ct()
    anonymizer(retain_uids=True).anonymize(ds)
    assert ds.SOPInstanceUID == "1.2.3.4.1"
    assert ds.ReferencedImageSequence[0].ReferencedSOPInstanceUID == "1.2.3.4.0.7"


def test_x_z_d_actions_and_patient_pseudonyms(anonymizer) -> None:
    ds = make_ct()
    ds.StudyDescription = "Smith knee"  # X
    ds.AccessionNumber = "ACC123"  # Z
    ds.InstitutionName = "St Elsewhere"  # X/Z/D -> D
    ds.SeriesDate = "20200102"  # X/D -> D
    ds.ReferencedStudySequence = Sequence([Dataset()])  # X/Z on a Type 3 sequence -> X
    ds.AcquisitionContextSequence = Sequence([Dataset()])  # X/Z, Type 2 sequence -> Z
    ds.PatientSexNeutered = "ALTERED"  # X/Z -> Z
    ds.OperatorsName = "OPERATOR^ONE"  # X/Z/D -> D (PN)
    ds.PatientSex = "F"  # Z
    result = anonymizer().anonymize(ds)
    assert "StudyDescription" not in ds
    assert ds.AccessionNumber in (None, "")
    assert ds.InstitutionName
    assert ds.InstitutionName != "St Elsewhere"
    assert ds.SeriesDate == "19000101"
    assert "ReferencedStudySequence" not in ds
    assert len(ds.AcquisitionContextSequence) == 0
    assert not ds.PatientSexNeutered
    assert str(ds.OperatorsName).startswith("ANON^")
    assert ds.PatientID.startswith("MDM")
    assert len(ds.PatientID) == 23
    assert str(ds.PatientName) == "ANONYMOUS^" + ds.PatientID
    assert not ds.PatientBirthDate
    assert result.identity.patient_id == "PID-1"
    assert result.identity.pseudo_patient_id == ds.PatientID


def test_d_sequence_keeps_structure_but_no_original_text(anonymizer) -> None:
    ds = make_ct()
    item = Dataset()
    item.ValueType = "TEXT"
    concept = Dataset()
    concept.CodeValue = "121071"
    concept.CodingSchemeDesignator = "DCM"
    concept.CodeMeaning = "Finding"
    item.ConceptNameCodeSequence = Sequence([concept])
    item.TextValue = "patient John Smith fell"  # outside the table: dummied in a D sequence
    item.PersonName = "SMITH^JOHN"  # D
    item.DateTime = "20200101120000"  # D
    ds.ContentSequence = Sequence([item])  # D
    person = Dataset()
    person.CodeValue = "EMP4711"
    person.CodingSchemeDesignator = "L"
    person.CodeMeaning = "Dr Who"
    ds.PersonIdentificationCodeSequence = Sequence([person])  # D code sequence: strict
    anonymizer().anonymize(ds)
    out = ds.ContentSequence[0]
    assert out.ConceptNameCodeSequence[0].CodeValue == "121071"
    assert "Smith" not in out.TextValue
    assert out.TextValue
    assert "SMITH" not in str(out.PersonName)
    assert out.DateTime == "19000101000000"
    code = ds.PersonIdentificationCodeSequence[0]
    assert code.CodeValue != "EMP4711"
    assert code.CodeMeaning != "Dr Who"


def test_type_1c_attribute_goes_with_its_removed_condition(anonymizer) -> None:
    ds = make_ct()
    ds.ClinicalTrialProtocolEthicsCommitteeName = "Ethics board"  # D
    ds.ClinicalTrialProtocolEthicsCommitteeApprovalNumber = "EC-12"  # X
    anonymizer().anonymize(ds)
    assert "ClinicalTrialProtocolEthicsCommitteeName" not in ds


def test_private_attributes_removed_at_every_depth(anonymizer) -> None:
    ds = make_ct()
    ds.add_new(0x00090010, "LO", "ACME")
    ds.add_new(0x00091001, "LO", "secret")
    ds.add_new(0x00111001, "LO", "no creator")
    ds.ReferencedImageSequence[0].add_new(0x00290010, "LO", "ACME")
    ds.ReferencedImageSequence[0].add_new(0x00291001, "LO", "nested")
    anonymizer().anonymize(ds)
    assert not [e for e in ds if e.tag.is_private]
    assert not [e for e in ds.ReferencedImageSequence[0] if e.tag.is_private]


def test_retain_safe_private_keeps_only_table_e3_10_entries(anonymizer) -> None:
    ds = make_ct()
    ds.add_new(0x70530010, "LO", "Philips PET Private Group")
    ds.add_new(0x70531000, "DS", "1.5")  # (7053,xx00) SUV factor: safe
    ds.add_new(0x70531001, "LO", "not in the table")
    ds.add_new(0x00090010, "LO", "ACME")
    ds.add_new(0x00091001, "LO", "secret")
    anonymizer(retain_safe_private=True).anonymize(ds)
    assert ds[0x70531000].value == "1.5"
    assert ds[0x70530010].value == "Philips PET Private Group"
    assert 0x70531001 not in ds
    assert 0x00091001 not in ds
    assert 0x00090010 not in ds


def test_overlays_and_curves_go_as_groups(anonymizer) -> None:
    ds = make_ct()
    ds.add_new(0x60000010, "US", 1)
    ds.add_new(0x60000022, "LO", "overlay description")
    ds.add_new(0x60003000, "OW", b"\x01\x00")
    ds.add_new(0x60024000, "LT", "comment only")
    ds.add_new(0x50002500, "LO", "curve label")
    anonymizer().anonymize(ds)
    assert not [e for e in ds if e.tag.group in (0x6000, 0x6002, 0x5000)]


def test_unknown_tag_in_implicit_vr_is_handled_by_tag(anonymizer) -> None:
    ds = make_ct()
    # Name to Use (0010,0012) is not in pydicom 3.0's dictionary: it arrives as raw UN.
    ds._dict[Tag(0x00100012)] = RawDataElement(Tag(0x00100012), None, 4, b"JANE", 0, True, True)
    anonymizer().anonymize(ds)
    assert 0x00100012 not in ds


def test_file_meta_is_cleaned(anonymizer) -> None:
    ds = make_ct()
    ds.file_meta.SourceApplicationEntityTitle = "HOSPITAL_CT1"
    ds.file_meta.add_new(0x00020100, "UI", "1.2.3.99")
    ds.file_meta.add_new(0x00020102, "OB", b"secret")
    anonymizer().anonymize(ds)
    assert "SourceApplicationEntityTitle" not in ds.file_meta
    assert 0x00020100 not in ds.file_meta
    assert 0x00020102 not in ds.file_meta


def test_deidentification_attributes(anonymizer) -> None:
    ds = make_ct()
    anonymizer(retain_long_modified_dates=True, clean_descriptors=True).anonymize(ds)
    assert ds.PatientIdentityRemoved == "YES"
    assert ds.LongitudinalTemporalInformationModified == "MODIFIED"
    codes = [(i.CodeValue, i.CodingSchemeDesignator) for i in ds.DeidentificationMethodCodeSequence]
    assert codes == [("113100", "DCM"), ("113107", "DCM"), ("113105", "DCM")]
    assert "2026c" in ds.DeidentificationMethod[0]
    ds2 = make_ct()
    anonymizer().anonymize(ds2)
    assert ds2.LongitudinalTemporalInformationModified == "REMOVED"
    ds3 = make_ct()
    anonymizer(retain_long_full_dates=True).anonymize(ds3)
    assert ds3.LongitudinalTemporalInformationModified == "UNMODIFIED"
    assert ds3.StudyDate == "20200102"


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_marks_put_in_as_raw_elements_equal_the_elements_built_one_by_one(
    anonymizer, syntax: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A dataset read from bytes (what a PACS sends) gets the de-identification elements as
    raw elements encoded once per encoding; they read, and write, as the ones built by pydicom."""
    source = make_ct()
    source.file_meta.TransferSyntaxUID = syntax
    buf = io.BytesIO()
    source.save_as(buf, enforce_file_format=True)

    def run(raw: bool) -> tuple[bytes, Dataset]:
        an = anonymizer(retain_long_modified_dates=True, clean_descriptors=True)
        if not raw:
            monkeypatch.setattr(an, "_raw_marks", lambda encoding: None)
        ds = dcmread(io.BytesIO(buf.getvalue()))
        an.anonymize(ds)
        assert (type(ds._dict[Tag(0x00120064)]) is RawDataElement) is raw
        out = io.BytesIO()
        ds.save_as(out, enforce_file_format=True)
        return out.getvalue(), ds

    (fast, a), (slow, b) = run(True), run(False)
    assert fast == slow
    for ds in (a, dcmread(io.BytesIO(fast))):
        assert ds.PatientIdentityRemoved == "YES"
        assert ds.LongitudinalTemporalInformationModified == "MODIFIED"
        assert ds.DeidentificationMethod == b.DeidentificationMethod
        codes = [i.CodeValue for i in ds.DeidentificationMethodCodeSequence]
        assert codes == ["113100", "113107", "113105"]


def test_clean_descriptors_scrubs_the_patients_own_identifiers(anonymizer) -> None:
    ds = make_ct(name="DOE^JANE", patient_id="PID-1")
    ds.StudyDescription = "CT chest for Jane Doe, MRN PID-1, born 1970-01-01"
    ds.ImageComments = "routine"
    anonymizer(clean_descriptors=True).anonymize(ds)
    assert ds.StudyDescription == "CT chest for *** ***, MRN ***, born ***"
    assert ds.ImageComments == "routine"


def test_device_identity_ae_titles_are_cleaned(anonymizer) -> None:
    ds = make_ct()
    ds.StationAETitle = "STELSEWHERE_CT"
    ds.DeviceSerialNumber = "SN-1234"
    anonymizer(retain_device_identity=True).anonymize(ds)
    assert ds.DeviceSerialNumber == "SN-1234"
    assert ds.StationAETitle
    assert ds.StationAETitle != "STELSEWHERE_CT"
    assert len(ds.StationAETitle) <= 16


def test_same_input_same_secret_same_bytes_and_other_secret_differs() -> None:
    def run(secret: bytes) -> bytes:
        ds = make_ct()
        Anonymizer(options=Options(retain_long_modified_dates=True), secret=secret).anonymize(ds)
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        return buf.getvalue()

    assert run(SECRET) == run(SECRET)
    assert run(SECRET) != run(b"another secret of 32 bytes......")
    back = dcmread(io.BytesIO(run(SECRET)))
    assert back.PatientIdentityRemoved == "YES"


def test_identity_record_never_prints_values(anonymizer) -> None:
    result = anonymizer().anonymize(make_ct(name="DOE^JANE"))
    assert isinstance(result.identity, IdentityRecord)
    assert "DOE" not in repr(result.identity)
    assert "DOE" not in str(result.identity)
    assert result.identity.as_dict()["patient_name"] == "DOE^JANE"


def test_undecodable_element_is_invalid_dicom_naming_the_tag(anonymizer) -> None:
    ds = make_ct()
    # A Study Date the reader cannot turn into a value of its VR length.
    ds._dict[Tag(0x00181030)] = RawDataElement(
        Tag(0x00181030), "SQ", 4, b"\x01\x02", 0, False, True
    )
    with pytest.raises(InvalidDicom, match=r"\(0018,1030\)"):
        anonymizer().anonymize(ds)


def test_secret_must_be_long_enough() -> None:
    from mdm.errors import MDMError

    with pytest.raises(MDMError, match="at least 16 bytes"):
        Anonymizer(secret=b"short")


def test_element_values_of_every_dummy_vr_are_valid(anonymizer) -> None:
    ds = make_ct()
    for tag, vr, value in [
        (0x00720066, "LO", "lo"),
        (0x0072006C, "SH", "sh"),
        (0x0072005F, "AS", "012Y"),
        (0x00720061, "DA", "20200101"),
        (0x0072006B, "TM", "101010"),
        (0x00720063, "DT", "20200101101010"),
        (0x0072006A, "PN", "A^B"),
        (0x00720071, "UR", "http://x.org/a"),
        (0x00720065, "OB", b"ab"),
        (0x0072005E, "AE", "AETITLE"),
    ]:
        ds.add(DataElement(tag, vr, value))
    anonymizer().anonymize(ds)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    back = dcmread(io.BytesIO(buf.getvalue()))
    assert back[0x0072005F].value == "000D"
    assert back[0x00720061].value == "19000101"
    assert back[0x00720065].value == b"\x00\x00"


ATTRIBUTES = [  # one per action code of the Basic Profile, combined codes included
    ("StudyDescription", "X"),
    ("AccessionNumber", "Z"),
    ("ReferringPhysicianName", "Z"),
    ("PersonName", "D"),
    ("VerifyingOrganization", "D"),
    ("ContentCreatorName", "Z/D"),
    ("InstitutionName", "X/Z/D"),
    ("ProtocolName", "X/D"),
    ("RequestedProcedureDescription", "X/Z"),
    ("IrradiationEventUID", "U"),
]


@pytest.mark.parametrize("options", [{}, {"retain_long_modified_dates": True}])
def test_every_code_acts_the_same_at_depth_0_1_and_2(anonymizer, options) -> None:
    from pydicom.datadict import dictionary_VR

    def fill(target: Dataset) -> None:
        for keyword, _ in ATTRIBUTES:
            vr = dictionary_VR(keyword)
            value = "1.2.3.777" if vr == "UI" else "SMITH^JOHN" if vr == "PN" else "JOHN SMITH"
            setattr(target, keyword, value)

    ds = make_ct()
    fill(ds)
    level1 = Dataset()
    fill(level1)
    level2 = Dataset()
    fill(level2)
    level1.PlanePositionSequence = Sequence([level2])  # outside the table: walked as is
    ds.SharedFunctionalGroupsSequence = Sequence([level1])
    anonymizer(**options).anonymize(ds)
    depths = [ds, ds.SharedFunctionalGroupsSequence[0]]
    depths.append(depths[1].PlanePositionSequence[0])
    for keyword, code in ATTRIBUTES:
        seen = [d.get(keyword) for d in depths]
        values = [None if e is None else str(e) for e in seen]
        assert len(set(values)) == 1, (keyword, code, values)
        assert values[0] is None or "SMITH" not in values[0], (keyword, values[0])
        if code == "X":
            assert values[0] is None
        if code in ("D", "Z/D", "X/Z/D", "X/D", "U"):
            assert values[0], (keyword, code)


def test_retain_institution_and_patient_characteristics(anonymizer) -> None:
    ds = make_ct()
    ds.InstitutionName = "St Elsewhere"
    ds.PatientAge = "054Y"
    ds.PatientSex = "F"
    ds.PatientWeight = "70"
    anonymizer(retain_institution_identity=True, retain_patient_characteristics=True).anonymize(ds)
    assert ds.InstitutionName == "St Elsewhere"
    assert (ds.PatientAge, ds.PatientSex, ds.PatientWeight) == ("054Y", "F", 70)


def test_scrubbing_takes_whole_words_only(anonymizer) -> None:
    ds = make_ct(name="ANN^LEE")
    ds.StudyDescription = "annual check, Ann Lee's knee"
    anonymizer(clean_descriptors=True).anonymize(ds)
    assert ds.StudyDescription == "annual check, *** ***'s knee"


def test_media_storage_uid_is_replaced_even_without_sop_instance_uid(anonymizer) -> None:
    ds = make_ct()
    del ds.SOPInstanceUID
    anonymizer().anonymize(ds)
    assert ds.file_meta.MediaStorageSOPInstanceUID.startswith("2.25.")
