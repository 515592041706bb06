"""The public surface of ``mdm.client`` changes only on purpose (httpx's guard test)."""

from __future__ import annotations

import mdm.client


def test_client_exports() -> None:
    assert sorted(mdm.client.__all__) == [
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
    for name in mdm.client.__all__:
        assert getattr(mdm.client, name).__module__.startswith("mdm.client.")
