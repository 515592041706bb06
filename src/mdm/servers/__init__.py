"""Processes that listen (layer 4): the TLS runner and what every MDM Starlette app shares.

``mdm.servers.run`` serves an ASGI app over mutual TLS with the caller's verified identity in
each request scope; ``mdm.servers.http`` reads it (``identity``, ``require_identity``) and turns
``MDMError`` into problem+json (``EXCEPTION_HANDLERS``).
"""

from __future__ import annotations

from mdm.servers.http import (
    CREDENTIAL_ERROR_KEY,
    EXCEPTION_HANDLERS,
    PROBLEM_JSON,
    ProblemResponse,
    credential_error,
    identity,
    problem_response,
    require_identity,
)
from mdm.servers.run import ServerThread, build_server, running_server, serve_forever

__all__ = [
    "CREDENTIAL_ERROR_KEY",
    "EXCEPTION_HANDLERS",
    "PROBLEM_JSON",
    "ProblemResponse",
    "ServerThread",
    "build_server",
    "credential_error",
    "identity",
    "problem_response",
    "require_identity",
    "running_server",
    "serve_forever",
]
