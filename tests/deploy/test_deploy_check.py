"""``make deploy-check`` end to end: installs its validators (first run only) and passes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_deploy_check_passes() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tools.deploy_check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    report = result.stdout + result.stderr
    assert result.returncode == 0, report
    assert "FAIL" not in result.stdout, report
    for check in (
        "PASS compose config (core + monitoring + sim)",
        "PASS kubernetes-validate --strict (production example)",
        "PASS kubernetes objects (default values)",
        "PASS promtool check config",
        "PASS promtool test rules",
    ):
        assert check in result.stdout, report
