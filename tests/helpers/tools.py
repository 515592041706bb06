"""Finding the real external programs tests use, and refusing to skip them in CI.

Locally a missing binary skips the test with a clear reason; under ``CI=true`` or
``MDM_REQUIRE_INTEGRATION=1`` it fails, so a CI run can never silently skip the integration suite.
"""

from __future__ import annotations

import os
import shutil

import pytest


def strict() -> bool:
    return os.environ.get("CI") == "true" or os.environ.get("MDM_REQUIRE_INTEGRATION") == "1"


def require_tool(name: str, *candidates: str, package: str = "") -> str:
    """Path of the first of *name*/*candidates* found; skip (or fail in CI) otherwise."""
    for cand in (name, *candidates):
        path = shutil.which(cand)
        if path is None and os.path.isabs(cand) and os.access(cand, os.X_OK):
            path = cand
        if path:
            return path
    why = f"{name} not found" + (f" (Debian package {package})" if package else "")
    if strict():
        pytest.fail(f"{why}; CI requires it (scripts/test installs it)")
    pytest.skip(why)
    raise AssertionError("unreachable")
