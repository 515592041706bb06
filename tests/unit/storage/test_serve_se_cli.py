"""``mdm serve se`` refuses to start without a usable archive, naming the setting."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from mdm.cli import cli


def test_serve_se_needs_an_archive(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("MDM_SETTINGS", raising=False)
    monkeypatch.delenv("MDM_STORAGE__ARCHIVE_DIR", raising=False)
    runner = CliRunner()
    result = runner.invoke(cli, ["serve", "se"])
    assert result.exit_code != 0
    assert "storage.archive_dir" in str(result.exception)
    result = runner.invoke(cli, ["serve", "se", "--archive-dir", str(tmp_path / "none")])
    assert result.exit_code != 0
    assert "does not exist" in str(result.exception)
