"""The de-identified header of a recalled instance, as DICOM JSON for the metadata catalog.

``header_json`` is pydicom's ``Dataset.to_json_dict`` without pixel data and other bulk data
(the catalog keeps attributes, the storage element keeps the bytes). It was a fifth of the
recall worker's CPU (py-spy, ``bench/recall.py``): pydicom converts every element, and the
instances of one series repeat most of theirs (equipment, geometry, protocol...). So
``HeaderMemo`` remembers the JSON of the elements it converts *while they are still raw*
(untouched by the anonymizer, exactly the bytes the PACS sent), keyed by everything the
conversion depends on: the dataset's encoding and character set, the tag, the VR and the
value bytes. Elements the anonymizer replaced (UIDs, shifted dates, pseudonyms) are converted
each time. The result is the same dictionary pydicom gives (tested on the corpus and on
pydicom's own test files).
"""

from __future__ import annotations

from typing import Any

from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag

from mdm.memo import Memo

#: Values larger than this are bulk data (not kept in the catalog), as in DICOMweb.
BULK = 4096
_DROP = ("BulkDataURI", "InlineBinary")


def _no_bulk(_element: object) -> str:
    return ""  # the element is dropped below; only its presence matters


def header_json(ds: Dataset, memo: HeaderMemo | None = None) -> dict[str, Any]:
    """The de-identified header as DICOM JSON, without pixel data or other bulk data."""
    if memo is not None:
        return memo.convert(ds)
    data = ds.to_json_dict(bulk_data_threshold=BULK, bulk_data_element_handler=_no_bulk)
    return {t: e for t, e in data.items() if not t.startswith("7FE0") and _kept(e)}


def _kept(element: dict[str, Any]) -> bool:
    return not any(k in element for k in _DROP)


class HeaderMemo:
    """``header_json`` remembering the JSON of raw elements (see the module docstring).

    Thread-safe. At most *limit* entries (``mdm.memo.Memo``).
    """

    def __init__(self, limit: int = 50_000) -> None:
        self._memo: Memo[tuple[Any, ...], dict[str, Any]] = Memo(limit)

    @staticmethod
    def encoding(ds: Dataset) -> tuple[Any, ...]:
        """What the JSON of a raw element depends on besides its tag, VR and bytes."""
        return (ds.original_encoding, repr(ds.get("SpecificCharacterSet")))

    def convert(self, ds: Dataset) -> dict[str, Any]:
        encoding = self.encoding(ds)
        out: dict[str, Any] = {}
        for tag in tuple(ds.keys()):  # iterating a Dataset would convert every element
            if tag.group == 0x7FE0:
                continue
            raw = ds.get_item(tag)
            key = None
            if (
                isinstance(raw, RawDataElement)
                and raw.length <= BULK
                and isinstance(raw.value, bytes)
                and (raw.VR is not None or not tag.is_private)  # private VR: from its creator
            ):
                key = (encoding, int(tag), raw.VR, raw.value)
                hit = self._memo.get(key)
                if hit is not None:
                    out[f"{tag:08X}"] = hit
                    continue
            element = ds[tag].to_json_dict(
                bulk_data_element_handler=_no_bulk, bulk_data_threshold=BULK
            )
            if not _kept(element):
                continue
            out[f"{tag:08X}"] = element
            if key is not None:
                self._memo.put(key, element)
        return out

    def raw(
        self,
        encoding: tuple[Any, ...],
        tag: int,
        vr: str | None,
        value: bytes,
        charset: RawDataElement | None,
    ) -> dict[str, Any] | None:
        """The JSON of one raw, public, non-ambiguous top-level element (*vr* None: implicit
        VR), as ``convert`` gives it in a dataset of that *encoding* (``encoding(ds)``) whose
        Specific Character Set is *charset*; None when it is bulk data (left out). For the
        recall's element-wise path, which has no whole dataset (``mdm.workers.elementwise``)."""
        key = None
        if len(value) <= BULK:
            key = (encoding, tag, vr, value)
            hit = self._memo.get(key)
            if hit is not None:
                return hit
        ds = Dataset()
        if charset is not None:
            ds._dict[BaseTag(0x00080005)] = charset
        raw = RawDataElement(BaseTag(tag), vr, len(value), value, 0, vr is None, True)
        ds._dict[raw.tag] = raw
        element = ds[raw.tag].to_json_dict(
            bulk_data_element_handler=_no_bulk, bulk_data_threshold=BULK
        )
        if not _kept(element):
            return None
        if key is not None:
            self._memo.put(key, element)
        return element
