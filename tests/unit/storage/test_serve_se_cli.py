"""``mdm serve se`` refuses to start without mutual TLS or a usable archive, naming why."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from mdm.cli import cli


def test_serve_se_refuses_to_run_without_mutual_tls(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("MDM_SETTINGS", raising=False)
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    result = runner.invoke(cli, ["serve", "se"])
    assert result.exit_code != 0
    assert "mutual TLS" in str(result.exception)
    assert "tls.cert" in str(result.exception)
    assert list(tmp_path.iterdir()) == []  # refused before creating any database or cache


def test_serve_se_names_a_missing_archive(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("MDM_SETTINGS", raising=False)
    monkeypatch.setenv("MDM_TLS__CERT", str(tmp_path / "host.pem"))
    monkeypatch.setenv("MDM_TLS__CA_DIR", str(tmp_path))
    runner = CliRunner()
    result = runner.invoke(cli, ["serve", "se", "--archive-dir", str(tmp_path / "none")])
    assert result.exit_code != 0
    assert "does not exist" in str(result.exception)
