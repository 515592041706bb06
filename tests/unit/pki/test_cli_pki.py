"""``mdm pki`` and ``mdm whoami`` in-process: the commands a demo or a site admin types."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from mdm.cli import cli


def _run(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_pki_commands_build_a_usable_site(tmp_path: Path) -> None:
    site = tmp_path / "pki"
    assert "CA: /DC=org/DC=mdmtest/CN=MDM Test CA" in _run("pki", "init", str(site))
    assert "host: /DC=org/DC=mdmtest/CN=localhost" in _run("pki", "host", str(site))
    out = _run("pki", "user", str(site), "--cn", "Alice Doctor", "--o", "Hospital")
    assert "user: /DC=org/DC=mdmtest/O=Hospital/CN=Alice Doctor" in out
    assert "voms.localhost.lsc" in _run("pki", "voms", str(site), "--vo", "mdm")
    assert (site / "vomsdir" / "mdm" / "voms.localhost.lsc").exists()
    user = site / "users" / "alice-doctor"
    proxy = tmp_path / "proxy.pem"
    _run("pki", "proxy", "--cert", f"{user}.pem", "--key", f"{user}.key", "--out", str(proxy))
    info = json.loads(
        _run("whoami", "--json", "--proxy", str(proxy), "--ca-dir", str(site / "certificates"))
    )
    assert info["dn"] == "/DC=org/DC=mdmtest/O=Hospital/CN=Alice Doctor"
    assert info["proxy"] is True
    assert info["fqans"] == []
    # --key is checked against the certificate
    args = ["whoami", "--cert", f"{user}.pem", "--ca-dir", str(site / "certificates")]
    assert "CN=Alice Doctor" in _run(*args, "--key", f"{user}.key")
    result = CliRunner().invoke(cli, [*args, "--key", str(site / "hosts" / "localhost.key")])
    assert result.exit_code != 0
    assert "is not the key of the certificate" in str(result.exception)


def test_pki_init_twice_is_refused(tmp_path: Path) -> None:
    _run("pki", "init", str(tmp_path / "pki"))
    result = CliRunner().invoke(cli, ["pki", "init", str(tmp_path / "pki")])
    assert result.exit_code != 0
    assert "already holds a CA" in str(result.exception)
