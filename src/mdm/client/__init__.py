"""The MDM client library (layer 3): talks to MDM services over HTTPS, imports no server code."""

from __future__ import annotations

from mdm.client.catalog import CatalogClient

__all__ = ["CatalogClient"]
