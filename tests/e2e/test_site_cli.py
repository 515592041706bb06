"""``mdm init`` and ``mdm up`` as a user runs them, and the people's settings files in use."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.timeout(150)


def test_init_writes_a_valid_settings_file(run_mdm: Callable[..., Any], tmp_path: Path) -> None:
    run_mdm("init", "site.toml")
    text = (tmp_path / "site.toml").read_text()
    assert "[keystore]" in text
    assert "# threshold = 3" in text
    again = run_mdm("init", "site.toml", check=False)
    assert again.returncode != 0  # never overwrites without --force
    status = run_mdm("--settings", "site.toml", "status", "--json", check=False)
    assert status.returncode == 1  # nothing configured: not healthy, but a clean answer
    assert json.loads(status.stdout)["catalog"]["error"] == "not configured"
    table = run_mdm("--settings", "site.toml", "status", check=False)
    assert table.returncode == 1
    assert "MDM site status" in table.stdout
    assert "DOWN" in table.stdout
    assert "not configured" in table.stdout
    assert "0 of 0 key servers up" in table.stdout


def test_up_runs_a_grid_until_terminated(tmp_path: Path) -> None:
    log = (tmp_path / "up.log").open("w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mdm", "up", "--dir", "grid"],
        cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while "Press Ctrl-C" not in (tmp_path / "up.log").read_text():
            assert proc.poll() is None, (tmp_path / "up.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "up.log").read_text()
            time.sleep(0.3)
        people = tmp_path / "grid" / "people"

        def mdm(who: str, *args: str) -> subprocess.CompletedProcess[str]:
            cmd = [sys.executable, "-m", "mdm", "--settings", str(people / f"{who}.toml"), *args]
            env = {k: v for k, v in os.environ.items() if k != "MDM_SETTINGS"}
            return subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)

        found = mdm("researcher", "find", "-q", "ModalitiesInStudy=MR", "--json")
        assert found.returncode == 0, found.stderr
        assert len(json.loads(found.stdout)) == 3
        status = mdm("gridUser", "status", "--json")
        assert json.loads(status.stdout)["healthy"] is True
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        log.close()
    assert proc.returncode == 0, (tmp_path / "up.log").read_text()
    assert "stopping" in (tmp_path / "up.log").read_text()
