"""Client of the catalog service: QIDO-RS search, file catalog, identity vault, staging.

Built on ``httpx.Client`` with an injectable ``transport`` (STYLE C11): production uses mutual
TLS (``from_settings``: the CA directory and the user's proxy or certificate from
``settings.tls``), unit tests an ``httpx.MockTransport`` or an in-process ASGI transport. Server
errors arrive as problem+json and are raised as the very same ``mdm.errors`` class
(``from_problem``); network failures raise ``TransportError`` with the httpx error as cause.

This module imports neither SQLAlchemy nor Starlette: a researcher's laptop needs only httpx.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import httpx

from mdm.client._http import ServiceClient
from mdm.errors import ConfigError, TransportError

Params = Mapping[str, str] | Sequence[tuple[str, str]]


class CatalogClient(ServiceClient):
    """One catalog service. Use as a context manager, or call ``close()``."""

    service = "catalog"
    url_setting = "catalog.url"

    # -------------------------------------------------------------------------- transport

    def _request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise TransportError(f"catalog {method} {path}: {exc}") from exc
        self._raise_for(response, method, path)
        return response

    def _json(self, method: str, path: str, **kw: Any) -> Any:
        response = self._request(method, path, **kw)
        return response.json() if response.content else None

    # ------------------------------------------------------------------------------ QIDO-RS

    def search_studies(self, params: Params = ()) -> list[dict[str, Any]]:
        """QIDO-RS ``/studies``: DICOM JSON datasets (``params`` as in PS3.18 §8.3.4)."""
        return list(self._json("GET", "/studies", params=_pairs(params)))

    def search_series(self, study: str | None = None, params: Params = ()) -> list[dict[str, Any]]:
        path = f"/studies/{study}/series" if study else "/series"
        return list(self._json("GET", path, params=_pairs(params)))

    def search_instances(
        self, study: str | None = None, series: str | None = None, params: Params = ()
    ) -> list[dict[str, Any]]:
        if series and not study:
            raise ConfigError("give the study UID with the series UID")
        path = "/instances"
        if study:
            path = (
                f"/studies/{study}/series/{series}/instances"
                if series
                else f"/studies/{study}/instances"
            )
        return list(self._json("GET", path, params=_pairs(params)))

    # ------------------------------------------------------------------------- file catalog

    def ls(
        self, path: str = "/dicom", *, limit: int = 1000, offset: int = 0
    ) -> list[dict[str, Any]]:
        data = self._json("GET", "/files", params={"path": path, "limit": limit, "offset": offset})
        return list(data["entries"])

    def stat(self, path_or_guid: str) -> dict[str, Any]:
        return dict(self._json("GET", "/files/stat", params={"path": path_or_guid}))

    def register(self, registration: Mapping[str, Any]) -> dict[str, Any]:
        """Register one instance (see ``mdm.catalog.registration`` for the body)."""
        return dict(self._json("POST", "/files", json=dict(registration)))

    def register_many(self, registrations: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Register up to 1000 instances in one transaction (all or nothing)."""
        body = {"registrations": [dict(r) for r in registrations]}
        return list(self._json("POST", "/files/batch", json=body)["results"])

    def set_content(self, path: str, **info: Any) -> dict[str, Any]:
        """Size, adler32, sha256 and key_id of a file after its recall."""
        return dict(self._json("PUT", "/files/content", json={"path": path, **info}))

    def replicas(self, path: str) -> list[dict[str, Any]]:
        return list(self._json("GET", "/files/replicas", params={"path": path})["replicas"])

    def add_replica(self, path: str, se: str, url: str, state: str, **extra: Any) -> dict[str, Any]:
        body = {"path": path, "se": se, "url": url, "state": state, **extra}
        return dict(self._json("POST", "/files/replicas", json=body))

    def remove_replica(self, path: str, se: str) -> None:
        self._request("DELETE", "/files/replicas", params={"path": path, "se": se})

    def get_acl(self, path: str = "/dicom") -> dict[str, Any]:
        return dict(self._json("GET", "/acl", params={"path": path}))

    def set_acl(self, path: str, entries: Mapping[str, Iterable[str]]) -> dict[str, Any]:
        body = {"path": path, "entries": {k: list(v) for k, v in entries.items()}}
        return dict(self._json("PUT", "/acl", json=body))

    def check_access(self, path: str, right: str, dn: str, fqans: Sequence[str] = ()) -> bool:
        """Services only: may the identity (dn, fqans) use *right* on *path*?"""
        body = {"path": path, "right": right, "identity": {"dn": dn, "fqans": list(fqans)}}
        return bool(self._json("POST", "/acl/check", json=body)["allowed"])

    # ---------------------------------------------------------------------- identity vault

    def study_identity(self, study: str, *, reason: str) -> dict[str, Any]:
        """Original identity behind a pseudonymous study (level 3; audited)."""
        return dict(self._json("GET", f"/identity/studies/{study}", params={"reason": reason}))

    def find_studies(
        self, *, patient_id: str | None = None, accession_number: str | None = None, reason: str
    ) -> list[dict[str, str]]:
        params = {"reason": reason}
        if patient_id:
            params["PatientID"] = patient_id
        if accession_number:
            params["AccessionNumber"] = accession_number
        return list(self._json("GET", "/identity/studies", params=params)["studies"])

    def original_uids(self, uids: Sequence[str], *, reason: str = "recall") -> dict[str, str]:
        body = {"uids": list(uids), "reason": reason}
        return dict(self._json("POST", "/identity/uids", json=body)["uids"])

    # ------------------------------------------------------------------------------ staging

    def stage(
        self, paths: Sequence[str], *, on_behalf_of: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"paths": list(paths)}
        if on_behalf_of is not None:
            body["on_behalf_of"] = dict(on_behalf_of)
        return dict(self._json("POST", "/staging/requests", json=body))

    def staging_request(self, request_id: str) -> dict[str, Any]:
        return dict(self._json("GET", f"/staging/requests/{request_id}"))

    def cancel(self, request_id: str, paths: Sequence[str] | None = None) -> dict[str, Any]:
        body = {"paths": list(paths)} if paths else {}
        return dict(self._json("POST", f"/staging/requests/{request_id}/cancel", json=body))

    def claim(
        self, worker: str, *, limit: int = 50, lease: float | None = None
    ) -> list[dict[str, Any]]:
        body: dict[str, Any] = {"worker": worker, "limit": limit}
        if lease is not None:
            body["lease"] = lease
        return list(self._json("POST", "/staging/claim", json=body)["files"])

    def extend(self, worker: str, ids: Sequence[int], lease: float | None = None) -> None:
        body: dict[str, Any] = {"worker": worker, "ids": list(ids)}
        if lease is not None:
            body["lease"] = lease
        self._request("POST", "/staging/extend", json=body)

    def complete(self, worker: str, file_id: int) -> dict[str, Any]:
        return dict(
            self._json("POST", f"/staging/files/{file_id}/complete", json={"worker": worker})
        )

    def fail(self, worker: str, file_id: int, reason: str) -> dict[str, Any]:
        body = {"worker": worker, "reason": reason}
        return dict(self._json("POST", f"/staging/files/{file_id}/fail", json=body))

    def verify_audit(self) -> dict[str, Any]:
        return dict(self._json("GET", "/audit/verify"))


def _pairs(params: Params) -> list[tuple[str, str]]:
    items = params.items() if isinstance(params, Mapping) else params
    return [(str(k), str(v)) for k, v in items]
