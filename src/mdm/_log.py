"""Logging helpers: PHI-safe by construction, and the separate ``mdm.audit`` logger.

Rules (STYLE C6): modules log with ``getLogger(__name__)`` and %-style arguments; patient
identity and dataset content never reach a log record; secrets never either. Only the CLI calls
``configure``. pynetdicom logs identifiers by default: ``quiet_pynetdicom`` switches that off
through its public configuration and is called by every MDM DICOM entry point.
"""

from __future__ import annotations

import logging
import sys

AUDIT_LOGGER = "mdm.audit"


def audit_logger() -> logging.Logger:
    return logging.getLogger(AUDIT_LOGGER)


def quiet_pynetdicom() -> None:
    """Stop pynetdicom from logging C-FIND/C-GET identifiers and dataset summaries (PHI)."""
    from pynetdicom import _config

    _config.LOG_REQUEST_IDENTIFIERS = False
    _config.LOG_RESPONSE_IDENTIFIERS = False
    # pynetdicom's default handlers write DIMSE summaries (patient names among them) at INFO and
    # DEBUG; keep its loggers at WARNING whatever the root level is.
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)


def configure(level: str = "WARNING", debug: bool = False) -> None:
    """Console logging for the ``mdm`` command (servers log one line per request at INFO)."""
    root = logging.getLogger()
    if any(getattr(h, "_mdm", False) for h in root.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler._mdm = True  # type: ignore[attr-defined]
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else getattr(logging, level.upper(), logging.WARNING))
