"""Every shell script of the repository passes shellcheck (from .venv-tools, installed by
`scripts/bootstrap --dev`) with no finding at all: the set-up and CI entry points, the
`phoenix` wrapper, and whatever deploy/ adds. A script is found by its `.sh` name or its
shebang, so a new one is checked without being listed here."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SHELLCHECK = ROOT / ".venv-tools" / "bin" / "shellcheck"
SHEBANG = re.compile(rb"^#!\s*(/usr/bin/env\s+(-S\s+)?)?(/usr)?(/bin/)?(ba|da|k)?sh\b")
# Not the project's: virtual environments, installed packages, caches, run-time state.
SKIP_DIRS = {".git", "node_modules", "__pycache__", "var", "test-artifacts", "build", "dist"}


def skipped(directory: str) -> bool:
    return directory in SKIP_DIRS or directory.startswith(
        (".venv", ".mypy", ".ruff", ".pytest", ".hypothesis")
    )


def is_shell_script(path: Path) -> bool:
    if path.suffix == ".sh":
        return True
    try:
        with path.open("rb") as file:
            return bool(SHEBANG.match(file.readline(200)))
    except OSError:
        return False


def shell_scripts() -> list[Path]:
    found = []
    for folder, directories, files in os.walk(ROOT):
        directories[:] = sorted(d for d in directories if not skipped(d))
        found += [Path(folder, f) for f in sorted(files) if is_shell_script(Path(folder, f))]
    return found


SCRIPTS = shell_scripts()


def test_the_known_scripts_are_found() -> None:
    found = {p.relative_to(ROOT).as_posix() for p in SCRIPTS}
    assert {"scripts/bootstrap", "scripts/test", ".ci/run", "phoenix"} <= found
    assert not any(part.startswith(".venv") for p in found for part in p.split("/"))


def test_the_finder_tells_shell_from_other_scripts(tmp_path: Path) -> None:
    cases = {
        "a": "#!/usr/bin/env bash\n",
        "b": "#!/bin/sh\n",
        "c": "#!/bin/bash -e\n",
        "d.sh": "echo no shebang\n",
        "e": "#!/usr/bin/env python3\n",
        "f": "#!/usr/bin/env bashful\n",
        "g": "plain text\n",
    }
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
    shell = {name for name in cases if is_shell_script(tmp_path / name)}
    assert shell == {"a", "b", "c", "d.sh"}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_shellcheck_finds_nothing(script: Path) -> None:
    if not SHELLCHECK.is_file():
        pytest.fail("shellcheck is not installed in .venv-tools: run scripts/bootstrap --dev")
    # -x follows `source`d files; --norc: no personal .shellcheckrc changes the verdict.
    result = subprocess.run(
        [str(SHELLCHECK), "--norc", "-x", script.name],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=script.parent,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_run_command_installs_the_runtime_without_the_dev_tools(tmp_path: Path) -> None:
    """`./phoenix up` on a fresh checkout installs what the application runs on, at the
    locked versions, and not the test and lint tools (pytest, Playwright, mypy ...)."""
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    for name in ("pyproject.toml", "requirements.lock", "README.md"):
        (checkout / name).write_bytes((ROOT / name).read_bytes())
    (checkout / "scripts").mkdir()
    (checkout / "scripts" / "bootstrap").write_bytes((ROOT / "scripts" / "bootstrap").read_bytes())
    ignore = shutil.ignore_patterns("*.egg-info", "__pycache__")
    shutil.copytree(ROOT / "src", checkout / "src", ignore=ignore)  # the install writes there

    def bootstrap() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "scripts/bootstrap"],
            cwd=checkout,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )

    first = bootstrap()
    assert first.returncode == 0, first.stderr
    assert "locked runtime dependencies" in first.stderr
    python = checkout / ".venv" / "bin" / "python"
    installed = subprocess.run(
        [python, "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True, check=True
    ).stdout.lower()
    assert "fastapi==" in installed and "gunicorn==" in installed
    for dev_tool in ("pytest", "playwright", "mypy", "schemathesis", "ruff"):
        assert f"\n{dev_tool}==" not in f"\n{installed}", dev_tool
    locked = subprocess.run(
        [python, ROOT / "deploy/docker/verify_locked.py", "requirements.lock",
         "--ignore", "cloud-phoenix", "--ignore", "pip", "--ignore", "setuptools"],
        cwd=checkout, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert locked.returncode == 0, locked.stdout + locked.stderr
    again = bootstrap()  # nothing to do the second time
    assert again.returncode == 0 and "installing" not in again.stderr
