"""``mdm keyserver init`` and ``mdm keyserver audit verify`` (click runner, real files)."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from mdm.cli import cli


def test_init_then_verify_then_refuse_overwrite(tmp_path: Path) -> None:
    cfg = tmp_path / "ks.toml"
    cfg.write_text(
        '[keyserver]\nindex = 3\nmaster_key_file = "master.key"\n'
        f'database_url = "sqlite:///{tmp_path / "keys.db"}"\n'
    )
    runner = CliRunner()
    res = runner.invoke(cli, ["--settings", str(cfg), "keyserver", "init"])
    assert res.exit_code == 0, res.output
    assert ((tmp_path / "master.key").stat().st_mode & 0o777) == 0o600
    assert (tmp_path / "keys.db").exists()
    res = runner.invoke(cli, ["--settings", str(cfg), "keyserver", "audit", "verify", "--json"])
    assert res.exit_code == 0, res.output
    assert '"records": 0' in res.output
    res = runner.invoke(cli, ["--settings", str(cfg), "keyserver", "init"])
    assert res.exit_code != 0
    assert "already exists" in str(res.exception)
