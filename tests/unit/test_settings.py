from __future__ import annotations

from pathlib import Path

import pytest

from mdm.errors import ConfigError
from mdm.settings import Secret, Settings


def test_defaults_are_safe_loopback() -> None:
    s = Settings.load(environ={})
    assert s.keyserver.host == "127.0.0.1"
    assert s.catalog.host == "127.0.0.1"
    assert s.keystore.threshold == 3


def test_precedence_file_then_environment_then_overrides(tmp_path: Path) -> None:
    f = tmp_path / "mdm.toml"
    f.write_text(
        '[keystore]\nthreshold = 2\nservers = ["https://a", "https://b"]\n'
        '[tls]\ncert = "certs/me.pem"\n'
    )
    s = Settings.load(f, environ={})
    assert s.keystore.threshold == 2
    assert s.keystore.servers == ("https://a", "https://b")
    assert s.tls.cert == tmp_path / "certs" / "me.pem"  # relative to the file
    s = Settings.load(f, environ={"MDM_KEYSTORE__THRESHOLD": "4", "MDM_KEYSTORE__SERVERS": "x,y,z"})
    assert s.keystore.threshold == 4
    assert s.keystore.servers == ("x", "y", "z")
    s = Settings.load(
        f, environ={"MDM_KEYSTORE__THRESHOLD": "4"}, overrides={"keystore": {"threshold": 5}}
    )
    assert s.keystore.threshold == 5


def test_settings_file_named_by_environment(tmp_path: Path) -> None:
    f = tmp_path / "site.toml"
    f.write_text("[storage]\nname = 'SITE-A'\n")
    assert Settings.load(environ={"MDM_SETTINGS": str(f)}).storage.name == "SITE-A"


def test_pacs_table_of_tables(tmp_path: Path) -> None:
    f = tmp_path / "mdm.toml"
    f.write_text('[dicom.pacs.main]\naet = "ORTHANC"\nport = 4242\nmethod = "c-move"\n')
    s = Settings.load(f, environ={})
    assert s.dicom.pacs["main"].method == "c-move"
    assert s.dicom.pacs["main"].port == 4242


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[keystore]\nthreshold = 'three'\n", "keystore.threshold"),
        ("[keystore]\nthresold = 3\n", "thresold"),
        ("[nosuch]\na = 1\n", "nosuch"),
        ("[keystore\n", "not valid TOML"),
    ],
)
def test_bad_settings_name_the_key(tmp_path: Path, text: str, needle: str) -> None:
    f = tmp_path / "mdm.toml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=needle):
        Settings.load(f, environ={})


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        Settings.load(tmp_path / "nope.toml", environ={})


def test_secret_never_prints() -> None:
    s = Secret("hunter2")
    assert "hunter2" not in repr(s)
    assert "hunter2" not in str(s)
    assert "hunter2" not in f"{s}"
    assert s.reveal() == "hunter2"
    assert s == Secret("hunter2")
    assert s != Secret("hunter3")
