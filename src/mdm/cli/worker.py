"""``mdm worker recall [--once]``: the recall worker (``mdm.workers.recall``).

It needs the catalog database (``catalog.database_url``), the key servers (``keystore`` and a
``tls`` credential the key servers accept as a creator), the site secret
(``anonymize.secret_file``), the PACS (``dicom.pacs``) and the cache (``storage.cache_dir``,
shared with ``mdm serve se``). Run several: claims never overlap.
"""

from __future__ import annotations

import gc
import signal
import sys
import threading
from typing import Any

import click

from mdm.cli import load_settings

#: Seconds a thread may hold the GIL while another waits (Python's default: 0.005). The worker's
#: retrieval thread does many short reads, each releasing the GIL; with the default it then
#: waits up to 5 ms behind an anonymizing thread after every read (the "convoy" effect), which
#: measured as 64-76 instead of 88-111 instances/s in bench/recall.py (dcmtk engine, 2 workers).
SWITCH_INTERVAL = 0.0005
#: Allocations between young-generation collections (Python's default: 700).
GC_THRESHOLD = 20_000


@click.group("worker")
def worker() -> None:
    """Background workers (recall)."""


@worker.command("recall")
@click.option("--once", is_flag=True, help="Drain the staging queue once, then exit.")
@click.option(
    "--threads",
    type=click.IntRange(1, 256),
    default=2,
    show_default=True,
    help="Instances processed at once per worker (anonymize, encrypt, write); run one worker "
    "per core rather than many threads: the work is CPU-bound Python.",
)
@click.option(
    "--batch",
    type=click.IntRange(1, 10000),
    default=64,
    show_default=True,
    help="Files claimed per batch (one series, topped up with whole series): each batch costs "
    "a claim, a key-server call per server, a PACS retrieval, a flush and a recording.",
)
@click.option(
    "--poll",
    type=click.FloatRange(0.01, 3600),
    default=1.0,
    show_default=True,
    help="Seconds between looks at an empty staging queue.",
)
@click.pass_context
def recall(ctx: click.Context, once: bool, threads: int, batch: int, poll: float) -> None:
    """Recall staged files from the PACS into the cache, anonymized and encrypted."""
    from mdm.workers.recall import BatchResult, run

    settings = load_settings(ctx)
    sys.setswitchinterval(SWITCH_INTERVAL)
    stop = threading.Event()

    def on_signal(_signo: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def report(r: BatchResult) -> None:
        click.echo(f"batch: {r.completed} completed, {r.failed} failed", err=True)

    def ready(worker_id: str) -> None:
        # The start-up objects (modules, settings, engines, dictionaries) live as long as the
        # worker: freezing them keeps the cyclic collector from rescanning them in every full
        # collection, and a higher first threshold makes collections rarer (perf: ~2 % of
        # the worker's samples were gc_collect_main and its visits).
        gc.freeze()
        gc.set_threshold(GC_THRESHOLD, 20, 20)
        click.echo(f"recall worker {worker_id} ready ({threads} threads)", err=True)

    total = run(
        settings,
        once=once,
        stop_event=stop,
        idle=poll,
        on_batch=report,
        on_ready=ready,
        threads=threads,
        batch=batch,
    )
    click.echo(f"recall worker: {total.completed} completed, {total.failed} failed")
    if total.timings:
        stages = ", ".join(f"{k} {v:.2f}" for k, v in sorted(total.timings.items()))
        click.echo(f"seconds per stage (summed over threads): {stages}", err=True)
    taken, declined = total.elementwise
    if taken + declined:
        click.echo(
            f"anonymized element by element: {taken} of {taken + declined} instances "
            "(the others through the whole dataset)",
            err=True,
        )
