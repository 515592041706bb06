"""Split and combine time of mdm.shamir for 32-byte keys, n=5 k=3, against pyshamir.

Usage: .venv/bin/python bench/shamir.py [--runs N] [--reference-runs M]

Each operation is timed call by call (perf_counter_ns) after a warm-up; the median and p99 are
printed in microseconds, and pyshamir (the Vault port used as a test oracle) is measured in the
same process as a reference, so the ratio holds on a loaded machine where absolute figures do
not. Combine uses a different random 3-subset each call.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from collections.abc import Callable

import pyshamir

from mdm import shamir

N, K, KEY_BYTES = 5, 3, 32


def measure(operation: Callable[[], object], runs: int) -> tuple[float, float]:
    """(median, p99) of *runs* timed calls, in microseconds, after a short warm-up."""
    for _ in range(min(runs // 10 + 1, 50)):
        operation()
    samples = []
    for _ in range(runs):
        start = time.perf_counter_ns()
        operation()
        samples.append((time.perf_counter_ns() - start) / 1000)
    samples.sort()
    return statistics.median(samples), samples[min(len(samples) - 1, int(len(samples) * 0.99))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5000, help="timed calls for mdm.shamir")
    parser.add_argument("--reference-runs", type=int, default=300, help="timed calls, pyshamir")
    args = parser.parse_args()
    rng = random.Random(1)
    key = os.urandom(KEY_BYTES)

    ours = shamir.split(key, N, K)
    theirs = [bytearray(p) for p in pyshamir.split(key, N, K)]
    assert all(shamir.combine(rng.sample(ours, K)) == key for _ in range(20))
    assert all(bytes(pyshamir.combine(rng.sample(theirs, K))) == key for _ in range(5))

    rows = [
        (
            "split",
            measure(lambda: shamir.split(key, N, K), args.runs),
            measure(lambda: pyshamir.split(key, N, K), args.reference_runs),
        ),
        (
            "combine",
            measure(lambda: shamir.combine(rng.sample(ours, K)), args.runs),
            measure(lambda: pyshamir.combine(rng.sample(theirs, K)), args.reference_runs),
        ),
    ]
    print(f"32-byte key, n={N} k={K}; mdm {args.runs} runs, pyshamir {args.reference_runs} runs")
    print(
        f"{'op':8} {'mdm median':>11} {'mdm p99':>9} {'pyshamir median':>16} {'p99':>9}"
        f" {'speed-up (median)':>18}"
    )
    for name, (median, p99), (ref_median, ref_p99) in rows:
        print(
            f"{name:8} {median:9.1f}us {p99:7.1f}us {ref_median:14.1f}us {ref_p99:7.1f}us"
            f" {ref_median / median:17.1f}x"
        )


if __name__ == "__main__":
    main()
