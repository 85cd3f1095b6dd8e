"""The application image from the repository's Dockerfile, and what an offline build needs.

Online (the default) the build is a user's `docker build`: the public Python base, the
package index, AWS's trust store. Offline, the Dockerfile's build arguments name what this
module makes instead:
- BASE_IMAGE: Debian's Python 3.11 (python3, python3-venv, ca-certificates) installed by
  mmdebstrap from Debian's archive (with the host's apt settings), imported as
  cloud-phoenix-base:KEY;
- WHEELS: the locked runtime packages and the build backend, downloaded by pip on the host
  for the base's Python and platform, imported as cloud-phoenix-wheels:KEY;
- RDS_CA_BUNDLE_URL: a local CA file, served on loopback while the build runs.
The base and the wheelhouse are cached on the host under a key of what went into them
(the recipe; the lock and the target), so a later build, in this engine or a new one,
makes neither again.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import threading
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cloud_phoenix import exitcodes
from cloud_phoenix.containers.dockercli import ContainerError, DockerCli, Sink, run_logged

log = logging.getLogger(__name__)

BASE_SUITE = "bookworm"  # the Debian release of the Dockerfile's public base
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
BASE_REPOSITORY = "cloud-phoenix-base"
WHEELS_REPOSITORY = "cloud-phoenix-wheels"
# merged /usr without the usrmerge package (which brings Perl along), as Debian's images are.
MERGED_USR_HOOKS = Path("/usr/share/mmdebstrap/hooks/merged-usr")
# As in Debian's slim images: no manuals, translations or documents but the copyrights.
SLIM_PATHS = (
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
)
# The oldest glibc a manylinux wheel names (manylinux1 is glibc 2.5).
_OLDEST_GLIBC_MINOR = 5
CA_BUNDLE_NAME = "rds-global-bundle.pem"


def default_cache() -> Path:
    """$XDG_CACHE_HOME/cloud-phoenix, else ~/.cache/cloud-phoenix: outside any checkout."""
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "cloud-phoenix"


def content_key(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()[:16]


def base_recipe() -> list[str]:
    """mmdebstrap's arguments but the output: a minimal Debian with its Python."""
    recipe = [
        "--variant=minbase",
        "--format=tar",
        f"--include={','.join(BASE_PACKAGES)}",
        '--aptopt=APT::Install-Recommends "false"',
        *(f"--dpkgopt={option}" for option in SLIM_PATHS),
    ]
    if MERGED_USR_HOOKS.is_dir():
        recipe.append(f"--hook-dir={MERGED_USR_HOOKS}")
    return [*recipe, BASE_SUITE]


@dataclass(frozen=True)
class PythonTarget:
    """The interpreter and platform of a base image, which the wheels must fit."""

    version: str  # "3.11"
    glibc: str  # "2.36"
    machine: str  # "x86_64"

    def pip_arguments(self) -> list[str]:
        """`pip download` options for binary wheels that run on this target."""
        major, minor = (int(n) for n in self.glibc.split(".")[:2])
        platforms = [
            f"--platform=manylinux_{major}_{m}_{self.machine}"
            for m in range(minor, _OLDEST_GLIBC_MINOR - 1, -1)
        ]
        abi = "cp" + self.version.replace(".", "")
        return [
            "--only-binary=:all:",
            f"--python-version={self.version}",
            "--implementation=cp",
            f"--abi={abi}",
            *platforms,
        ]


@dataclass(frozen=True)
class BuildResult:
    """An image built: its tag, how long `docker build` took and its size in bytes."""

    tag: str
    seconds: float
    size: int


