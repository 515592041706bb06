"""The README's two set-up commands, exactly as written (the first one is run for real).

The second command is what CI runs (``.ci/run``); running it from inside the test suite would
recurse, so for it the test checks that CI calls exactly that command.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.e2e.test_demo import STEPS

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]


def _setup_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```sh\n(.*?)```", text, re.S)
    assert block, "README.md must open with a sh block holding the set-up commands"
    return [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip()]


def test_readme_opens_with_the_demo_and_the_test_command() -> None:
    assert _setup_commands() == ["./scripts/demo", "./scripts/test"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^exec \./scripts/test$", ci, re.M), "CI must run the README's test command"


def test_the_readme_demo_command_runs_the_demo_and_passes() -> None:
    command = _setup_commands()[0]
    env = {k: v for k, v in os.environ.items() if k != "MDM_SETTINGS"}
    proc = subprocess.run([command], cwd=ROOT, capture_output=True, text=True, env=env, timeout=380)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "demo PASSED" in out
    assert "FAILED" not in out
    assert "NOT RUN" not in out
    for step in STEPS:
        assert f"[     ok] {step}" in out, step
    assert "What each user could and could not do" in out
