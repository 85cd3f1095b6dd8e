"""The pure parts of the container tooling (cloud_phoenix.containers); the engine and the
image themselves run in the container tier (tests/container)."""

from __future__ import annotations

import stat
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from cloud_phoenix.containers.dockercli import ContainerError, find_cli, run_logged
from cloud_phoenix.containers.engine import EnginePaths, dockerd_command
from cloud_phoenix.containers.image import (
    BASE_PACKAGES,
    BASE_SUITE,
    PythonTarget,
    base_recipe,
    content_key,
    served_file,
)
from cloud_phoenix.containers.leftovers import mounts_below


def test_dockerd_keeps_everything_in_its_folder_and_makes_no_network() -> None:
    paths = EnginePaths(Path("/tmp/phx-engine-x"))
    command = dockerd_command("/usr/sbin/dockerd", paths)
    assert {"--iptables=false", "--ip6tables=false", "--bridge=none"} <= set(command)
    options = dict(arg.removeprefix("--").split("=", 1) for arg in command[1:])
    for name in ("data-root", "exec-root", "pidfile", "config-file"):
        assert options[name].startswith("/tmp/phx-engine-x/"), name
    assert options["host"] == "unix:///tmp/phx-engine-x/docker.sock"
    # Its own containerd namespace and cgroup parent, named after the folder only.
    assert options["containerd-namespace"] == paths.name
    assert options["cgroup-parent"] == f"/{paths.name}"
    assert paths.name != EnginePaths(Path("/tmp/phx-engine-y")).name


def test_mounts_below_a_folder_read_from_the_kernels_table(tmp_path: Path) -> None:
    table = tmp_path / "mountinfo"
    table.write_text(
        "45 27 254:0 /tmp/e/data /tmp/e/data rw,relatime shared:1 - ext4 /dev/vda rw\n"
        "49 45 0:40 / /tmp/e/data/overlay2/abc/merged rw - overlay overlay rw\n"
        "50 27 0:4 net:[4026531833] /tmp/e/exec/netns/default rw - nsfs nsfs rw\n"
        "51 27 0:5 / /tmp/e2/data rw - ext4 /dev/vda rw\n"
        "52 27 0:6 / /tmp/e/with\\040a\\040space rw - tmpfs tmpfs rw\n"
    )
    assert mounts_below(Path("/tmp/e"), table) == [
        Path("/tmp/e/data"),
        Path("/tmp/e/data/overlay2/abc/merged"),
        Path("/tmp/e/exec/netns/default"),
        Path("/tmp/e/with a space"),
    ]


def test_the_wheels_are_those_the_bases_python_and_glibc_can_load() -> None:
    options = PythonTarget("3.11", "2.36", "x86_64").pip_arguments()
    assert {"--only-binary=:all:", "--python-version=3.11", "--abi=cp311"} <= set(options)
    platforms = [o.removeprefix("--platform=") for o in options if o.startswith("--platform=")]
    assert platforms[0] == "manylinux_2_36_x86_64" and platforms[-1] == "manylinux_2_5_x86_64"
    assert len(platforms) == 32  # pip does not widen a manylinux tag by itself


def test_the_base_recipe_is_a_minimal_debian_with_its_python() -> None:
    recipe = base_recipe()
    assert recipe[-1] == BASE_SUITE == "bookworm"  # the public base's Debian release
    assert "--variant=minbase" in recipe and "--format=tar" in recipe
    assert f"--include={','.join(BASE_PACKAGES)}" in recipe
    assert {"python3", "python3-venv", "ca-certificates"} <= set(BASE_PACKAGES)


def test_the_cache_key_follows_every_part() -> None:
    assert content_key(b"a", b"b") == content_key(b"a", b"b")
    assert content_key(b"a", b"b") != content_key(b"a", b"c")
    assert content_key(b"ab") != content_key(b"a", b"b")  # parts are not concatenated


def stand_in(folder: Path, name: str, version: str, buildx: bool) -> str:
    """A `docker` that tells its version and has, or lacks, the buildx plugin."""
    path = folder / name
    path.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = buildx ]; then {"echo v0.20" if buildx else "exit 1"}; exit; fi\n'
        f'[ "$1" = --version ] && echo "Docker version {version}, build x"\n'
    )
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


def test_the_cli_chosen_can_build_with_buildkit(tmp_path: Path) -> None:
    new_bare = stand_in(tmp_path, "new-bare", "28.2.2", buildx=False)
    debian = stand_in(tmp_path, "debian", "20.10.24+dfsg1", buildx=False)
    with_buildx = stand_in(tmp_path, "with-buildx", "28.2.2", buildx=True)
    assert find_cli([new_bare, debian]) == debian
    assert find_cli([debian, with_buildx]) == with_buildx
    with pytest.raises(ContainerError) as none:
        find_cli([new_bare, str(tmp_path / "absent")])
    assert "docker.io" in str(none.value) and new_bare in str(none.value)


def test_a_long_step_shows_its_lines_and_a_failure_its_last_ones() -> None:
    lines: list[str] = []
    run_logged(["sh", "-c", "echo one; echo two >&2"], "step", sink=lines.append)
    assert sorted(lines) == ["one", "two"]
    with pytest.raises(ContainerError) as failed:
        run_logged(["sh", "-c", "echo why it failed; exit 3"], "the step")
    assert "the step failed (exit 3)" in str(failed.value)
    assert "why it failed" in str(failed.value)
    with pytest.raises(ContainerError) as hung:
        run_logged(["sleep", "30"], "silent step", timeout=0.5)
    assert "no end after" in str(hung.value)


def test_a_local_ca_file_is_served_on_loopback_only_while_the_build_runs(tmp_path: Path) -> None:
    urlopen = urllib.request.build_opener(urllib.request.ProxyHandler({})).open
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(b"-----BEGIN CERTIFICATE-----\n")
    with served_file(bundle) as url:
        assert url is not None and url.startswith("http://127.0.0.1:")
        with urlopen(url, timeout=5) as answer:
            assert answer.read() == bundle.read_bytes()
        with pytest.raises(urllib.error.HTTPError):
            urlopen(url.rsplit("/", 1)[0] + "/other", timeout=5)
    with pytest.raises(urllib.error.URLError):
        urlopen(url, timeout=5)
    with served_file(None) as nothing:
        assert nothing is None
    with pytest.raises(ContainerError), served_file(tmp_path / "absent.pem"):
        pass
