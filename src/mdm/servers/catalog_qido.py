"""DICOMweb QIDO-RS search over the metadata catalog (PS3.18 10.6), answered as DICOM JSON.

One handler serves all six QIDO resources: the level (study, series, instance) comes from the
route and the UIDs in the path become fixed filters, so ``/studies/{study}/series`` is exactly
``/series?StudyInstanceUID={study}``. Parsing and matching are ``mdm.catalog.qido`` and
``mdm.catalog.metadata``; the caller's rights filter rows inside the query, so ``limit`` and
``offset`` count only what the caller may see. When the answer was cut at
``catalog.qido_max_results`` the ``Warning`` header says so, as PS3.18 asks.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mdm.catalog import files, metadata, qido
from mdm.catalog.access import Caller
from mdm.servers.catalog_service import CatalogService, RouteDoc, endpoint

#: Media type of QIDO-RS answers (PS3.18 F.2, DICOM JSON Model).
DICOM_JSON = "application/dicom+json"


class DicomJSONResponse(JSONResponse):
    media_type = DICOM_JSON


def search_endpoint(level: qido.Level) -> Callable[[Request], Awaitable[Response]]:
    """The QIDO-RS handler for *level*; study and series UIDs in the path are fixed filters."""

    @endpoint
    async def search(request: Request, svc: CatalogService, caller: Caller) -> Response:
        fixed = {}
        if "study" in request.path_params:
            fixed["StudyInstanceUID"] = files.check_uid(request.path_params["study"], "study UID")
        if "series" in request.path_params:
            fixed["SeriesInstanceUID"] = files.check_uid(
                request.path_params["series"], "series UID"
            )
        query = qido.parse(
            level,
            request.query_params.multi_items(),
            max_limit=svc.settings.qido_max_results,
            fixed=fixed,
        )
        result = await svc.read(
            lambda s: metadata.search(s, caller, query, max_results=svc.settings.qido_max_results)
        )
        headers = {"Warning": ", ".join(result.warnings)} if result.warnings else None
        return DicomJSONResponse(result.matches, headers=headers)

    return search


ROUTES = [
    Route("/studies", search_endpoint("study")),
    Route("/series", search_endpoint("series")),
    Route("/instances", search_endpoint("instance")),
    Route("/studies/{study}/series", search_endpoint("series")),
    Route("/studies/{study}/instances", search_endpoint("instance")),
    Route("/studies/{study}/series/{series}/instances", search_endpoint("instance")),
]

ROUTES_DOC: list[RouteDoc] = [
    ("GET", "/studies", "QIDO-RS search for studies", "list"),
    ("GET", "/series", "QIDO-RS search for series", "list"),
    ("GET", "/instances", "QIDO-RS search for instances", "list"),
    ("GET", "/studies/{study}/series", "QIDO-RS series of a study", "list"),
    ("GET", "/studies/{study}/instances", "QIDO-RS instances of a study", "list"),
    ("GET", "/studies/{study}/series/{series}/instances", "QIDO-RS instances of a series", "list"),
]

__all__ = ["DICOM_JSON", "ROUTES", "ROUTES_DOC", "DicomJSONResponse", "search_endpoint"]
