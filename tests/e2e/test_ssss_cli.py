"""`mdm ssss` as a user runs it: the seed's gLite example, and split | join round trips."""

from __future__ import annotations

import os
import pty
import select
import signal
import sys
import time

SEED_ARGS = ["137c9547aba101ef", "NULL", "1256bcc160eda592", "NULL", "3113be83f203d794"]


def test_the_seed_glite_example_prints_secret(run_mdm) -> None:
    proc = run_mdm("ssss", "join", "--format", "glite", "-q", *SEED_ARGS)
    assert proc.stdout == "secret\n"
    assert proc.stderr == ""


def test_mdm_split_from_stdin_then_join_from_arguments(run_mdm) -> None:
    # The secret comes on stdin, so it is in neither the argument list nor the shell history.
    split = run_mdm("ssss", "split", "-q", "5", "3", input="pässwörd with spaces\n")
    shares = split.stdout.split()
    assert len(shares) == 5
    assert all(s.startswith("mdm1-3-") for s in shares)
    assert "pässwörd" not in split.stdout + split.stderr
    joined = run_mdm("ssss", "join", "-q", shares[4], "NULL", shares[0], shares[2])
    assert joined.stdout == "pässwörd with spaces\n"


def test_mdm_too_few_shares_is_one_clear_error(run_mdm) -> None:
    shares = run_mdm("ssss", "split", "-q", "5", "3", "s3cret").stdout.split()
    proc = run_mdm("ssss", "join", "-q", shares[0], shares[3], check=False)
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        "error: NotEnoughShares: these shares need k=3 to join; only 2 given"
    ]


def test_glite_split_then_join_through_stdin(run_mdm) -> None:
    split = run_mdm("ssss", "split", "--format", "glite", "4", "2", "hunter2")
    shares = split.stdout.split()
    assert len(shares) == 4
    assert "any 2 of which" in split.stderr
    tokens = f"NULL {shares[1]} NULL {shares[3]}\n"
    joined = run_mdm("ssss", "join", "--format", "glite", "-t", "2", input=tokens)
    assert joined.stdout == "hunter2\n"
    assert "joined 2 shares" in joined.stderr


def test_glite_too_few_shares_with_threshold_is_refused(run_mdm) -> None:
    proc = run_mdm("ssss", "join", "--format", "glite", "-t", "3", *SEED_ARGS[:3], check=False)
    assert proc.returncode == 1
    assert "NotEnoughShares: 2 share(s) given, at least 3 needed" in proc.stderr


def test_secret_typed_at_a_terminal_is_hidden_and_confirmed(run_mdm) -> None:
    # A real pseudo-terminal: click prompts twice with echo off, and the secret never shows.
    pid, fd = pty.fork()
    if pid == 0:  # child: become `mdm ssss split -q 3 2` on the terminal, never return to pytest
        try:
            argv = [sys.executable, "-m", "mdm", "ssss", "split", "-q", "3", "2"]
            os.execv(sys.executable, argv)  # noqa: S606 (fixed argv, like subprocess elsewhere)
        finally:
            os._exit(127)
    output = b""

    def read_until(marker: bytes | None, timeout: float = 20) -> None:
        """Read until *marker* shows up, or (marker None) until the child closes the terminal."""
        nonlocal output
        deadline = time.monotonic() + timeout
        while (marker is None or marker not in output) and time.monotonic() < deadline:
            if select.select([fd], [], [], 0.1)[0]:
                try:
                    chunk = os.read(fd, 4096)
                except OSError:  # EIO: the child exited and closed the terminal
                    return
                if not chunk:
                    return
                output += chunk

    try:
        read_until(b"Secret:")
        os.write(fd, b"t0p secret\n")
        read_until(b"confirmation:")
        os.write(fd, b"t0p secret\n")
        read_until(None)
        deadline = time.monotonic() + 10
        while (reaped := os.waitpid(pid, os.WNOHANG)) == (0, 0):
            assert time.monotonic() < deadline, "mdm ssss split did not exit"
            time.sleep(0.05)
        status = reaped[1]
    except BaseException:
        os.kill(pid, signal.SIGKILL)  # stop the child we started, then reap it
        os.waitpid(pid, 0)
        raise
    finally:
        os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0
    text = output.decode()
    assert "t0p secret" not in text
    shares = [line.strip() for line in text.splitlines() if line.startswith("mdm1-")]
    assert len(shares) == 3
    assert run_mdm("ssss", "join", "-q", shares[0], shares[2]).stdout == "t0p secret\n"
