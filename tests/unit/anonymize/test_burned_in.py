"""Instances whose pixels may show identity are refused with a reason, never exported."""

from __future__ import annotations

import pytest

from mdm.errors import AnonymizationRefused
from tests.unit.anonymize.conftest import make_ct

US = "1.2.840.10008.5.1.4.1.1.6.1"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"BurnedInAnnotation": "YES"}, "burned-in-annotation"),
        ({"RecognizableVisualFeatures": "YES"}, "recognizable-visual-features"),
        ({"SOPClassUID": US}, "risky-sop-class"),
        ({"SOPClassUID": "1.2.840.10008.5.1.4.1.1.7"}, "risky-sop-class"),
        ({"SOPClassUID": "1.2.840.10008.5.1.4.1.1.104.1"}, "risky-sop-class"),
    ],
)
def test_refused_with_reason(anonymizer, change: dict[str, str], reason: str) -> None:
    ds = make_ct()
    for key, value in change.items():
        setattr(ds, key, value)
    with pytest.raises(AnonymizationRefused) as info:
        anonymizer().anonymize(ds)
    assert info.value.reason == reason
    assert info.value.http_status == 422
    assert ds.PatientName == "DOE^JANE"  # nothing was half-done


def test_embedded_overlay_is_refused(anonymizer) -> None:
    ds = make_ct()
    ds.add_new(0x60000010, "US", 1)  # overlay rows, but its bits live in Pixel Data
    with pytest.raises(AnonymizationRefused, match="embedded") as info:
        anonymizer().anonymize(ds)
    assert info.value.reason == "embedded-overlay"


def test_site_may_allow_a_checked_sop_class(anonymizer) -> None:
    ds = make_ct()
    ds.SOPClassUID = US
    anonymizer(allow_burned_in_sop_classes=frozenset({US})).anonymize(ds)
    assert ds.PatientIdentityRemoved == "YES"
    ds2 = make_ct()
    ds2.SOPClassUID = US
    ds2.BurnedInAnnotation = "YES"
    with pytest.raises(AnonymizationRefused):  # the allow list never overrides YES
        anonymizer(allow_burned_in_sop_classes=frozenset({US})).anonymize(ds2)


def test_burned_in_no_is_not_refused(anonymizer) -> None:
    ds = make_ct()
    ds.BurnedInAnnotation = "NO"
    result = anonymizer().anonymize(ds)
    assert result.dataset.PatientIdentityRemoved == "YES"
    assert result.identity.pseudo_sop_instance_uid.startswith("2.25.")
