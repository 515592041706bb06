"""``mdm pki``: a test/demo PKI (CA, host, user and VOMS server certificates, trust dirs).

Everything is made with ``cryptography``'s builders (``mdm.pki.ca``), never by shelling out to
openssl, and laid out as a grid site expects (``certificates/`` with hashed links, ``vomsdir/``),
so that gfal2, davix and voms-proxy-fake accept it unchanged. Keys are written 0600 and
unencrypted: this is for tests and demos, not for production credentials.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from mdm.pki.ca import Credential

_DIR = click.argument("directory", type=click.Path(file_okay=False, path_type=Path))


def _show(what: str, cred: Credential) -> None:
    click.echo(f"{what}: {cred.dn}")
    click.echo(f"  cert: {cred.cert}")
    click.echo(f"  key:  {cred.key}")


@click.group()
def pki() -> None:
    """Make a test CA, host and user certificates and a trust directory."""


@pki.command()
@_DIR
@click.option(
    "--dn",
    default=None,
    help="CA subject, slash form [default: /DC=org/DC=mdmtest/CN=MDM Test CA].",
)
@click.option("--days", default=3650, show_default=True, help="CA lifetime in days.")
def init(directory: Path, dn: str | None, days: int) -> None:
    """Create a CA in DIRECTORY, with DIRECTORY/certificates (X509_CERT_DIR) and vomsdir/."""
    from mdm.pki.ca import DEFAULT_CA_DN, CertificateAuthority

    ca = CertificateAuthority.create(directory, dn=dn or DEFAULT_CA_DN, days=days)
    click.echo(f"CA: {ca.dn}")
    click.echo(f"  cert:        {ca.cert_path}")
    click.echo(f"  trust dir:   {ca.trust_dir}   (tls.ca_dir, X509_CERT_DIR)")
    click.echo(f"  vomsdir:     {ca.vomsdir}   (tls.vomsdir, X509_VOMS_DIR)")


@pki.command()
@_DIR
@click.option("--name", default="localhost", show_default=True, help="Host name (CN and SAN).")
@click.option(
    "--ip", "ips", multiple=True, default=["127.0.0.1"], show_default=True, help="IP SAN (repeat)."
)
@click.option("--days", default=395, show_default=True)
def host(directory: Path, name: str, ips: tuple[str, ...], days: int) -> None:
    """Issue a host certificate (serverAuth + clientAuth) from the CA in DIRECTORY."""
    from mdm.pki.ca import CertificateAuthority

    ca = CertificateAuthority.load(directory)
    _show("host", ca.issue_host(name, ips=tuple(ips), days=days))


@pki.command()
@_DIR
@click.option("--cn", required=True, help='Common name, e.g. "Alice Doctor".')
@click.option("--o", "org", default=None, help='Organization, e.g. "Hospital".')
@click.option("--days", default=395, show_default=True)
def user(directory: Path, cn: str, org: str | None, days: int) -> None:
    """Issue a user certificate from the CA in DIRECTORY."""
    from mdm.pki.ca import CertificateAuthority

    ca = CertificateAuthority.load(directory)
    _show("user", ca.issue_user(cn, o=org, days=days))


@pki.command()
@_DIR
@click.option("--vo", required=True, help="Virtual organisation, e.g. mdm.")
@click.option("--host", "host_name", default="voms.localhost", show_default=True)
@click.option("--days", default=395, show_default=True)
def voms(directory: Path, vo: str, host_name: str, days: int) -> None:
    """Issue a VOMS server certificate and trust it for VO in DIRECTORY/vomsdir/<vo>/<host>.lsc."""
    from mdm.pki.ca import CertificateAuthority

    ca = CertificateAuthority.load(directory)
    cred = ca.issue_voms(vo, host_name, days=days)
    _show("VOMS server", cred)
    click.echo(f"  lsc:  {ca.vomsdir / vo / (host_name + '.lsc')}")


@pki.command()
@click.option("--cert", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True)
@click.option("--key", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--hours", default=12.0, show_default=True)
def proxy(cert: Path, key: Path, out: Path, hours: float) -> None:
    """Write a plain RFC 3820 proxy (no VOMS attributes; use voms-proxy-init/-fake for those)."""
    from mdm.pki.ca import make_proxy

    click.echo(f"proxy: {make_proxy(cert, key, out, hours=hours)}")
