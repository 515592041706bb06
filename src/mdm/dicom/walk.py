"""Walk a PACS with C-FIND, study by study, down to every instance: the input of registration.

``mdm register --pacs NAME [--study UID | --patient ID | --since DATE]`` plugs the catalog onto
:func:`walk`: each ``WalkedInstance`` carries the original UIDs (for the identity vault and
for a later retrieval) and the study and series attributes (to be de-identified for the
metadata catalog). The walk is strictly hierarchical (STUDY, then SERIES with the study UID,
then IMAGE with both UIDs: PS3.4 C.4.1.1.3), so it works against strict Q/R servers such as
dcmqrscp, not only against Orthanc. It keeps the study list and one study's instance records
in memory, and never holds an association open while the caller works on what it yielded.

A count check is built in: when the PACS announced ``NumberOfSeriesRelatedInstances`` for a
series and the IMAGE level returned a different number, the walk asks once more, then says so
in ``WalkStats`` (and in a warning), since registration must not silently register half a
series.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

from mdm.dicom.pacs import Pacs
from mdm.dicom.query import InstanceRecord, SeriesRecord, StudyRecord
from mdm.errors import UsageError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WalkedInstance:
    """One instance found by the walk, with the study and series it belongs to."""

    study: StudyRecord
    series: SeriesRecord
    instance: InstanceRecord

    @property
    def study_uid(self) -> str:
        return self.study.study_uid

    @property
    def series_uid(self) -> str:
        return self.series.series_uid

    @property
    def sop_instance_uid(self) -> str:
        return self.instance.sop_instance_uid


@dataclass
class WalkStats:
    """What the walk saw, for the command's summary line."""

    studies: int = 0
    series: int = 0
    instances: int = 0
    #: Series whose IMAGE-level count differs from the count the SERIES level announced:
    #: (series UID, announced, found).
    mismatched: list[tuple[str, int, int]] = field(default_factory=list)


def study_filters(
    *,
    study_uid: str | None = None,
    patient_id: str | None = None,
    since: dt.date | str | None = None,
) -> dict[str, str]:
    """STUDY-level matching keys for the ``--study``, ``--patient`` and ``--since`` options.

    ``since`` is a date (or ``YYYYMMDD`` / ``YYYY-MM-DD``) and becomes the open range
    ``YYYYMMDD-`` on StudyDate (PS3.4 C.2.2.2.5 range matching).
    """
    keys: dict[str, str] = {}
    if study_uid:
        keys["StudyInstanceUID"] = study_uid
    if patient_id:
        if any(c in patient_id for c in "*?\\"):
            raise UsageError("--patient takes one exact patient ID (no wildcards, no lists)")
        keys["PatientID"] = patient_id
    if since is not None:
        if isinstance(since, str):
            text = since.replace("-", "")
            try:
                since = dt.datetime.strptime(text, "%Y%m%d").date()
            except ValueError:
                raise UsageError(f"--since must be a date like 2024-01-31, not {since!r}") from None
        keys["StudyDate"] = since.strftime("%Y%m%d") + "-"
    return keys


def walk(
    pacs: Pacs,
    *,
    study_uid: str | None = None,
    patient_id: str | None = None,
    since: dt.date | str | None = None,
    stats: WalkStats | None = None,
) -> Iterator[WalkedInstance]:
    """Yield every instance of the studies matching the filters (all studies without any).

    Study-level filters only: ``study_uid``, ``patient_id``, ``since`` (see ``study_filters``).
    """
    stats = stats if stats is not None else WalkStats()
    matching = study_filters(study_uid=study_uid, patient_id=patient_id, since=since)
    with pacs.query() as q:
        studies = q.studies(matching)
    for study in studies:
        stats.studies += 1
        # One association per study, closed before yielding: the caller may take its time
        # (a catalog transaction per instance) and PACS drop idle associations (Orthanc
        # after DicomScpTimeout, 30 s by default).
        found: list[tuple[SeriesRecord, list[InstanceRecord]]] = []
        with pacs.query() as q:
            for series in q.series(study.study_uid):
                instances = q.instances(study.study_uid, series.series_uid)
                if series.number_of_instances not in (None, len(instances)):
                    # Ask once more before believing a short answer: it also covers a
                    # response lost to pynetdicom's reactor race (see scu.settle).
                    instances = q.instances(study.study_uid, series.series_uid)
                found.append((series, instances))
        for series, instances in found:
            stats.series += 1
            announced = series.number_of_instances
            if announced is not None and announced != len(instances):
                stats.mismatched.append((series.series_uid, announced, len(instances)))
                # The UID stays in stats (for the caller), out of the log: original UIDs
                # can be linked back to the patient.
                logger.warning(
                    "PACS %r announced %d instances in a series but listed %d",
                    pacs.name,
                    announced,
                    len(instances),
                )
            for instance in sorted(instances, key=_instance_order):
                stats.instances += 1
                yield WalkedInstance(study, series, instance)


def _instance_order(record: InstanceRecord) -> tuple[int, str]:
    number = record.instance_number if record.instance_number is not None else 1 << 30
    return (number, record.sop_instance_uid)
