from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture
def run_mdm(tmp_path: Path):
    """Run ``python -m mdm ARGS`` as a subprocess, as a user would, and return the result."""

    def run(
        *args: str,
        check: bool = True,
        env: dict[str, str] | None = None,
        input: str | None = None,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        full_env = {**os.environ, **(env or {})}
        full_env.pop("MDM_SETTINGS", None) if env is None or "MDM_SETTINGS" not in env else None
        proc = subprocess.run(
            [sys.executable, "-m", "mdm", *args],
            capture_output=True,
            text=True,
            env=full_env,
            cwd=tmp_path,
            input=input,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"mdm {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
            )
        return proc

    return run
