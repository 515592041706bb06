from __future__ import annotations

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from mdm.dicom.anonymize import Anonymizer, Options

SECRET = b"unit-test site secret, 32 bytes!"


def make_ct(patient_id: str = "PID-1", name: str = "DOE^JANE", sop: str = "1.2.3.4.1") -> Dataset:
    """A small CT data set with file meta and a nested reference."""
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop
    ds.StudyInstanceUID = "1.2.3.4"
    ds.SeriesInstanceUID = "1.2.3.4.0"
    ds.FrameOfReferenceUID = "1.2.3.4.9"
    ds.PatientID = patient_id
    ds.PatientName = name
    ds.PatientBirthDate = "19700101"
    ds.StudyDate = "20200102"
    ds.Modality = "CT"
    ds.Rows = 1
    ds.Columns = 1
    ref = Dataset()
    ref.ReferencedSOPClassUID = CTImageStorage
    ref.ReferencedSOPInstanceUID = "1.2.3.4.0.7"
    ds.ReferencedImageSequence = Sequence([ref])
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = sop
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


@pytest.fixture
def anonymizer():
    def make(**options: object) -> Anonymizer:
        return Anonymizer(options=Options(**options), secret=SECRET)  # type: ignore[arg-type]

    return make
