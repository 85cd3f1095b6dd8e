"""What the commands write is for their user and group only, whatever the login's umask.

Each command runs as a real process started under umask 022 (the usual default, which
makes new files world-readable); nothing it created under PHOENIX_HOME, nor a restored
database, may then carry a permission bit for "other".
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fixtures.server import PhoenixProcess, running_stack, start_phoenix
from tests.fixtures.waiting import eventually

pytestmark = pytest.mark.integration

LOGIN_UMASK = 0o022


@pytest.fixture
def login_umask() -> Iterator[None]:
    """Children started by this test inherit umask 022, as from a default login shell."""
    before = os.umask(LOGIN_UMASK)
    try:
        yield
    finally:
        os.umask(before)


def world_accessible(root: Path, skip: frozenset[Path] = frozenset()) -> dict[str, str]:
    """Every path under `root` (itself included) with a bit for "other", and its mode."""
    found = {}
    for path in [root, *root.rglob("*")]:
        mode = path.lstat().st_mode
        if path in skip or stat.S_ISLNK(mode):
            continue
        if mode & 0o007:
            found[str(path.relative_to(root.parent))] = oct(mode & 0o777)
    return found


def phoenix(home: Path, *args: str, db_url: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PHOENIX_HOME": str(home)}
    if db_url:
        env["DB_CONNECTION_STRING"] = db_url
    return subprocess.run(
        [sys.executable, "-m", "cloud_phoenix", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        umask=LOGIN_UMASK,
    )


def ask(server: PhoenixProcess, count: int) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as client:
        for n in range(count):
            assert client.get(f"/health?n={n}").status_code == 200


def sqlite_files(home: Path) -> list[Path]:
    """The SQLite database and its -wal and -shm, once all three exist."""
    [db] = (home / "db").glob("*.sqlite3")
    files = [db, Path(f"{db}-wal"), Path(f"{db}-shm")]
    eventually(lambda: all(p.exists() for p in files), 30, what="the database's -wal and -shm")
    return files


def modes(paths: list[Path]) -> dict[str, str]:
    return {path.name: oct(path.stat().st_mode & 0o777) for path in paths}


def test_up_creates_nothing_world_readable(tmp_path: Path, login_umask: None) -> None:
    home = tmp_path / "home"
    with running_stack(home) as stack:
        made_by_the_test = frozenset({home, stack.output})  # the fixture's, not phoenix's
        ask(stack, 20)
        status = home / "run" / "status.json"
        eventually(status.exists, 30, what="run/status.json")
        eventually(lambda: len(list(home.glob("logs/*.log"))) >= 2, 30, what="the server logs")
        # While the stack runs: SQLite removes -wal and -shm when the last connection closes.
        named = [*sqlite_files(home), status, *sorted(home.glob("logs/*.log"))]
        assert all(mode == "0o640" for mode in modes(named).values()), modes(named)
        assert world_accessible(home, made_by_the_test) == {}
    assert world_accessible(home, made_by_the_test) == {}


def test_serve_creates_nothing_world_readable(tmp_path: Path, login_umask: None) -> None:
    server = start_phoenix(tmp_path / "home")
    made_by_the_test = frozenset({server.home, server.output})
    try:
        ask(server, 5)
        named = sqlite_files(server.home)
        assert all(mode == "0o640" for mode in modes(named).values()), modes(named)
        assert world_accessible(server.home, made_by_the_test) == {}
    finally:
        server.stop()
    assert world_accessible(server.home, made_by_the_test) == {}


def test_collect_backup_and_restore_create_nothing_world_readable(tmp_path: Path) -> None:
    home = tmp_path / "home"
    collected = phoenix(home, "collect", "--once")
    assert collected.returncode == 0, collected.stderr
    [db] = (home / "db").glob("*.sqlite3")
    assert modes([db]) == {db.name: "0o640"}
    assert world_accessible(home) == {}

    # A backup into a home of its own: the folders it creates are private too.
    backup_home = tmp_path / "elsewhere" / "home"
    backed_up = phoenix(backup_home, "backup", db_url=f"sqlite:///{db}")
    assert backed_up.returncode == 0, backed_up.stderr
    assert world_accessible(tmp_path / "elsewhere") == {}

    target = tmp_path / "restored" / "phoenix.sqlite3"
    [manifest] = (backup_home / "backups").glob("*.manifest.json")
    restored = phoenix(home, "restore", str(manifest), "--into", f"sqlite:///{target}")
    assert restored.returncode == 0, restored.stderr
    assert modes([target]) == {target.name: "0o640"}
    assert world_accessible(target.parent) == {}
