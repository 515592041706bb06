"""Refuse instances whose pixels may show identity: header cleaning cannot reach them.

PS3.15 E.3.1 (Clean Pixel Data Option) is the only conformant way to export such pixels, and MDM
does not implement it yet (future work, see docs/anonymization.md). Until then an instance is
refused, with a reason, and never exported silently, when:

* Burned In Annotation (0028,0301) is YES: the modality says there is text in the pixels;
* Recognizable Visual Features (0028,0302) is YES (a face, a photograph);
* an overlay lives in the unused bits of Pixel Data (60xx,0010 present but no 60xx,3000): it
  survives the removal of the overlay attributes and cannot be cleaned without touching pixels;
* its SOP Class commonly carries burned-in text or is a photograph or document (secondary
  capture, ultrasound, visible light, encapsulated PDF/CDA), unless the site allows that class
  (``Options.allow_burned_in_sop_classes``: e.g. it verified its ultrasound's configuration).
"""

from __future__ import annotations

from typing import Final

from pydicom.dataset import Dataset

from mdm.errors import AnonymizationRefused

_SC = "1.2.840.10008.5.1.4.1.1.7"
#: SOP Class UID -> name, for classes that commonly carry identity in their pixels.
RISKY_SOP_CLASSES: Final[dict[str, str]] = {
    _SC: "Secondary Capture Image Storage",
    _SC + ".1": "Multi-frame Single Bit Secondary Capture Image Storage",
    _SC + ".2": "Multi-frame Grayscale Byte Secondary Capture Image Storage",
    _SC + ".3": "Multi-frame Grayscale Word Secondary Capture Image Storage",
    _SC + ".4": "Multi-frame True Color Secondary Capture Image Storage",
    "1.2.840.10008.5.1.4.1.1.6": "Ultrasound Image Storage (Retired)",
    "1.2.840.10008.5.1.4.1.1.6.1": "Ultrasound Image Storage",
    "1.2.840.10008.5.1.4.1.1.6.2": "Enhanced US Volume Storage",
    "1.2.840.10008.5.1.4.1.1.3": "Ultrasound Multi-frame Image Storage (Retired)",
    "1.2.840.10008.5.1.4.1.1.3.1": "Ultrasound Multi-frame Image Storage",
    "1.2.840.10008.5.1.4.1.1.77.1.1": "VL Endoscopic Image Storage",
    "1.2.840.10008.5.1.4.1.1.77.1.1.1": "Video Endoscopic Image Storage",
    "1.2.840.10008.5.1.4.1.1.77.1.2": "VL Microscopic Image Storage",
    "1.2.840.10008.5.1.4.1.1.77.1.2.1": "Video Microscopic Image Storage",
    "1.2.840.10008.5.1.4.1.1.77.1.4": "VL Photographic Image Storage",
    "1.2.840.10008.5.1.4.1.1.77.1.4.1": "Video Photographic Image Storage",
    "1.2.840.10008.5.1.4.1.1.104.1": "Encapsulated PDF Storage",
    "1.2.840.10008.5.1.4.1.1.104.2": "Encapsulated CDA Storage",
}

_BURNED_IN = 0x00280301
_VISUAL = 0x00280302
_SOP_CLASS = 0x00080016


def _flag(ds: Dataset, tag: int) -> str:
    elem = ds.get_item(tag)
    if elem is None:
        return ""
    value = elem.value
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    return str(value or "").strip(" \x00").upper()


def check(ds: Dataset, allowed_sop_classes: frozenset[str]) -> None:
    """Raise AnonymizationRefused (reason in ``.reason``) if the pixels may show identity."""
    if _flag(ds, _BURNED_IN) == "YES":
        raise AnonymizationRefused(
            "Burned In Annotation is YES: pixel text cannot be removed (Clean Pixel Data is "
            "not implemented)",
            reason="burned-in-annotation",
        )
    if _flag(ds, _VISUAL) == "YES":
        raise AnonymizationRefused(
            "Recognizable Visual Features is YES: the pixels may show a face",
            reason="recognizable-visual-features",
        )
    sop_class = _flag(ds, _SOP_CLASS)
    if sop_class in RISKY_SOP_CLASSES and sop_class not in allowed_sop_classes:
        raise AnonymizationRefused(
            f"{RISKY_SOP_CLASSES[sop_class]} ({sop_class}) commonly carries burned-in "
            "identity; allow the SOP class in the site settings once checked",
            reason="risky-sop-class",
            sop_class=sop_class,
        )
    for group in range(0x6000, 0x6020, 2):
        if (group << 16 | 0x0010) in ds and (group << 16 | 0x3000) not in ds:
            raise AnonymizationRefused(
                f"overlay group {group:04X} is embedded in the Pixel Data bits",
                reason="embedded-overlay",
            )
