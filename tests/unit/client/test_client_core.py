"""The pure parts of ``mdm.client``: import hygiene, principals, levels, settings files."""

from __future__ import annotations

import subprocess
import sys
import tomllib

import pytest

from mdm.client.access import catalog_rights as _catalog_rights
from mdm.client.access import principal, study_path
from mdm.errors import UsageError


def test_client_imports_no_server_side_code() -> None:
    code = (
        "import sys, mdm.client\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('starlette', 'sqlalchemy', 'uvicorn', 'alembic') or m.startswith("
        "('mdm.catalog', 'mdm.servers', 'mdm.keyserver.', 'mdm.workers', 'mdm.demo')))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("/DC=org/DC=x/CN=Ann", "dn:/DC=org/DC=x/CN=Ann"),
        ("/mdm/research", "fqan:/mdm/research"),
        ("/mdm/research/Role=NULL/Capability=NULL", "fqan:/mdm/research"),
        ("dn:/DC=org/CN=Bob", "dn:/DC=org/CN=Bob"),
        ("fqan:/mdm/Role=physician", "fqan:/mdm/Role=physician"),
    ],
)
def test_principal_accepts_bare_dns_and_fqans(text: str, expected: str) -> None:
    assert principal(text) == expected


def test_study_path_refuses_anything_but_a_study() -> None:
    assert study_path("2.25.1") == "/dicom/2.25.1"
    assert study_path("/dicom/2.25.1") == "/dicom/2.25.1"
    with pytest.raises(UsageError):
        study_path("/dicom/2.25.1/2.25.2")


def test_levels_map_to_catalog_rights() -> None:
    # grant N gives every level up to N; revoke N takes N and everything above
    assert _catalog_rights(1, grant=True) == {"list", "read"}
    assert _catalog_rights(2, grant=True) == {"list", "read", "decrypt"}
    assert _catalog_rights(3, grant=True) == {"list", "read", "decrypt", "identity"}
    assert _catalog_rights(1, grant=False) == {"list", "read", "decrypt", "identity"}
    assert _catalog_rights(2, grant=False) == {"decrypt", "identity"}
    assert _catalog_rights(3, grant=False) == {"identity"}


def test_init_template_lists_every_setting_and_loads() -> None:
    from mdm.cli.site import settings_template
    from mdm.settings import Settings

    text = settings_template()
    assert tomllib.loads(text) == {s: {} for s in tomllib.loads(text)}  # all commented out
    for section in ("tls", "catalog", "storage", "keystore", "keyserver", "dicom", "anonymize"):
        assert f"[{section}]" in text
    assert "# threshold = 3" in text
    uncommented = text.replace("# threshold = 3", "threshold = 4").replace(
        "# servers = []", 'servers = ["https://a", "https://b", "https://c", "https://d"]'
    )
    assert Settings.from_mapping(tomllib.loads(uncommented)).keystore.threshold == 4


def test_toml_writer_round_trips() -> None:
    from mdm.demo.toml import dumps

    doc = {
        "tls": {"cert": 'C:\\a "b"', "ca_dir": "/x"},
        "keystore": {"servers": ["https://a:1", "https://b:2"], "threshold": 3},
        "dicom": {"pacs": {"hospital": {"aet": "ORTHANC", "port": 4242}}},
        "flag": True,
    }
    assert tomllib.loads(dumps(doc)) == doc
