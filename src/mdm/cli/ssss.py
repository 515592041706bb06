"""``mdm ssss split|join``: share a password among people, in the spirit of gLite's tools.

``glite-ssss-split-passwd -q N K SECRET`` and ``glite-ssss-join-passwd -q SHARE|NULL ...`` are
the models. The default format is MDM's (shares carry k, x and a split id, and a join from too
few or wrong shares is refused); ``--format glite`` reads and writes the original format.
Shares go to stdout one per line, the secret alone on stdout for a join, so both pipe; ``-q``
only drops the explanations written to stderr. The secret may be left off the command line
(it would stay in the shell history): it is then read from stdin, or prompted for on a
terminal.
"""

from __future__ import annotations

import sys

import click

from mdm import ssss as formats
from mdm.errors import InvalidShares, UsageError

_FORMAT = click.option(
    "--format",
    "fmt",
    type=click.Choice(["mdm", "glite"]),
    default="mdm",
    show_default=True,
    help="mdm: GF(256) shares that carry k and a check value; glite: the original gLite format.",
)
_QUIET = click.option(
    "-q",
    "--quiet",
    is_flag=True,
    help="No explanations on stderr (stdout has only the shares / the secret either way).",
)


@click.group()
def ssss() -> None:
    """Split and join passwords with Shamir's secret sharing."""


def _read_secret() -> str:
    """The secret from a hidden prompt on a terminal, else from stdin (one trailing newline off)."""
    if sys.stdin.isatty():
        return str(click.prompt("Secret", hide_input=True, confirmation_prompt=True, err=True))
    text = sys.stdin.read()
    return text[:-1] if text.endswith("\n") else text


@ssss.command()
@_QUIET
@_FORMAT
@click.argument("n", type=int)
@click.argument("k", type=int)
@click.argument("secret", required=False)
def split(quiet: bool, fmt: str, n: int, k: int, secret: str | None) -> None:
    """Split SECRET into N shares, any K of which rebuild it.

    Leave SECRET off to type it at a hidden prompt or pipe it on stdin, so that it does not
    appear in the shell history or the process list.
    """
    text = _read_secret() if secret is None else secret
    text = text.removesuffix("\r")
    if not text:
        raise UsageError("the secret is empty")
    data = text.encode("utf-8")
    shares = formats.glite_split(data, n, k) if fmt == "glite" else formats.split(data, n, k)
    if not quiet:
        where = "by position; give NULL for a missing one" if fmt == "glite" else "in any order"
        click.echo(f"{n} shares, any {k} of which rebuild the secret ({where}):", err=True)
    for share in shares:
        click.echo(share)


@ssss.command()
@_QUIET
@_FORMAT
@click.option(
    "-t",
    "--threshold",
    type=int,
    default=None,
    help="The K used at split time. glite shares do not record it: give it so that too few "
    "or inconsistent shares are refused for sure. mdm shares record it.",
)
@click.argument("shares", nargs=-1)
def join(quiet: bool, fmt: str, threshold: int | None, shares: tuple[str, ...]) -> None:
    """Join SHARES (NULL for a missing one) and print the secret.

    glite shares are positional: share i must be the i-th argument, NULL where one is
    missing. mdm shares may come in any order. With no SHARES, they are read from stdin,
    separated by blanks or newlines.
    """
    tokens = list(shares) or sys.stdin.read().split()
    if fmt == "glite":
        data = formats.glite_join(tokens, threshold=threshold)
    else:
        data = formats.join(tokens, threshold=threshold)
    try:
        secret = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidShares(
            "the joined secret is not UTF-8 text: too few shares, or a wrong one"
        ) from exc
    if not quiet:
        given = sum(1 for t in tokens if t.strip().upper() != "NULL")
        click.echo(f"joined {given} shares; the secret is:", err=True)
    click.echo(secret)
