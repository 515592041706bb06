"""MDM, the Medical Data Manager.

A hospital PACS seen as a grid storage element: files leave anonymized (PS3.15 Annex E) and
encrypted with a per-file key that is Shamir-split over n key servers. See ARCHITECTURE in docs/.

The top-level package stays tiny on purpose: ``import mdm`` must not pull in servers, SQLAlchemy
or pydicom, so that ``mdm --help`` and the client library start fast.
"""

from __future__ import annotations

import logging

__version__ = "0.1.0"
__all__ = ["__version__"]

# Library etiquette (urllib3, pynetdicom): never configure handlers here; only the CLI does.
logging.getLogger(__name__).addHandler(logging.NullHandler())
