"""``mdm catalog upgrade`` and ``mdm catalog audit verify`` on a real SQLite catalog."""

from __future__ import annotations

from pathlib import Path

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
