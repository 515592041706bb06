"""Session-wide real servers shared by integration tests (each stops what it starts)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mdm.dicom import scp
from mdm.dicom.scp import StorageReceiver
from mdm.settings import DicomSettings
from tests.helpers.ports import free_port
from tests.helpers.postgres import postgres_server


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """One real PostgreSQL for the whole run; tests make their own databases with new_database."""
    with postgres_server() as url:
        yield url


@pytest.fixture(scope="module")
def dicom() -> DicomSettings:
    """MDM's own DICOM node (the C-MOVE destination) on a free loopback port."""
    return DicomSettings(ae_title="MDM", host="127.0.0.1", port=free_port())


@pytest.fixture(scope="module")
def receiver(dicom: DicomSettings) -> Iterator[StorageReceiver]:
    """MDM's storage SCP listening as ``dicom``; stopped when the module is done."""
    receiver = StorageReceiver()
    server = scp.start(dicom, receiver)
    assert server is not None
    try:
        yield receiver
    finally:
        server.shutdown()
