"""Small value types shared by every layer (stdlib only)."""

from __future__ import annotations

from typing import NewType

Guid = NewType("Guid", str)
Lfn = NewType("Lfn", str)
KeyId = NewType("KeyId", str)
StudyUID = NewType("StudyUID", str)
SeriesUID = NewType("SeriesUID", str)
InstanceUID = NewType("InstanceUID", str)
