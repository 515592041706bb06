"""``mdm demo`` and ``mdm up`` (layer 5): the whole system on loopback, and its story.

* ``grid``: the local grid (test PKI, catalog, n key servers, SE, recall worker, PACS);
* ``pacs``: Orthanc or pynetdicom's qrscp as the hospital's PACS;
* ``hospital``: a synthetic hospital loaded into the PACS and registered;
* ``story``: three users with three access levels, every step checked.
"""

from __future__ import annotations

from mdm.demo.grid import Grid, PartMissing, Person

__all__ = ["Grid", "PartMissing", "Person"]
