from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit.keyserver.inprocess import Cluster


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path, 5).start()
    try:
        yield c
    finally:
        c.close()
