"""The systemd unit for hosts where `phoenix up` itself must be supervised."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cloud_phoenix import exitcodes
from cloud_phoenix.cli import PRIVATE_UMASK

UNIT = Path(__file__).resolve().parents[2] / "deploy" / "systemd" / "phoenix.service"


def test_the_unit_restarts_always_but_not_on_cannot_start_codes() -> None:
    text = UNIT.read_text()
    assert "Restart=always" in text
    [line] = [x for x in text.splitlines() if x.startswith("RestartPreventExitStatus=")]
    codes = {int(c) for c in line.split("=", 1)[1].split()}
    assert codes == {
        exitcodes.UNAVAILABLE,
        exitcodes.SOFTWARE,
        exitcodes.CANTCREAT,
        exitcodes.TEMPFAIL,
        exitcodes.CONFIG,
    }


def test_the_unit_keeps_new_files_private_with_the_commands_umask() -> None:
    [line] = [x for x in UNIT.read_text().splitlines() if x.startswith("UMask=")]
    assert int(line.split("=", 1)[1], 8) == PRIVATE_UMASK == 0o027


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze absent")
def test_systemd_analyze_verifies_the_unit(tmp_path: Path) -> None:
    phoenix = Path(sys.executable).parent / "phoenix"
    unit = tmp_path / "phoenix.service"
    unit.write_text(UNIT.read_text().replace("/opt/cloud-phoenix/.venv/bin/phoenix", str(phoenix)))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "phoenix.service" not in result.stderr, result.stderr
