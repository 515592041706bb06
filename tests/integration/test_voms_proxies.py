"""VOMS proxies made by the real ``voms-proxy-fake``: accepted only when the AC verifies.

Every refusal must say why (``Identity.attributes["voms_error"]`` or ``CredentialError``), and
an FQAN from an AC that did not verify must never reach the Identity.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from mdm.cli import cli
from mdm.errors import CredentialError
from mdm.pki.chain import TrustStore, load_pem_certificates
from mdm.pki.tls import identity_from_file
from mdm.pki.voms import find_acs, verify_ac
from tests.helpers.pki import ALICE_DN, VOMS_FQANS, PkiFiles, shared_test_pki, voms_proxy_fake
from tests.helpers.tools import require_tool


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PkiFiles:
    return shared_test_pki(tmp_path_factory)


def _who(pki: PkiFiles, name: str):  # type: ignore[no-untyped-def]
    return identity_from_file(pki.proxies[name], pki.ca_dir, pki.vomsdir)


def test_voms_proxy_gives_dn_and_all_fqans(pki: PkiFiles) -> None:
    who = _who(pki, "voms")
    assert who.dn == ALICE_DN
    assert who.fqans == VOMS_FQANS
    assert who.is_proxy
    assert who.vo == "mdm"
    assert who.attributes["voms_uri"] == "voms.localhost:15000"
    assert who.attributes["voms_server"] == pki.voms.dn
    assert "voms_error" not in who.attributes


@pytest.mark.parametrize("name", ["plain", "plain_py"])
def test_plain_proxy_gives_the_dn_and_no_fqans(pki: PkiFiles, name: str) -> None:
    who = _who(pki, name)
    assert who.dn == ALICE_DN
    assert who.is_proxy
    assert who.fqans == ()
    assert "voms_error" not in who.attributes


def test_plain_certificate(pki: PkiFiles) -> None:
    who = identity_from_file(pki.alice.cert, pki.ca_dir, pki.vomsdir)
    assert (who.dn, who.is_proxy, who.fqans) == (ALICE_DN, False, ())
    assert who.issuer == "/DC=org/DC=mdmtest/CN=MDM Test CA"


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("rogue_voms", "VOMS server certificate not trusted (untrusted issuer)"),
        (
            "evil_voms",
            "CN=evil.localhost (issuer /DC=org/DC=mdmtest/CN=MDM Test CA) does not match "
            "mdm/voms.localhost.lsc",
        ),
        ("expired_ac", "AC expired or not yet valid"),
        ("unknown_vo", "unknown VO or VOMS server: no othervo/voms.localhost.lsc"),
    ],
)
def test_unverifiable_ac_gives_no_fqans_and_a_reason(pki: PkiFiles, name: str, reason: str) -> None:
    who = _who(pki, name)
    assert who.dn == ALICE_DN  # the person is still known: DN-based ACLs keep working
    assert who.fqans == ()
    assert reason in who.attributes["voms_error"]
    assert "/mdm/Role=admin" not in repr(who)


def test_proxy_of_an_untrusted_ca_is_refused(pki: PkiFiles) -> None:
    with pytest.raises(
        CredentialError, match=r"Rogue CA of .*CN=Mallory is not a trusted CA"
    ) as info:
        _who(pki, "untrusted")
    assert info.value.context["reason"] == "untrusted issuer"


def test_self_signed_client_is_refused(pki: PkiFiles) -> None:
    with pytest.raises(CredentialError, match="not a trusted CA"):
        identity_from_file(pki.self_signed.cert, pki.ca_dir, pki.vomsdir)


def test_no_vomsdir_means_no_fqans(pki: PkiFiles) -> None:
    who = identity_from_file(pki.proxies["voms"], pki.ca_dir, None)
    assert who.fqans == ()
    assert "no vomsdir" in who.attributes["voms_error"]


def test_ac_is_bound_to_its_holder(pki: PkiFiles) -> None:
    # Alice's AC presented with Bob's certificate (an AC copied into another proxy) is refused.
    ac = find_acs(load_pem_certificates(pki.proxies["voms"].read_bytes()))[0]
    bob = load_pem_certificates(pki.bob.cert.read_bytes())[0]
    trust = TrustStore.load(pki.ca_dir)
    with pytest.raises(CredentialError, match="holder is not the presented"):
        verify_ac(ac, bob, trust, pki.vomsdir, datetime.now(UTC))


def test_null_role_and_capability_are_normalised(pki: PkiFiles, tmp_path: Path) -> None:
    tool = require_tool("voms-proxy-fake", package="voms-clients")
    out = voms_proxy_fake(
        tool,
        pki.alice,
        tmp_path / "null.pem",
        pki.ca_dir,
        voms=pki.voms,
        fqans=("/mdm/Role=NULL/Capability=NULL", "/mdm/radiology/Role=NULL/Capability=NULL"),
    )
    who = identity_from_file(out, pki.ca_dir, pki.vomsdir)
    assert who.fqans == ("/mdm", "/mdm/radiology")


def test_a_vo_server_cannot_assert_another_vos_groups(pki: PkiFiles, tmp_path: Path) -> None:
    tool = require_tool("voms-proxy-fake", package="voms-clients")
    out = voms_proxy_fake(
        tool,
        pki.alice,
        tmp_path / "cross.pem",
        pki.ca_dir,
        voms=pki.voms,
        fqans=("/mdm", "/othervo/admins"),
    )
    who = identity_from_file(out, pki.ca_dir, pki.vomsdir)
    assert who.fqans == ()
    assert "outside the AC's VO mdm" in who.attributes["voms_error"]


def test_whoami_shows_verified_fqans(pki: PkiFiles) -> None:
    args = ["whoami", "--proxy", str(pki.proxies["voms"]), "--ca-dir", str(pki.ca_dir)]
    result = CliRunner().invoke(cli, [*args, "--vomsdir", str(pki.vomsdir)])
    assert result.exit_code == 0, result.output
    assert f"dn:      {ALICE_DN}" in result.output
    assert "fqan:    /mdm/radiology/Role=physician" in result.output


def test_whoami_json_says_why_fqans_were_refused(pki: PkiFiles) -> None:
    args = ["whoami", "--json", "--proxy", str(pki.proxies["rogue_voms"])]
    args += ["--ca-dir", str(pki.ca_dir), "--vomsdir", str(pki.vomsdir)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["dn"] == ALICE_DN
    assert info["proxy"] is True
    assert info["fqans"] == []
    assert "not trusted" in info["voms_error"]


def test_whoami_refuses_an_untrusted_proxy(pki: PkiFiles) -> None:
    args = [
        "whoami",
        "--json",
        "--proxy",
        str(pki.proxies["untrusted"]),
        "--ca-dir",
        str(pki.ca_dir),
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1
    assert json.loads(result.output)["verified"] is False
