"""Throughput and memory of mdm.crypto, against raw Cobblestone-256 measured in the same run.

    .venv/bin/python bench/crypto.py [--size-mib 1024] [--rss-size-mib 2048] [--repeat 3]
                                     [--tmpdir DIR]

Throughput (goal: mdm.crypto / raw >= 0.9). Both sides do the same I/O so that the ratio shows
what MDM's layer costs, not what the disk costs:

* encrypt: plaintext from an in-memory source that copies a 1 MiB random block into the
  caller's buffer (``readinto``) until ``--size-mib`` is reached; ciphertext to /dev/null;
* decrypt: the ciphertext of the same size, written once to a file in a temporary directory
  and read back through the page cache (warmed first); plaintext to /dev/null.

"raw" is ``Cobblestone256Encryptor``/``Decryptor`` driven by the best loop we know (1 MiB
``readinto`` feeds, ``update_into`` into preallocated buffers); "mdm" is ``encrypt_stream`` /
``decrypt_stream``. Passes alternate raw/mdm and the best of ``--repeat`` is reported.

Peak RSS (goal: < 150 MB, flat in the file size), each in a fresh child process, read with
``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss`` by an intermediate process that runs only
that child: a baseline child that only imports mdm.crypto; ``encrypt_file`` of a sparse
``--rss-size-mib`` plaintext file into the temporary directory; ``decrypt_file`` of that
ciphertext into the temporary directory; a sequential read of it through ``RangeReader``.
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cryptography.cobblestone import Cobblestone256Decryptor, Cobblestone256Encryptor

MIB = 1 << 20
FEED = MIB
# Room for every chunk update_into may emit per feed (the same sizing as mdm.crypto.stream).
ENC_OUT = (FEED // 16384 + 2) * 16400 + 56
DEC_OUT = (FEED // 16400 + 2) * 16384


class RepeatSource(io.RawIOBase):
    """*total* bytes made of one random 1 MiB block, handed out by copying (like a page cache)."""

    def __init__(self, total: int) -> None:
        self._block = memoryview(os.urandom(FEED))
        self._left = total

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        n = min(len(buffer), len(self._block), self._left)
        buffer[:n] = self._block[:n]
        self._left -= n
        return n


def raw_encrypt(src: RepeatSource, sink: io.RawIOBase, key: bytes, context: bytes) -> None:
    enc = Cobblestone256Encryptor(key, context)
    inbuf, outbuf = memoryview(bytearray(FEED)), memoryview(bytearray(ENC_OUT))
    sink.write(context)
    while n := src.readinto(inbuf):
        sink.write(outbuf[: enc.update_into(inbuf[:n], outbuf)])
    sink.write(enc.finalize())


def raw_decrypt(path: Path, sink: io.RawIOBase, key: bytes, header_len: int) -> None:
    with path.open("rb", buffering=0) as src:
        context = src.read(header_len)
        dec = Cobblestone256Decryptor(key, context)
        inbuf, outbuf = memoryview(bytearray(FEED)), memoryview(bytearray(DEC_OUT))
        while n := src.readinto(inbuf):
            sink.write(outbuf[: dec.update_into(inbuf[:n], outbuf)])
        sink.write(dec.finalize())


def timed(fn: object, *args: object) -> float:
    start = time.perf_counter()
    fn(*args)  # type: ignore[operator]
    return time.perf_counter() - start


def throughput(size: int, repeat: int, tmpdir: Path) -> None:
    from mdm.crypto import Header, decrypt_stream, encrypt_stream, new_key

    key = new_key()
    header = Header.new(size, k=3, n=5)
    gib = size / (1 << 30)
    sink = open(os.devnull, "wb", buffering=0)  # noqa: SIM115 - closed below
    results: dict[str, list[float]] = {k: [] for k in ("raw-enc", "mdm-enc", "raw-dec", "mdm-dec")}
    for _ in range(repeat):
        results["raw-enc"].append(timed(raw_encrypt, RepeatSource(size), sink, key, header.pack()))
        results["mdm-enc"].append(timed(encrypt_stream, RepeatSource(size), sink, key, header))
    ct_path = tmpdir / "bench.mdm"
    with ct_path.open("wb") as f:
        encrypt_stream(RepeatSource(size), f, key, header)
    with ct_path.open("rb") as f:  # warm the page cache so that both sides read from memory
        while f.read(16 * MIB):
            pass

    def mdm_decrypt() -> None:
        with ct_path.open("rb", buffering=0) as src:
            decrypt_stream(src, sink, key)

    for _ in range(repeat):
        results["raw-dec"].append(timed(raw_decrypt, ct_path, sink, key, header.header_len))
        results["mdm-dec"].append(timed(mdm_decrypt))
    sink.close()
    ct_path.unlink()
    best = {k: gib / min(v) for k, v in results.items()}
    print(f"throughput on {gib:.2f} GiB (best of {repeat}, GiB/s):")
    for op, name in (("enc", "encrypt"), ("dec", "decrypt")):
        raw, mdm = best[f"raw-{op}"], best[f"mdm-{op}"]
        verdict = "ok" if mdm / raw >= 0.9 else "BELOW GOAL"
        print(
            f"  {name}: raw Cobblestone-256 {raw:5.2f}  mdm.crypto {mdm:5.2f}  "
            f"ratio {mdm / raw:.3f} (goal >= 0.9: {verdict})"
        )


# --- peak RSS: bench -> probe (reads RUSAGE_CHILDREN) -> worker ------------------------------
def worker(mode: str, paths: list[str]) -> None:
    import mdm.crypto as crypto

    key = bytes(range(32))
    if mode == "baseline":
        return
    if mode == "encrypt":
        crypto.encrypt_file(paths[0], paths[1], key)
    elif mode == "decrypt":
        crypto.decrypt_file(paths[0], paths[1], key)
    elif mode == "range-read":
        with open(paths[0], "rb") as f, crypto.RangeReader(f, key) as reader:
            buf = bytearray(FEED)
            while reader.readinto(buf):
                pass
    else:
        raise SystemExit(f"unknown mode {mode}")


def probe(args: list[str]) -> None:
    subprocess.run([sys.executable, __file__, "--worker", *args], check=True)
    print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)  # KiB on Linux


def peak_rss_kib(*args: str) -> tuple[int, float]:
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, __file__, "--probe", *args], check=True, capture_output=True, text=True
    )
    return int(out.stdout.split()[-1]), time.perf_counter() - start


def memory(size: int, tmpdir: Path) -> None:
    plain, enc, out = tmpdir / "plain.bin", tmpdir / "plain.mdm", tmpdir / "plain.out"
    with plain.open("wb") as f:
        f.truncate(size)  # sparse: the source costs no disk space
    rows = [("baseline (import mdm.crypto)", peak_rss_kib("baseline"))]
    rows.append(("encrypt_file", peak_rss_kib("encrypt", str(plain), str(enc))))
    plain.unlink()
    rows.append(("decrypt_file", peak_rss_kib("decrypt", str(enc), str(out))))
    out.unlink()
    rows.append(("RangeReader sequential read", peak_rss_kib("range-read", str(enc))))
    enc.unlink()
    print(f"peak RSS while streaming {size / (1 << 30):.2f} GiB (ru_maxrss of a fresh child):")
    for name, (kib, secs) in rows:
        verdict = "ok" if kib * 1024 < 150e6 else "ABOVE GOAL"
        print(f"  {name:30s} {kib / 1024:7.1f} MiB  ({secs:5.1f} s; goal < 150 MB: {verdict})")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2], sys.argv[3:])
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--probe":
        probe(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rss-size-mib", type=int, default=2048)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--tmpdir", type=Path, default=None)
    args = parser.parse_args()
    import cryptography

    print(f"python {sys.version.split()[0]}, cryptography {cryptography.__version__}, ", end="")
    print(f"cpus {os.cpu_count()}, load {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(dir=args.tmpdir, prefix="mdm-bench-") as tmp:
        print(f"temporary directory: {tmp}")
        throughput(args.size_mib * MIB, args.repeat, Path(tmp))
        memory(args.rss_size_mib * MIB, Path(tmp))


if __name__ == "__main__":
    main()
