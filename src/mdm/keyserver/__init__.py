"""One key server's state: wrapped shares, versioned ACLs and the MAC-chained audit log.

Layer 2 (state). The HTTP face is ``mdm.servers.keyserver_app``; the client that talks to the n
servers is ``mdm.keystore`` (which never imports this package). The wire protocol is described
in docs/keyserver-protocol.md.
"""

from __future__ import annotations

from mdm.keyserver.audit import AuditLog, RequestInfo
from mdm.keyserver.db import Database
from mdm.keyserver.masterkey import MasterKey
from mdm.keyserver.policy import AclDocument, Right, ServerPolicy
from mdm.keyserver.service import KeyService, KeyView, ShareUpload, share_hash
from mdm.settings import KeyServerSettings

__all__ = [
    "AclDocument",
    "AuditLog",
    "Database",
    "KeyService",
    "KeyView",
    "MasterKey",
    "RequestInfo",
    "Right",
    "ServerPolicy",
    "ShareUpload",
    "open_service",
    "share_hash",
]


def open_service(settings: KeyServerSettings) -> KeyService:
    """The service of the server described by *settings* (creates the schema if needed)."""
    master = MasterKey.load(settings.master_key_file)
    policy = ServerPolicy(
        admin_dns=settings.admin_dns,
        admin_fqans=settings.admin_fqans,
        creator_dns=settings.creator_dns,
        creator_fqans=settings.creator_fqans,
    )
    db = Database(settings.database_url, fsync_reads=settings.fsync_reads)
    return KeyService(
        db, master, slot=settings.index, policy=policy, max_batch=settings.max_register_keys
    )
