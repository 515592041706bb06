"""The key-store client: per-file keys split k-of-n over independent key servers.

Layer 3 (access): imports only the foundation and pure libraries, never the server side, so a
researcher's laptop can fetch keys without SQLAlchemy or Starlette installed.

>>> from mdm.keystore import KeyStore                                  # doctest: +SKIP
>>> with KeyStore(settings.keystore, tls=settings.tls) as ks:          # doctest: +SKIP
...     ks.register(key_id, key, acl={"fqan:/vo/radiology": ["read"]})
...     key = ks.fetch(key_id)
"""

from __future__ import annotations

from mdm.keystore.acl import AclResult, AclState, write_quorum
from mdm.keystore.servers import ServerProblem
from mdm.keystore.shares import key_check_value, share_at, share_hash
from mdm.keystore.store import (
    Divergence,
    KeyStore,
    RegisterResult,
    RepairResult,
    Retrieval,
    ServerStatus,
    new_key,
)

__all__ = [
    "AclResult",
    "AclState",
    "Divergence",
    "KeyStore",
    "RegisterResult",
    "RepairResult",
    "Retrieval",
    "ServerProblem",
    "ServerStatus",
    "key_check_value",
    "new_key",
    "share_at",
    "share_hash",
    "write_quorum",
]
