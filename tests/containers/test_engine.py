"""The private Docker Engine: it answers, and stop() leaves nothing behind (no process, mount,
cgroup, volume or folder), also after its daemon was killed."""

from __future__ import annotations

import os
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud_phoenix import exitcodes
from cloud_phoenix.containers.dockercli import ContainerError
from cloud_phoenix.containers.engine import PrivateEngine, dockerd_pid, ping
from cloud_phoenix.containers.image import BuildResult, ImageBuilder, default_cache
from cloud_phoenix.containers.leftovers import CGROUP_ROOT, mounts_below
from tests.fixtures.containers import REPO, why_docker_cannot_run

pytestmark = [pytest.mark.container, pytest.mark.timeout(900)]  # the first builds the image


@pytest.fixture
def second_engine(image: BuildResult) -> Iterator[PrivateEngine]:
    """Another private engine (the session's stays up), with the cached base imported; the
    session's image build has filled the cache."""
    engine = PrivateEngine(Path(tempfile.mkdtemp(prefix="phx-engine-")))
    try:
        engine.start()
        yield engine
    finally:
        engine.stop()


def processes_naming(folder: Path) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and str(folder).encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def start_a_container(engine: PrivateEngine) -> int:
    """A container with a named volume, on the host network; the pid of its process."""
    docker = engine.docker()
    base = ImageBuilder(docker, REPO, default_cache()).base()
    docker.run("volume", "create", "kept")
    cid = docker.run(
        "run", "--detach", "--network=host", "--volume=kept:/data", base, "sleep", "600"
    ).stdout.strip()
    return int(docker.run("inspect", "--format={{.State.Pid}}", cid).stdout)


def assert_nothing_left(engine: PrivateEngine, container_pid: int) -> None:
    folder = engine.paths.folder
    assert not folder.exists()
    assert processes_naming(folder) == []
    assert not running(container_pid)
    assert mounts_below(folder) == []
    name = engine.paths.name
    assert not [g for g in [CGROUP_ROOT / name, *CGROUP_ROOT.glob(f"*/{name}")] if g.exists()]


def test_stop_removes_the_containers_volumes_mounts_processes_and_folder(
    second_engine: PrivateEngine,
) -> None:
    assert ping(second_engine.paths.socket)
    pid = start_a_container(second_engine)
    assert running(pid) and mounts_below(second_engine.paths.folder)
    second_engine.stop()
    assert_nothing_left(second_engine, pid)
    second_engine.stop()  # again: nothing to do, no error


def test_stop_mends_an_engine_whose_daemon_was_killed(second_engine: PrivateEngine) -> None:
    pid = start_a_container(second_engine)
    daemon = dockerd_pid(second_engine.paths)
    assert daemon is not None
    os.kill(daemon, signal.SIGKILL)  # containerd, the shim and the container live on
    assert running(pid)
    second_engine.stop()
    assert_nothing_left(second_engine, pid)


def test_a_folder_it_did_not_make_is_neither_used_nor_removed(tmp_path: Path) -> None:
    if (reason := why_docker_cannot_run()) is not None:
        pytest.skip(reason)
    keep = tmp_path / "notes.txt"
    keep.write_text("mine")
    engine = PrivateEngine(tmp_path)
    with pytest.raises(ContainerError) as started:
        engine.start()
    assert started.value.code == exitcodes.CANTCREAT
    with pytest.raises(ContainerError):
        engine.stop()
    assert keep.read_text() == "mine"


def test_a_folder_too_deep_for_its_sockets_is_refused(tmp_path: Path) -> None:
    if (reason := why_docker_cannot_run()) is not None:
        pytest.skip(reason)
    with pytest.raises(ContainerError) as started:
        PrivateEngine(tmp_path / ("d" * 100)).start()
    assert started.value.code == exitcodes.CONFIG
    assert "unix socket" in str(started.value)
