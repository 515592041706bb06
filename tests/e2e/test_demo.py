"""``mdm demo`` exactly as a newcomer runs it: one command, nothing set up, under two minutes.

The demo checks its own claims (each step allowed or refused as designed, no identifying value
in the decrypted images, decryption with one key server down) and exits non-zero if any fails,
so this test asserts the exit status, the one-line-per-step output and the summary table.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(200)]

STEPS = (
    "gridUser   stage a study and download its ciphertext",
    "gridUser   fetch a file key: refused",
    "researcher find MR studies by QIDO-RS",
    "researcher decrypt the other MR studies, 4 of 5 servers up",
    "researcher open with pydicom: no identifying value left",
    "physician  resolve a pseudonymous study to the patient",
)


def test_mdm_demo_with_pynetdicoms_qrscp_as_the_pacs(
    run_mdm: Callable[..., Any], tmp_path: Path
) -> None:
    """The fallback PACS of a machine without Orthanc, and a grid directory kept on request."""
    keep = tmp_path / "grid"
    proc = run_mdm("demo", "--pacs", "qrscp", "--keep", str(keep), check=False, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "PACS: qrscp" in proc.stdout
    assert "demo PASSED" in proc.stdout
    assert (keep / "demo.log").exists()
    assert sorted(p.name for p in (keep / "people").iterdir()) == [
        "gridUser.toml", "manager.toml", "physician.toml", "researcher.toml", "worker.toml",
    ]  # fmt: skip
