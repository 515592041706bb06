"""The MDM client library (layer 3): talks to MDM services over HTTPS, imports no server code.

``Client(settings)`` composes the sub-clients: ``catalog`` (``CatalogClient``), ``storage``
(``StorageClient``) and ``keys`` (``KeysClient`` over ``mdm.keystore``); docs/client.md.
"""

from __future__ import annotations

from mdm.client.access import AccessChange
from mdm.client.catalog import CatalogClient
from mdm.client.core import Client, GetEvents, GetResult
from mdm.client.keys import BulkAclResult, KeysClient
from mdm.client.storage import DavEntry, StorageClient

__all__ = [
    "AccessChange",
    "BulkAclResult",
    "CatalogClient",
    "Client",
    "DavEntry",
    "GetEvents",
    "GetResult",
    "KeysClient",
    "StorageClient",
]
