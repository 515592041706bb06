"""``mdm catalog upgrade`` and ``mdm catalog audit verify`` on a real SQLite catalog."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import text

from mdm.catalog import audit
from mdm.catalog.db import CatalogDatabases
from mdm.cli import cli
from mdm.errors import AuditChainBroken


def test_upgrade_then_verify_then_detect_tampering(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/c.db"
    env = {"MDM_CATALOG__DATABASE_URL": url, "MDM_SETTINGS": ""}
    runner = CliRunner()
    result = runner.invoke(cli, ["catalog", "upgrade"], env=env, catch_exceptions=False)
    assert result.exit_code == 0
    assert "catalog schema c0002, vault schema v0001" in result.output
    dbs = CatalogDatabases(url)
    with dbs.vault.session(write=True) as s:
        audit.append(s, actor="dn:/CN=a", action="acl.set", target="/dicom")
        audit.append(s, actor="dn:/CN=a", action="acl.set", target="/dicom/2.25.1")
    result = runner.invoke(cli, ["catalog", "audit", "verify"], env=env, catch_exceptions=False)
    assert "audit log intact: 2 records" in result.output
    with dbs.vault.session(write=True) as s:
        s.execute(text("UPDATE audit_event SET actor = 'dn:/CN=b' WHERE seq = 1"))
    dbs.dispose()
    result = runner.invoke(cli, ["catalog", "audit", "verify"], env=env)
    assert result.exit_code != 0
    assert isinstance(result.exception, AuditChainBroken)


def test_services_refuse_a_schema_older_than_the_code(tmp_path: Path) -> None:
    """After an MDM upgrade that brings a migration, the worker, ``mdm register`` and the
    catalog-backed SE refuse to start on the old schema with a message naming the fix, instead
    of failing on a missing column in the middle of a batch or a request."""
    from mdm.catalog.migrations import require_current, upgrade_engine
    from mdm.errors import ConfigError
    from mdm.servers.se_catalog import CatalogStorage
    from mdm.settings import Settings

    url = f"sqlite:///{tmp_path}/c.db"
    dbs = CatalogDatabases(url)
    with pytest.raises(ConfigError, match="catalog database schema is not created"):
        require_current(dbs)
    upgrade_engine(dbs.catalog.engine, "catalog", "c0001")
    upgrade_engine(dbs.vault.engine, "vault")
    with pytest.raises(
        ConfigError, match=r"at revision c0001; .* needs c0002: run `mdm catalog up"
    ):
        require_current(dbs)
    env = {"MDM_CATALOG__DATABASE_URL": url, "MDM_SETTINGS": "",
           "MDM_STORAGE__CACHE_DIR": str(tmp_path / "cache")}  # fmt: skip
    run = subprocess.run(
        [sys.executable, "-m", "mdm", "worker", "recall", "--once"],
        env={**os.environ, **env}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode != 0
    assert "needs c0002: run `mdm catalog upgrade`" in run.stderr
    assert "Traceback" not in run.stderr
    settings = Settings.from_mapping(
        {"catalog": {"database_url": url}, "storage": {"cache_dir": str(tmp_path / "cache")}}
    )
    with pytest.raises(ConfigError, match="c0001"):
        CatalogStorage(settings)
    result = CliRunner().invoke(cli, ["catalog", "upgrade"], env=env, catch_exceptions=False)
    assert result.exit_code == 0
    require_current(dbs)  # now current: no error
    CatalogStorage(settings).close()
    dbs.dispose()
