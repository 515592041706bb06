"""``mdm encrypt`` and ``mdm decrypt`` as a user runs them: key files, atomic output, errors."""

from __future__ import annotations

import os
import pty
import stat
import subprocess
import sys
import uuid
from pathlib import Path

from mdm.cli.crypt import PROGRESS_THRESHOLD
from mdm.crypto import read_header, read_key_file, write_key_file


def test_generate_key_encrypt_decrypt_round_trip(run_mdm, tmp_path: Path) -> None:
    plain, enc, out, key = (tmp_path / n for n in ("scan.dcm", "scan.mdm", "back.dcm", "f.key"))
    plain.write_bytes(os.urandom(100_000))
    key_id, guid = uuid.uuid4(), uuid.uuid4()
    result = run_mdm(
        "encrypt", str(plain), str(enc), "--key-file", str(key), "--generate-key",
        "--key-id", str(key_id), "--guid", str(guid), "-k", "3", "-n", "5",
    )  # fmt: skip
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert len(key.read_bytes()) == 65  # 64 hex digits and a newline
    assert f"key_id={key_id}" in result.stdout
    assert f"file_guid={guid}" in result.stdout
    assert result.stderr == ""  # no progress bar outside a terminal
    with enc.open("rb") as f:
        header = read_header(f)
    assert (header.key_id, header.file_guid, header.k, header.n) == (key_id, guid, 3, 5)
    assert header.plaintext_len == 100_000

    result = run_mdm("decrypt", str(enc), str(out), "--key-file", str(key))
    assert result.stdout == result.stderr == ""
    assert out.read_bytes() == plain.read_bytes()

    refused = run_mdm("decrypt", str(enc), str(out), "--key-file", str(key), check=False)
    assert refused.returncode == 1
    assert "exists; use --force" in refused.stderr
    run_mdm("decrypt", str(enc), str(out), "--key-file", str(key), "--force")


def test_raw_key_file_and_wrong_key(run_mdm, tmp_path: Path) -> None:
    plain, enc, out = tmp_path / "a.bin", tmp_path / "a.mdm", tmp_path / "a.out"
    plain.write_bytes(b"hello")
    raw = tmp_path / "raw.key"
    raw.write_bytes(os.urandom(32))
    raw.chmod(0o600)
    run_mdm("encrypt", str(plain), str(enc), "--key-file", str(raw), "-q")
    wrong = tmp_path / "wrong.key"
    write_key_file(wrong, os.urandom(32))
    result = run_mdm("decrypt", str(enc), str(out), "--key-file", str(wrong), check=False)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: InvalidCiphertext: cannot decrypt: wrong key or damaged ciphertext"
    ]
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "a.mdm", "raw.key", "wrong.key"]
    assert read_key_file(raw) == raw.read_bytes()


def test_usage_errors_are_one_line(run_mdm, tmp_path: Path) -> None:
    plain = tmp_path / "a.bin"
    plain.write_bytes(b"x")
    bad = tmp_path / "bad.key"
    bad.write_text("not a key\n")
    result = run_mdm(
        "encrypt", str(plain), str(tmp_path / "o"), "--key-file", str(bad), check=False
    )
    assert result.returncode == 1
    assert "neither 32 raw bytes nor 64 hex digits" in result.stderr
    assert "Traceback" not in result.stderr

    existing = tmp_path / "exists.key"
    write_key_file(existing, os.urandom(32))
    result = run_mdm(
        "encrypt", str(plain), str(tmp_path / "o"), "--key-file", str(existing), "--generate-key",
        check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert "refusing to overwrite a key" in result.stderr

    result = run_mdm(
        "encrypt", str(plain), str(tmp_path / "o"), "--key-file", str(existing), "-k", "3",
        check=False,
    )  # fmt: skip
    assert "give both -k and -n" in result.stderr
    assert not (tmp_path / "o").exists()


def test_progress_bar_only_on_a_terminal(tmp_path: Path) -> None:
    """stderr on a pseudo-terminal gets a progress bar for a large file (and pipes get none)."""
    big, enc = tmp_path / "big.bin", tmp_path / "big.mdm"
    with big.open("wb") as f:
        f.truncate(PROGRESS_THRESHOLD + 1)  # sparse: costs no disk writes
    key = tmp_path / "k"
    write_key_file(key, os.urandom(32))
    master, slave = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mdm", "encrypt", str(big), str(enc), "--key-file", str(key)],
        stdout=subprocess.PIPE,
        stderr=slave,
        env={**env, "COLUMNS": "100"},
    )
    os.close(slave)
    seen = b""
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        seen += data
    os.close(master)
    stdout, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, seen
    assert b"encrypt" in seen
    assert b"MiB" in seen
    assert b"plaintext_len" in stdout
