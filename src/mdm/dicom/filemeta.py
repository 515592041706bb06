"""The file meta group of a Part 10 file, read straight from its bytes (PS3.10 7.1).

Two hot paths need it for every received instance: the dcmtk engine, to name what getscu
wrote (``mdm.dicom.getscu``), and the recall worker's element-wise path, to find where the
dataset starts and in which transfer syntax (``mdm.workers.elementwise``). pydicom's
``read_file_meta_info`` costs more than the rest of either; this reads the few elements with
``struct``, and gives up (``None``) on anything but a well-formed explicit VR little endian
group, where the caller falls back on pydicom or on what it knew already.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from pydicom.filereader import ENCODED_VR
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32

#: The two-letter VRs pydicom reads as such in explicit VR (bytes -> name).
VRS = {vr: vr.decode("ascii") for vr in ENCODED_VR if len(vr) == 2}
#: Explicit VRs whose length field is 4 bytes after 2 reserved bytes (PS3.5 7.1.2): pydicom's
#: list, as bytes.
LONG_VRS = frozenset(vr.encode("ascii") for vr in EXPLICIT_VR_LENGTH_32)

_HEAD = struct.Struct("<HH2sH").unpack_from
_LENGTH = struct.Struct("<I").unpack_from


@dataclass(frozen=True)
class FileMeta:
    """The file meta group: where the dataset starts, and its UI elements."""

    end: int  # offset of the dataset's first element
    uids: dict[int, str]  # element number -> UID (trailing padding removed)

    @property
    def transfer_syntax(self) -> str:
        return self.uids.get(0x0010, "")


def explicit_header(data: bytes, pos: int) -> tuple[int, int, bytes, int, int] | None:
    """The explicit VR little endian element header at *pos*: ``(group, element, VR code,
    value length, value offset)``, the 4-byte length read for the long VRs; None when the
    header is cut short. The VR code is not checked (``VRS`` says which pydicom knows)."""
    if len(data) - pos < 8:
        return None
    group, number, code, length = _HEAD(data, pos)
    if code in LONG_VRS:
        if len(data) - pos < 12:
            return None
        return group, number, code, _LENGTH(data, pos + 8)[0], pos + 12
    return group, number, code, length, pos + 8


def read(data: bytes) -> FileMeta | None:
    """The file meta group of *data*; None for anything that is not a Part 10 file with a
    complete explicit VR little endian meta group naming its transfer syntax."""
    if len(data) < 132 or data[128:132] != b"DICM":
        return None
    uids: dict[int, str] = {}
    pos, size = 132, len(data)
    while size - pos >= 8:
        if _HEAD(data, pos)[0] != 0x0002:
            break
        head = explicit_header(data, pos)
        if head is None or head[2] not in VRS:
            return None
        _group, number, code, length, start = head
        if start + length > size:
            return None
        if code == b"UI":
            uids[number] = data[start : start + length].rstrip(b"\0 ").decode("ascii", "replace")
        pos = start + length
    if 0x0010 not in uids:
        return None  # Transfer Syntax UID is type 1: without it the dataset cannot be read
    return FileMeta(pos, uids)
