"""``mdm encrypt`` and ``mdm decrypt``: the MDM file format on files, with a key from a file.

The key file holds 32 raw bytes or 64 hex digits (see ``mdm.crypto.keyfile``);
``--generate-key`` creates one (mode 0600, never overwriting). Both commands write their output
atomically: a temporary file next to OUT is renamed into place only once everything is done
and, for ``decrypt``, authenticated, so a failed run leaves no OUT at all. A progress bar
appears on stderr for large files when stderr is a terminal, and never in pipes or logs.
"""

from __future__ import annotations

import contextlib
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import click

from mdm.errors import UsageError

#: Below this size a run takes well under a second: no progress bar.
PROGRESS_THRESHOLD = 32 << 20

_IN = click.argument(
    "src", metavar="IN", type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
_OUT = click.argument("dst", metavar="OUT", type=click.Path(dir_okay=False, path_type=Path))
_FORCE = click.option("--force", is_flag=True, help="Replace OUT if it exists.")


def _key_file_option(help_text: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    return click.option(
        "--key-file",
        required=True,
        type=click.Path(dir_okay=False, path_type=Path),
        help=help_text,
    )


class _UuidType(click.ParamType):
    name = "UUID"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> uuid.UUID:
        if isinstance(value, uuid.UUID):
            return value
        try:
            return uuid.UUID(str(value))
        except ValueError:
            self.fail(f"{value!r} is not a UUID", param, ctx)


def _check_output(src: Path, dst: Path, force: bool) -> None:
    if not dst.parent.is_dir():
        raise UsageError(f"directory {dst.parent} of OUT does not exist")
    if dst.exists() and not force:
        raise UsageError(f"{dst} exists; use --force to replace it")
    if dst.exists() and dst.resolve() == src.resolve():
        raise UsageError("IN and OUT are the same file")


def _load_key(path: Path) -> bytes:
    from mdm.crypto.keyfile import key_file_is_private, read_key_file

    key = read_key_file(path)
    if not key_file_is_private(path):
        click.echo(
            f"warning: key file {path} is readable by others; run: chmod 600 {path}", err=True
        )
    return key


@contextlib.contextmanager
def _progress(size: int, label: str) -> Iterator[Callable[[int], None] | None]:
    """A rich progress bar on stderr, or None when stderr is no terminal or the file is small."""
    if size < PROGRESS_THRESHOLD:
        yield None
        return
    if not sys.stderr.isatty():
        # Checked here rather than trusting rich alone: FORCE_COLOR, often set in CI, would
        # make rich draw bars into logs.
        yield None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task(label, total=size)
        yield lambda n: bar.advance(task, n)
        bar.update(task, completed=size)


@contextlib.contextmanager
def _os_errors(dst: Path) -> Iterator[None]:
    """Turn OS errors on IN/OUT into one readable line instead of a traceback."""
    try:
        yield
    except OSError as exc:
        name = str(exc.filename or dst)
        if Path(name).name.startswith(f".{dst.name}."):
            name = str(dst)  # the temporary file next to OUT: name OUT itself
        raise click.FileError(name, hint=exc.strerror or str(exc)) from exc


@click.command()
@_IN
@_OUT
@_key_file_option("File holding the 32-byte key: raw, or 64 hex digits.")
@click.option(
    "--generate-key", is_flag=True, help="Create a new random key in --key-file (mode 0600)."
)
@click.option("--key-id", type=_UuidType(), help="Key id to record (default: a random UUID).")
@click.option("--guid", type=_UuidType(), help="File GUID to record (default: a random UUID).")
@click.option("-k", "k", type=click.IntRange(2, 255), help="Shares needed (with -n).")
@click.option("-n", "n", type=click.IntRange(2, 255), help="Shares made (with -k).")
@click.option(
    "--keyserver-set",
    type=click.IntRange(0, 0xFFFFFFFF),
    default=0,
    show_default=True,
    help="Key-server set holding the shares.",
)
@_FORCE
@click.option("-q", "--quiet", is_flag=True, help="Print nothing on success.")
def encrypt(
    src: Path,
    dst: Path,
    key_file: Path,
    generate_key: bool,
    key_id: uuid.UUID | None,
    guid: uuid.UUID | None,
    k: int | None,
    n: int | None,
    keyserver_set: int,
    force: bool,
    quiet: bool,
) -> None:
    """Encrypt IN into the MDM encrypted format (docs/format.md) as OUT.

    -k/-n only record in the header how the key is split (Shamir, k of n); splitting the key
    itself is done by `mdm ssss` or the key servers. On success, prints the header's ids.
    """
    from mdm.crypto import encrypt_file, new_key
    from mdm.crypto.keyfile import write_key_file

    if (k is None) != (n is None):
        raise UsageError("give both -k and -n, or neither")
    if k is not None and n is not None and k > n:
        raise UsageError(f"-k {k} is larger than -n {n}")
    _check_output(src, dst, force)
    created_key = False
    if generate_key:
        write_key_file(key_file, new_key())
        created_key = True
    try:
        key = _load_key(key_file)
        with _os_errors(dst), _progress(src.stat().st_size, "encrypt") as progress:
            header = encrypt_file(
                src,
                dst,
                key,
                key_id=key_id,
                file_guid=guid,
                k=k or 0,
                n=n or 0,
                keyserver_set_id=keyserver_set,
                progress=progress,
            )
    except BaseException:
        if created_key:
            # The key encrypted nothing: do not leave a stray key file behind.
            key_file.unlink(missing_ok=True)
        raise
    if not quiet:
        click.echo(
            f"key_id={header.key_id} file_guid={header.file_guid} "
            f"plaintext_len={header.plaintext_len} ciphertext_len={dst.stat().st_size}"
        )


@click.command()
@_IN
@_OUT
@_key_file_option("File holding the 32-byte key: raw, or 64 hex digits.")
@_FORCE
def decrypt(src: Path, dst: Path, key_file: Path, force: bool) -> None:
    """Decrypt the MDM encrypted file IN into OUT.

    OUT appears only if the whole file authenticated; with a wrong key or any damage the
    command fails with InvalidCiphertext and writes nothing.
    """
    from mdm.crypto import decrypt_file

    _check_output(src, dst, force)
    key = _load_key(key_file)
    with _os_errors(dst), _progress(src.stat().st_size, "decrypt") as progress:
        decrypt_file(src, dst, key, progress=progress)


__all__ = ["decrypt", "encrypt"]
