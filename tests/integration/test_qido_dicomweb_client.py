"""dicomweb-client, unchanged, against the catalog service over real HTTPS with mutual TLS.

The server is ``create_app`` run by ``mdm.servers.run`` (uvicorn, verified client chains, VOMS
attributes); the client is dicomweb-client's ``DICOMwebClient`` on a ``requests`` session that
presents a proxy made by the real ``voms-proxy-fake`` and trusts the test CA. Its answers must
parse as DICOM JSON with pydicom.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient

from mdm.catalog import access
from mdm.servers.catalog_app import create_app
from mdm.servers.run import ServerThread
from mdm.settings import CatalogSettings, Settings
from tests.helpers.pki import PkiFiles, build_test_pki
from tests.helpers.procs import wait_until
from tests.unit.catalog.helpers import S1, S1_MR, S2, S3, S4, make_dbs, seed


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PkiFiles:
    return build_test_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def server(pki: PkiFiles, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    url = f"sqlite:///{tmp_path_factory.mktemp('qido-http')}/catalog.db"
    dbs = make_dbs(url)
    seed(dbs)
    with dbs.catalog.session(write=True) as s:  # Alice's VOMS group may list everything
        access.set_acl(s, "/dicom", {"fqan:/mdm/radiology": ["list"]})
    settings = Settings(catalog=CatalogSettings(database_url=url, qido_max_results=3))
    app = create_app(settings, databases=dbs)
    with ServerThread(app, tls=pki.server_tls()) as srv:
        yield srv
        # Close keep-alive connections before the server stops. Responses kept alive by the
        # reference cycles of caught HTTPErrors hold theirs: collect them first.
        gc.collect()
        for session in SESSIONS:
            session.close()
        # ...and let the server see them closed, or its loop ends with transports still open
        wait_until(lambda: not srv.server.server_state.connections, timeout=10)
    dbs.dispose()


SESSIONS: list[requests.Session] = []


def client(
    server: ServerThread, pki: PkiFiles, credential: str | tuple[str, str] | None
) -> DICOMwebClient:
    session = requests.Session()
    # REQUESTS_CA_BUNDLE in the environment would silently replace session.verify.
    session.trust_env = False
    session.verify = str(pki.ca_dir)  # a hashed CA directory, as in /etc/grid-security
    session.cert = credential
    SESSIONS.append(session)
    return DICOMwebClient(url=server.url, session=session)


@pytest.fixture(scope="module")
def alice(server: ServerThread, pki: PkiFiles) -> DICOMwebClient:
    return client(server, pki, str(pki.proxies["voms"]))


def uids(results: list[dict[str, dict]], tag: str = "0020000D") -> list[str]:
    return sorted(pydicom.Dataset.from_json(r)[tag].value for r in results)


def test_search_for_studies(alice: DICOMwebClient) -> None:
    assert uids(alice.search_for_studies(search_filters={"PatientID": "PSN-001"})) == [S1, S3]
    found = alice.search_for_studies(
        search_filters={"StudyDate": "20200101-20201231", "ModalitiesInStudy": "CT"}
    )
    assert uids(found) == [S2]
    ds = pydicom.Dataset.from_json(found[0])
    assert ds.PatientName == "Roe^Richard"
    assert ds.NumberOfStudyRelatedInstances == 2


def test_search_for_studies_pages_with_limit_offset(alice: DICOMwebClient) -> None:
    # the server answers at most 3 per request; get_remaining follows with offset
    assert uids(alice.search_for_studies(get_remaining=True)) == [S1, S2, S3, S4]
    assert len(alice.search_for_studies(limit=2)) == 2
    assert uids(alice.search_for_studies(limit=2, offset=3)) == [S4]


def test_search_for_series_and_instances(alice: DICOMwebClient) -> None:
    series = alice.search_for_series(study_instance_uid=S1, fields=["00180050"])
    assert uids(series, "0020000E") == [S1_MR]
    assert pydicom.Dataset.from_json(series[0]).SliceThickness == 1.5
    assert uids(alice.search_for_series(search_filters={"Modality": "SR"}), "0020000D") == [S2]
    instances = alice.search_for_instances(study_instance_uid=S1, series_instance_uid=S1_MR)
    assert uids(instances, "00080018") == ["2.25.3011", "2.25.3012"]
    found = alice.search_for_instances(
        search_filters={"PatientName": "doe*", "InstanceNumber": "2"}
    )
    assert uids(found, "00080018") == ["2.25.3012"]
    assert alice.search_for_studies(
        fuzzymatching=True, search_filters={"PatientName": "ROE^RICHARD"}
    )


def test_callers_without_rights_or_certificates(server: ServerThread, pki: PkiFiles) -> None:
    bob = client(server, pki, (str(pki.bob.cert), str(pki.bob.key)))
    assert bob.search_for_studies() == []  # authenticated, but no list right anywhere
    anonymous = client(server, pki, None)
    with pytest.raises(requests.HTTPError) as info:
        anonymous.search_for_studies()
    assert info.value.response.status_code == 401
    assert info.value.response.json()["type"] == "AuthenticationRequired"


def test_bad_query_is_a_400_problem(alice: DICOMwebClient) -> None:
    with pytest.raises(requests.HTTPError) as info:
        alice.search_for_studies(search_filters={"StudyInstanceUID": "1.2.*"})
    assert info.value.response.status_code == 400
    assert info.value.response.headers["content-type"] == "application/problem+json"


def test_the_catalog_client_speaks_mutual_tls_too(
    server: ServerThread, pki: PkiFiles, tmp_path: Path
) -> None:
    from mdm.client import CatalogClient
    from mdm.settings import TlsSettings

    settings = Settings(
        tls=TlsSettings(ca_dir=pki.ca_dir, proxy=pki.proxies["voms"]),
        catalog=CatalogSettings(url=server.url),
    )
    with CatalogClient.from_settings(settings) as c:
        assert [e["name"] for e in c.ls("/dicom")] == [S1, S2, S3, S4]
        assert c.stat(f"/dicom/{S1}")["rights"] == ["list"]


def test_the_mdm_commands(server: ServerThread, pki: PkiFiles) -> None:
    from click.testing import CliRunner

    from mdm.cli import cli

    env = {
        "MDM_CATALOG__URL": server.url,
        "MDM_TLS__CA_DIR": str(pki.ca_dir),
        "MDM_TLS__PROXY": str(pki.proxies["voms"]),
        "MDM_SETTINGS": "",
    }
    runner = CliRunner()

    def mdm(*args: str) -> str:
        result = runner.invoke(cli, list(args), env=env, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    assert mdm("ls").split() == [f"{u}/" for u in (S1, S2, S3, S4)]
    assert f"/dicom/{S1}/{S1_MR}/2.25.3011" in mdm("stat", f"/dicom/{S1}/{S1_MR}/2.25.3011")
    out = mdm("find", "--PatientID", "PSN-001", "-q", "StudyDate=20200101-20201231")
    assert S1 in out
    assert S3 not in out
    import json

    found = json.loads(mdm("find", "series", "--study", S2, "--Modality", "CT", "--json"))
    assert [m["00080060"]["Value"] for m in found] == [["CT"]]
    assert "fqan:/mdm/radiology = list" in mdm("acl", "/dicom")
    from mdm.errors import PermissionDenied

    with pytest.raises(PermissionDenied):  # Alice holds no identity right
        runner.invoke(cli, ["identity", S1, "--reason", "test"], env=env, catch_exceptions=False)
