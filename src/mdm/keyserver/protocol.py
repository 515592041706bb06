"""Key-server protocol v1 as data: version, limits and the OpenAPI 3.1 document.

Kept next to the state it describes (and free of any web framework) so that the document can
be checked in tests and rendered into docs/keyserver-protocol.md without starting a server.
"""

from __future__ import annotations

from typing import Any

from mdm import __version__

PROTOCOL = 1
MAX_FETCH_KEYS = 100

_PROBLEM = {
    "description": "error (RFC 9457 problem+json; `type` is the MDM error class)",
    "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
}
_KEY = {
    "name": "key_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"},
}
_ERRORS = {"401": _PROBLEM, "403": _PROBLEM, "404": _PROBLEM, "413": _PROBLEM, "429": _PROBLEM}


def _json(ref: str) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}}


def _op(
    summary: str,
    ok: str,
    response: str | None,
    body: str | None = None,
    params: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "parameters": params if params is not None else [_KEY],
    }
    ok_resp: dict[str, Any] = {"description": "success"}
    if response:
        ok_resp.update(_json(response))
    op["responses"] = {ok: ok_resp, **_ERRORS}
    if body:
        op["requestBody"] = {"required": True, **_json(body)}
    return op


def openapi_document() -> dict[str, Any]:
    acl = {
        "type": "object",
        "properties": {
            "version": {"type": "integer"},
            "prev": {"type": "string"},
            "digest": {"type": "string"},
            "entries": {
                "type": "object",
                "additionalProperties": {"type": "array", "items": {"enum": ["read", "admin"]}},
            },
        },
    }
    view: dict[str, Any] = {
        "type": "object",
        "properties": {
            "key_id": {"type": "string"},
            "slot": {"type": "integer"},
            "share": {"type": "string", "format": "byte", "description": "fetch only: y || x"},
            "share_hashes": {"type": "array", "items": {"type": "string"}},
            "k": {"type": "integer"},
            "n": {"type": "integer"},
            "kcv": {"type": "string"},
            "owner": {"type": "string"},
            "acl": {"$ref": "#/components/schemas/Acl"},
        },
    }
    upload = {
        "type": "object",
        "required": ["slot", "share", "share_hashes", "k", "n", "kcv"],
        "properties": {
            **{k: v for k, v in view["properties"].items() if k not in ("key_id", "owner")},
            "repair": {"type": "boolean"},
            "owner": {"type": "string"},
        },
    }
    acl_put = {
        "type": "object",
        "required": ["if_match", "acl"],
        "properties": {
            "if_match": {
                "type": "object",
                "properties": {"version": {"type": "integer"}, "digest": {"type": "string"}},
            },
            "acl": {"$ref": "#/components/schemas/Acl"},
        },
    }
    problem = {
        "type": "object",
        "properties": {
            "type": {"type": "string"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "context": {"type": "object"},
        },
    }
    fetch = {
        "type": "object",
        "properties": {
            "key_ids": {"type": "array", "items": {"type": "string"}, "maxItems": MAX_FETCH_KEYS}
        },
    }
    register = {
        "type": "object",
        "required": ["keys"],
        "properties": {
            "keys": {
                "type": "array",
                "description": "at most keyserver.max_register_keys items (default 100)",
                "items": {
                    "allOf": [
                        {"$ref": "#/components/schemas/ShareUpload"},
                        {"type": "object", "required": ["key_id"]},
                    ]
                },
            }
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "MDM key server",
            "version": f"{PROTOCOL}.0 (mdm {__version__})",
            "description": "One of n Shamir share custodians; see docs/keyserver-protocol.md. "
            "Every request needs a client certificate (mutual TLS).",
        },
        "paths": {
            "/v1/health": {"get": _op("liveness and slot", "200", None, params=[])},
            "/v1/keys": {
                "get": _op(
                    "list key metadata (server admins)",
                    "200",
                    None,
                    params=[
                        {"name": "after", "in": "query", "schema": {"type": "string"}},
                        {"name": "limit", "in": "query", "schema": {"type": "integer"}},
                    ],
                )
            },
            "/v1/fetch": {
                "post": _op(
                    "fetch several shares, each key checked on its own",
                    "200",
                    None,
                    "FetchMany",
                    params=[],
                )
            },
            "/v1/register": {
                "post": _op(
                    "register many shares in one transaction, each key checked on its own",
                    "200",
                    None,
                    "RegisterMany",
                    params=[],
                )
            },
            "/v1/keys/{key_id}/share": {
                "put": _op(
                    "register (create-only, idempotent) or repair a share",
                    "201",
                    "KeyView",
                    "ShareUpload",
                ),
                "get": _op("fetch this server's share (read right)", "200", "KeyView"),
            },
            "/v1/keys/{key_id}/meta": {"get": _op("key metadata, no share", "200", "KeyView")},
            "/v1/keys/{key_id}/acl": {
                "get": _op("the versioned ACL", "200", None),
                "put": _op("compare-and-swap the ACL (admin right)", "200", None, "AclPut"),
            },
            "/v1/keys/{key_id}": {"delete": _op("destroy the share (admin right)", "204", None)},
        },
        "components": {
            "schemas": {
                "Acl": acl,
                "KeyView": view,
                "ShareUpload": upload,
                "AclPut": acl_put,
                "Problem": problem,
                "FetchMany": fetch,
                "RegisterMany": register,
            }
        },
    }