class ImageBuilder:
    """Builds the image of `repo` in the engine `docker` talks to; `sink` gets the progress."""

    def __init__(
        self, docker: DockerCli, repo: Path, cache: Path | None = None, sink: Sink | None = None
    ) -> None:
        self.docker = docker
        self.repo = repo
        self.cache = cache if cache is not None else default_cache()
        self.sink = sink

    def build_offline(self, tag: str, rds_ca_bundle: Path) -> BuildResult:
        """The Dockerfile built with no registry: the Debian base, the wheelhouse and a
        local RDS CA file (here a stand-in: the real bundle comes from AWS)."""
        base = self.base()
        return self.build(tag, base=base, wheels=self.wheels(base), rds_ca_bundle=rds_ca_bundle)

    def build(
        self,
        tag: str,
        *,
        base: str | None = None,
        wheels: str | None = None,
        rds_ca_bundle: Path | None = None,
    ) -> BuildResult:
        """`docker build` of the repository's Dockerfile; None keeps the Dockerfile's default."""
        build_args = {"BASE_IMAGE": base, "WHEELS": wheels, "REVISION": self._revision()}
        command = ["build", "--progress=plain", f"--tag={tag}"]
        # An engine without a bridge network (a private one) gives RUN steps the host's;
        # so does a CA file served on loopback, which only the host's network reaches.
        if rds_ca_bundle is not None or not self._has_bridge():
            command.append("--network=host")
        with served_file(rds_ca_bundle) as ca_url:
            build_args["RDS_CA_BUNDLE_URL"] = ca_url
            for name, value in build_args.items():
                if value is not None:
                    command.append(f"--build-arg={name}={value}")
            seconds = self.docker.stream(
                *command, str(self.repo), what=f"docker build {tag}", sink=self.sink
            )
        result = BuildResult(tag, seconds, self.docker.image_size(tag))
        log.info("%s: built in %.0f s, %.0f MB", tag, seconds, result.size / 1e6)
        return result

    def base(self) -> str:
        """The Debian base image in the engine, from the cached tar (made if missing)."""
        recipe = base_recipe()
        key = content_key(*(part.encode() for part in recipe))
        tag = f"{BASE_REPOSITORY}:{key}"
        if self.docker.has_image(tag):
            return tag
        tar = self.cache / f"base-{key}.tar"
        with _locked(tar):
            if not tar.exists():
                mmdebstrap = shutil.which("mmdebstrap")
                if mmdebstrap is None:
                    raise ContainerError(
                        "mmdebstrap is not installed (scripts/bootstrap --docker installs it)",
                        exitcodes.UNAVAILABLE,
                    )
                partial = tar.with_name(f".{tar.stem}.{os.getpid()}.tar")
                try:
                    run_logged(
                        [mmdebstrap, *recipe, str(partial)],
                        "base image from Debian packages (mmdebstrap, about a minute)",
                        sink=self.sink,
                        timeout=900,
                    )
                    partial.replace(tar)
                finally:
                    partial.unlink(missing_ok=True)
        self.docker.stream("import", str(tar), tag, what=f"docker import {tag}", sink=self.sink)
        return tag

    def wheels(self, base: str) -> str:
        """An image of the wheels the build installs, fit for `base`'s Python and platform."""
        target = self.target(base)
        pyproject = (self.repo / "pyproject.toml").read_bytes()
        lock = (self.repo / "requirements.lock").read_bytes()
        options = target.pip_arguments()
        key = content_key(pyproject, lock, *(option.encode() for option in options))
        tag = f"{WHEELS_REPOSITORY}:{key}"
        if self.docker.has_image(tag):
            return tag
        tar = self.cache / f"wheels-{key}.tar"
        with _locked(tar):
            if not tar.exists():
                self._download_wheels(pyproject, options, tar)
        self.docker.stream("import", str(tar), tag, what=f"docker import {tag}", sink=self.sink)
        return tag

    def target(self, base: str) -> PythonTarget:
        probe = (
            "import platform, sys; "
            "print('%d.%d' % sys.version_info[:2], platform.libc_ver()[1], platform.machine())"
        )
        done = self.docker.run("run", "--rm", "--network=none", base, "python3", "-c", probe)
        version, glibc, machine = done.stdout.split()
        return PythonTarget(version, glibc, machine)

    def _download_wheels(self, pyproject: bytes, options: list[str], tar: Path) -> None:
        """`pip download` of the runtime dependencies (the lock as constraints) and of the
        build backend into a folder, then a tar of it for `docker import`."""
        project = tomllib.loads(pyproject.decode())
        wanted = [*project["project"]["dependencies"], *project["build-system"]["requires"]]
        folder = tar.with_name(f".{tar.stem}.{os.getpid()}")
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        try:
            requirements = folder / "requirements.txt"
            requirements.write_text("\n".join(wanted) + "\n")
            run_logged(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "download",
                    "--disable-pip-version-check",
                    f"--dest={folder / 'wheels'}",
                    *options,
                    f"--requirement={requirements}",
                    f"--constraint={self.repo / 'requirements.lock'}",
                ],
                "wheelhouse (pip download)",
                sink=self.sink,
                timeout=900,
            )
            partial = folder / "wheels.tar"
            with tarfile.open(partial, "w") as archive:
                for wheel in sorted((folder / "wheels").iterdir()):
                    archive.add(wheel, arcname=wheel.name, filter=_plain)
            partial.replace(tar)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def _has_bridge(self) -> bool:
        found = self.docker.run("network", "ls", "--filter=name=^bridge$", "--format={{.Name}}")
        return found.stdout.strip() == "bridge"

    def _revision(self) -> str | None:
        """The checkout's commit, for the image's revision label (None: not a git checkout)."""
        try:
            done = subprocess.run(
                ["git", "-C", str(self.repo), "rev-parse", "HEAD"],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
        except OSError:
            return None
        return done.stdout.strip() if done.returncode == 0 else None


def _plain(info: tarfile.TarInfo) -> tarfile.TarInfo:
    """Owner root, mode 0644: the wheels are only read."""
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    info.mode = 0o644
    return info


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock beside `path`: two builds at once make a cache entry once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f"{path.name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


class _OneFile(BaseHTTPRequestHandler):
    """Answers GET /<name> with one file's bytes, anything else with 404."""

    body = b""

    def do_GET(self) -> None:
        found = self.path == f"/{CA_BUNDLE_NAME}"
        self.send_response(200 if found else 404)
        self.send_header("Content-Length", str(len(self.body) if found else 0))
        self.end_headers()
        if found:
            self.wfile.write(self.body)

    def log_message(self, format: str, *args: object) -> None:
        log.debug("CA file server: " + format, *args)


@contextmanager
def served_file(path: Path | None) -> Iterator[str | None]:
    """The file at `path` on a loopback URL while the block runs (None: nothing to serve)."""
    if path is None:
        yield None
        return
    try:
        body = path.read_bytes()
    except OSError as exc:
        raise ContainerError(f"cannot read the CA file {path}: {exc}", exitcodes.CONFIG) from None
    handler = type("CaFile", (_OneFile,), {"body": body})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="ca-file-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/{CA_BUNDLE_NAME}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
