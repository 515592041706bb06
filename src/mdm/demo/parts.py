"""Adapters from the grid to the parts other packages provide: the catalog-backed storage
element (``mdm.servers.se_catalog``) and the recall worker (``mdm.workers.recall``).

Both are used exactly as ``mdm serve se`` and ``mdm worker recall`` use them, but in threads of
this process. Each adapter raises ``PartMissing`` with a clear reason when this installation
lacks the part, so ``mdm demo`` reports the steps that need it as not run (and fails) instead
of faking them.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import threading
from collections.abc import Iterator
from typing import Any

from mdm.demo.grid import PartMissing
from mdm.settings import Settings

logger = logging.getLogger(__name__)


def _need(name: str) -> None:
    if importlib.util.find_spec(name) is None:
        raise PartMissing(f"{name} is not part of this installation yet")


def storage_element_app(settings: Settings) -> tuple[Any, Any]:
    """``(app, backend)``: the SE app over the catalog-backed backend; close the backend."""
    _need("mdm.servers.se_catalog")
    from mdm.servers.se_app import create_app
    from mdm.servers.se_catalog import CatalogStorage

    backend = CatalogStorage(settings)
    return create_app(backend, settings), backend


@contextlib.contextmanager
def recall_worker(settings: Settings, *, idle: float = 0.2) -> Iterator[threading.Thread]:
    """The recall worker (``mdm worker recall``) in a thread until the block ends."""
    _need("mdm.workers.recall")
    from mdm.workers.recall import run

    stop = threading.Event()

    def main() -> None:
        try:
            run(settings, stop_event=stop, idle=idle)
        except Exception:  # logged once here; the grid then reports the worker as missing
            logger.exception("the recall worker stopped")

    thread = threading.Thread(target=main, name="mdm-recall-worker", daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        stop.set()
        thread.join(30)


__all__ = ["recall_worker", "storage_element_app"]
