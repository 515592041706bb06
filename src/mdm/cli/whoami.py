"""``mdm whoami``: the identity a certificate or proxy presents, as an MDM server would see it.

The same verification as the servers (``mdm.pki.tls.identity_from_chain``): the chain against
the CA directory, then VOMS attributes only if their AC verifies against the vomsdir. So it
answers "why does the server not see my role?" without a server. Credentials are looked up as
grid tools do: ``--proxy``, else ``--cert``/``--key``, else settings ``tls.proxy``/``tls.cert``,
else ``X509_USER_PROXY`` or ``/tmp/x509up_u<uid>``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import click

from mdm.cli import load_settings

if TYPE_CHECKING:
    from cryptography import x509

_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)
_DIR = click.Path(exists=True, file_okay=False, path_type=Path)


@click.command()
@click.option("--proxy", type=_FILE, default=None, help="Proxy file (cert, key, chain).")
@click.option("--cert", type=_FILE, default=None, help="Certificate file (PEM).")
@click.option("--key", type=_FILE, default=None, help="Key of --cert (checked to match).")
@click.option("--ca-dir", type=_DIR, default=None, help="Trusted CAs [default: tls.ca_dir].")
@click.option("--vomsdir", type=_DIR, default=None, help="VOMS trust [default: tls.vomsdir].")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def whoami(
    ctx: click.Context,
    proxy: Path | None,
    cert: Path | None,
    key: Path | None,
    ca_dir: Path | None,
    vomsdir: Path | None,
    as_json: bool,
) -> None:
    """Show the identity (DN, VOMS FQANs) a certificate or proxy presents."""
    from mdm.errors import ConfigError, CredentialError
    from mdm.pki.chain import load_pem_certificates
    from mdm.pki.tls import identity_from_file

    tls = load_settings(ctx).tls
    ca_dir = ca_dir or tls.ca_dir or _env_path("X509_CERT_DIR")
    vomsdir = vomsdir or tls.vomsdir or _env_path("X509_VOMS_DIR")
    if ca_dir is None:
        raise ConfigError("no CA directory: give --ca-dir or set tls.ca_dir", key="tls.ca_dir")
    source = proxy or cert
    if source is None:
        source = tls.proxy or tls.cert or _env_path("X509_USER_PROXY")
        if source is None:
            default = Path(f"/tmp/x509up_u{os.getuid()}")  # noqa: S108 - the grid's own default
            source = default if default.exists() else None
    if source is None:
        raise ConfigError("no credential: give --proxy or --cert/--key", key="tls.proxy")
    if key is not None:
        _check_key(load_pem_certificates(Path(source).read_bytes())[0], key)
    try:
        who = identity_from_file(source, ca_dir, vomsdir)
    except CredentialError as exc:
        if as_json:
            click.echo(json.dumps({"verified": False, "error": exc.message}))
            ctx.exit(1)
        raise
    info = {
        "verified": True,
        "dn": who.dn,
        "issuer": who.issuer,
        "proxy": who.is_proxy,
        "leaf": who.attributes.get("leaf_dn", who.dn),
        "vo": who.attributes.get("vo"),
        "fqans": list(who.fqans),
        "voms_error": who.attributes.get("voms_error"),
        "voms_server": who.attributes.get("voms_server"),
        "voms_not_after": who.attributes.get("voms_not_after"),
    }
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    click.echo(f"dn:      {who.dn}")
    click.echo(f"issuer:  {who.issuer}")
    click.echo(
        f"proxy:   {'yes' if who.is_proxy else 'no'}"
        + (f" ({info['leaf']})" if who.is_proxy else "")
    )
    if who.fqans:
        click.echo(f"vo:      {info['vo']} (AC verified, signed by {info['voms_server']})")
        click.echo(f"until:   {info['voms_not_after']}")
        for fqan in who.fqans:
            click.echo(f"fqan:    {fqan}")
    elif info["voms_error"]:
        click.echo(f"voms:    attributes NOT accepted: {info['voms_error']}")
    else:
        click.echo("voms:    no VOMS attributes")


def _env_path(name: str) -> Path | None:
    # The CLI is the edge: reading the grid's standard variables here is allowed (STYLE C5).
    value = os.environ.get(name)
    return Path(value) if value else None


def _check_key(cert: x509.Certificate, key_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    from mdm.errors import CredentialError

    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), None)
    except (ValueError, TypeError) as exc:
        raise CredentialError(f"cannot read key {key_path}: {exc}", reason="bad key") from exc
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    enc = serialization.Encoding.DER
    if key.public_key().public_bytes(enc, pub) != cert.public_key().public_bytes(enc, pub):
        raise CredentialError(
            f"{key_path} is not the key of the certificate", reason="key mismatch"
        )
