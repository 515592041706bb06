"""The ``mdm`` command: one click group whose subcommands are imported only when used.

``mdm --help`` imports nothing heavier than click (STYLE C7): each verb lives in its own module
of this package and is named in ``COMMANDS``. Errors from MDM become one readable line with a
hint; the traceback appears only with ``--debug``.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Mapping
from typing import Any

import click

from mdm import __version__

#: verb -> "module:attribute" (module relative to mdm.cli). Help text comes from the command.
COMMANDS: dict[str, str] = {
    "demo": "demo:demo",
    "pki": "pki:pki",
    "ssss": "ssss:ssss",
    "encrypt": "crypt:encrypt",
    "decrypt": "crypt:decrypt",
    "anonymize": "anonymize:anonymize",
    "keys": "keys:keys",
    "keyserver": "keyserver:keyserver",
    "serve": "serve:serve",
    "whoami": "whoami:whoami",
    "catalog": "catalog:catalog",
    "ls": "files:ls",
    "stat": "files:stat",
    "find": "files:find",
    "acl": "files:acl",
    "identity": "files:identity",
    "register": "register:register",
    "worker": "worker:worker",
    "stage": "transfer:stage",
    "get": "transfer:get",
    "cat": "transfer:cat",
    "grant": "access:grant",
    "revoke": "access:revoke",
    "status": "status:status",
    "init": "site:init",
    "up": "site:up",
}


class LazyGroup(click.Group):
    """A click group that imports a subcommand's module only when that subcommand runs."""

    def __init__(self, *args: Any, lazy: Mapping[str, str], package: str, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._lazy = dict(lazy)
        self._package = package

    def _available(self, name: str) -> bool:
        module = self._lazy[name].split(":")[0]
        return importlib.util.find_spec(f"{self._package}.{module}") is not None

    def list_commands(self, ctx: click.Context) -> list[str]:
        names = set(super().list_commands(ctx))
        names |= {n for n in self._lazy if self._available(n)}
        return sorted(names)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self._lazy and self._available(cmd_name):
            module, attr = self._lazy[cmd_name].split(":")
            cmd = getattr(importlib.import_module(f"{self._package}.{module}"), attr)
            if not isinstance(cmd, click.Command):
                raise TypeError(f"{module}:{attr} is not a click command")
            return cmd
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Listing must not import every module: show the first line of each module docstring
        # only for commands already loaded, and the bare verb otherwise.
        rows = []
        for name in self.list_commands(ctx):
            helptext = _SHORT_HELP.get(name, "")
            rows.append((name, helptext))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


_SHORT_HELP = {
    "demo": "Run the whole system on loopback and show what each user can do.",
    "pki": "Make a test CA, host and user certificates and a trust directory.",
    "ssss": "Split and join passwords with Shamir's secret sharing.",
    "encrypt": "Encrypt a file into the MDM encrypted format.",
    "decrypt": "Decrypt an MDM encrypted file.",
    "anonymize": "De-identify DICOM files (PS3.15 Annex E).",
    "keys": "Register, fetch and manage split keys on the key servers.",
    "keyserver": "Key-server administration (audit verification).",
    "serve": "Run an MDM server (keyserver, catalog, se).",
    "whoami": "Show the identity (DN, VOMS FQANs) a certificate or proxy presents.",
    "catalog": "Catalog administration.",
    "ls": "List a catalog directory.",
    "stat": "Show a file's catalog entry.",
    "find": "Search the metadata catalog with QIDO-RS parameters.",
    "acl": "Show or change catalog ACLs.",
    "identity": "Resolve a pseudonymous study to the original identity (level 3).",
    "register": "Register a PACS's instances in the catalog as NEARLINE files.",
    "worker": "Run an MDM worker (recall).",
    "stage": "Stage files from nearline (PACS) to disk.",
    "get": "Download (and decrypt) files.",
    "cat": "Decrypt a file to standard output.",
    "grant": "Grant a user or group access to a study (level 1, 2 or 3).",
    "revoke": "Revoke access to a study.",
    "status": "Health of the catalog, storage element and key servers.",
    "init": "Write a settings file for a site.",
    "up": "Start a complete local grid on loopback until interrupted.",
}


@click.group(
    cls=LazyGroup,
    lazy=COMMANDS,
    package=__name__,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.version_option(__version__, prog_name="mdm")
@click.option(
    "--settings",
    "settings_path",
    type=click.Path(dir_okay=False),
    default=None,
    envvar="MDM_SETTINGS",
    help="Settings file (TOML). Env: MDM_SETTINGS.",
)
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logging.")
@click.option("--log-level", default=None, help="Logging level (default from settings).")
@click.pass_context
def cli(ctx: click.Context, settings_path: str | None, debug: bool, log_level: str | None) -> None:
    """MDM, the Medical Data Manager: a hospital PACS seen as a grid storage element.

    Files leave anonymized (DICOM PS3.15 Annex E) and encrypted with their own key, and each key
    is split over n key servers with Shamir's secret sharing.
    """
    ctx.ensure_object(dict)
    ctx.obj["settings_path"] = settings_path
    ctx.obj["debug"] = debug
    ctx.obj["log_level"] = log_level
    from mdm import _log

    _log.configure(log_level or "WARNING", debug=debug)


def load_settings(ctx: click.Context | None = None) -> Any:
    """The Settings for this invocation (file from --settings / MDM_SETTINGS, then env)."""
    from mdm.settings import Settings

    ctx = ctx or click.get_current_context()
    root = ctx.find_root()
    path = (root.obj or {}).get("settings_path")
    return Settings.load(path)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the group, turning MDMError into one line plus a hint."""
    from mdm.errors import MDMError

    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    try:
        cli.main(args=args, prog_name="mdm", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except MDMError as exc:
        if debug:
            raise
        click.echo(f"error: {type(exc).__name__}: {exc.message}", err=True)
        if exc.hint:
            click.echo(f"hint: {exc.hint}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
