"""`scripts/swarm up` and `down`: the stack of deploy/swarm/stack.yml on this machine, and
everything it needs, made in order and removed in reverse.

`up` writes what it made into the state folder's state.json as it goes (mode 0600: it holds
the database URL), so that `down` removes exactly that, also after an `up` that failed or
was killed half-way; a failed `up` removes what it made before it reports the failure.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from cloud_phoenix import exitcodes
from cloud_phoenix.containers.dockercli import ContainerError, DockerCli, find_cli
from cloud_phoenix.containers.engine import PrivateEngine
from cloud_phoenix.containers.image import ImageBuilder
from cloud_phoenix.exitcodes import CannotStart
from cloud_phoenix.swarm import cluster
from cloud_phoenix.swarm.api import DEFAULT_HOST, DockerApi, DockerApiError
from cloud_phoenix.swarm.postgres import LocalPostgres
from cloud_phoenix.swarm.stackfile import (
    APP,
    DEFAULT_STACK,
    DRILL_IMAGE_LABEL,
    STACK_FILE,
    service_name,
)

log = logging.getLogger(__name__)

STATE_FILE = "state.json"
Progress = Callable[[str], None]


@dataclass(frozen=True)
class UpOptions:
    """What `scripts/swarm up` was asked for."""

    repo: Path  # the checkout: its Dockerfile and deploy/swarm/stack.yml
    port: int = 8080
    stack: str = DEFAULT_STACK
    image: str = "cloud-phoenix:local"
    build: bool = True  # False: `image` is there already
    offline: bool = False
    rds_ca_bundle: Path | None = None
    db_url: str = ""  # empty: a PostgreSQL of its own
    engine: str = "auto"  # "auto", "private" or "machine"
    min_replicas: int = 2
    max_replicas: int = 8
    scale_rps: float = 10.0
    scale_in_window: float = 60.0
    timeout: float = 300.0  # for the replicas and the edge to answer


@dataclass
class SwarmState:
    """What `up` made, for `down` and the drills (state.json)."""

    stack: str
    port: int
    docker_host: str = ""
    engine: str = ""  # a private engine's folder, if `up` started one
    swarm_made: bool = False
    secret: str = ""
    postgres: str = ""  # a PostgreSQL folder, if `up` made one
    postgres_port: int = 0
    db_url: str = ""
    image: str = ""
    built: bool = False  # `up` built `image` (down removes it from the machine's Docker)
    deployed: bool = False
    variables: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def app_service(self) -> str:
        return service_name(self.stack, APP)


def state_path(folder: Path) -> Path:
    return folder / STATE_FILE


def load_state(folder: Path) -> SwarmState | None:
    """The state `up` wrote in `folder`, or None if there is none."""
    try:
        data = json.loads(state_path(folder).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise CannotStart(
            f"cannot read {state_path(folder)}: {exc}; remove what it names by hand",
            exitcodes.DATAERR,
        ) from None
    return SwarmState(**data)


def save_state(folder: Path, state: SwarmState) -> None:
    path = state_path(folder)
    partial = path.with_suffix(".tmp")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(asdict(state), out, indent=2)
    partial.replace(path)


def _quiet(_line: str) -> None:
    return None


class SwarmUp:
    """`up()` and `down()` for one state folder."""

    def __init__(
        self, folder: Path, progress: Progress = _quiet, build_output: Progress = _quiet
    ) -> None:
        self.folder = folder.absolute()
        self.progress = progress
        self.build_output = build_output

    # -- up ---------------------------------------------------------------------------------

    def up(self, options: UpOptions) -> SwarmState:
        """Make everything, in order; on any failure remove what was made, then raise."""
        if (found := load_state(self.folder)) is not None:
            raise CannotStart(
                f"a swarm stack made here runs already ({found.url}): `scripts/swarm down` "
                "first, or give another state folder",
                exitcodes.TEMPFAIL,
            )
        if options.build and options.offline and options.rds_ca_bundle is None:
            raise CannotStart(
                "an offline build cannot fetch the RDS CA bundle from AWS: give a local copy "
                "with --rds-ca-bundle FILE",
                exitcodes.USAGE,
            )
        _check_port_free(options.port)
        stack_file = options.repo / STACK_FILE
        if not stack_file.is_file():
            raise CannotStart(f"no {STACK_FILE} in {options.repo}", exitcodes.CONFIG)
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        state = SwarmState(stack=options.stack, port=options.port)
        save_state(self.folder, state)
        try:
            self._up(options, state, stack_file)
        except BaseException:
            self.progress("up failed: removing what it made")
            for problem in self.down():
                self.progress(f"  not removed: {problem}")
            raise
        return state

    def _up(self, options: UpOptions, state: SwarmState, stack_file: Path) -> None:
        docker = self._docker(options, state)
        api = DockerApi(state.docker_host)
        if options.build:
            self.progress(f"building {options.image} from {options.repo / 'Dockerfile'}")
            builder = ImageBuilder(docker, options.repo, sink=self.build_output)
            if options.offline and options.rds_ca_bundle is not None:
                built = builder.build_offline(options.image, options.rds_ca_bundle)
            else:
                built = builder.build(options.image, rds_ca_bundle=options.rds_ca_bundle)
            self.progress(f"built {built.tag} in {built.seconds:.0f} s, {built.size / 1e6:.0f} MB")
            state.built = True
        elif not api.image_exists(options.image):
            raise CannotStart(f"no image {options.image} in the engine", exitcodes.CONFIG)
        state.image = options.image
        db_url = options.db_url or self._postgres(state)
        state.db_url = db_url
        save_state(self.folder, state)
        self.progress("making a single-node swarm on 127.0.0.1 (no ingress, no bridge)")
        state.swarm_made = cluster.init_swarm(api)
        save_state(self.folder, state)
        state.secret = f"{options.stack}_db_url"
        api.secret_create(state.secret, db_url.encode(), {"cloud-phoenix": options.stack})
        save_state(self.folder, state)
        state.variables = {
            "PHOENIX_IMAGE": options.image,
            "PORT": str(options.port),
            "PHOENIX_MIN_REPLICAS": str(options.min_replicas),
            "PHOENIX_MAX_REPLICAS": str(options.max_replicas),
            "PHOENIX_SCALE_RPS": f"{options.scale_rps:g}",
            "PHOENIX_SCALE_IN_WINDOW": f"{options.scale_in_window:g}",
            "PHOENIX_DB_SECRET": state.secret,
            "DOCKER_SOCKET": state.docker_host.removeprefix("unix://"),
        }
        self.progress(f"deploying {STACK_FILE} as stack {options.stack}")
        state.deployed = True  # before: a deploy that fails half-way leaves services
        save_state(self.folder, state)
        cluster.deploy_stack(docker, stack_file, options.stack, state.variables)
        self._await(api, state, options)

    def _docker(self, options: UpOptions, state: SwarmState) -> DockerCli:
        """The machine's Docker if it answers (and `engine` allows), else a private one."""
        machine = os.environ.get("DOCKER_HOST") or DEFAULT_HOST
        use_machine = options.engine == "machine" or (
            options.engine == "auto" and machine.startswith("unix://") and DockerApi(machine).ping()
        )
        if use_machine:
            if not DockerApi(machine).ping():
                raise CannotStart(f"no Docker Engine answers at {machine}", exitcodes.UNAVAILABLE)
            self.progress(f"using the Docker Engine at {machine}")
            state.docker_host = machine
            save_state(self.folder, state)
            return DockerCli(find_cli(), machine)
        engine = PrivateEngine(self.folder / "engine")
        self.progress(f"starting a private Docker Engine in {engine.paths.folder}")
        state.engine = str(engine.paths.folder)
        state.docker_host = engine.paths.host
        save_state(self.folder, state)
        engine.start()
        return engine.docker()

    def _postgres(self, state: SwarmState) -> str:
        # PostgreSQL runs as nobody under root, who may not reach the state folder's parents.
        folder = (
            Path(tempfile.mkdtemp(prefix="phoenix-swarm-pg-"))
            if os.geteuid() == 0
            else self.folder / "postgres"
        )
        state.postgres = str(folder)
        save_state(self.folder, state)
        self.progress(f"starting PostgreSQL (data in {folder})")
        server = LocalPostgres(folder)
        server.create()
        state.postgres_port = server.port
        return server.url

    def _await(self, api: DockerApi, state: SwarmState, options: UpOptions) -> None:
        """Until `min_replicas` replicas run (healthy) and the edge answers through them."""
        self.progress(f"waiting for {options.min_replicas} healthy replicas and the edge")
        deadline = time.monotonic() + options.timeout
        shown = -1
        while True:
            tasks = api.tasks(state.app_service)
            running = sum(1 for t in tasks if t.state == "running" and t.desired_state == "running")
            if running != shown:
                self.progress(f"  {running} of {options.min_replicas} replicas running")
                shown = running
            if running >= options.min_replicas and _answers(f"{state.url}/health"):
                return
            if time.monotonic() > deadline:
                errors = sorted({f"{t.state}: {t.error}" for t in tasks if t.error})
                raise CannotStart(
                    f"the stack did not answer at {state.url} within {options.timeout:.0f} s "
                    f"({running} replicas running; {'; '.join(errors) or 'no task error'}): "
                    f"docker service ps/logs {state.app_service} tell more",
                    exitcodes.UNAVAILABLE,
                )
            time.sleep(1.0)

    # -- down -------------------------------------------------------------------------------

    def down(self) -> list[str]:
        """Remove what state.json names, in reverse order; returns what could not be
        removed (each with its reason). Every step runs even when one before failed."""
        state = load_state(self.folder)
        if state is None:
            return []
        problems: list[str] = []
        api = DockerApi(state.docker_host) if state.docker_host else None
        if api is not None and api.ping():
            if state.deployed:
                self._step(problems, f"stack {state.stack}", lambda: self._remove_stack(api, state))
            if state.secret:
                self._step(problems, f"secret {state.secret}", lambda: _remove_secret(api, state))
            if not state.engine:  # a private engine goes with all its images
                self._step(problems, "the images", lambda: self._remove_images(api, state))
            if state.swarm_made:
                self._step(problems, "the swarm", lambda: cluster.leave_swarm(api))
        if state.engine:
            self.progress(f"removing the private Docker Engine in {state.engine}")
            self._step(problems, "the engine", PrivateEngine(Path(state.engine)).stop)
        if state.postgres:
            self.progress(f"stopping PostgreSQL and removing {state.postgres}")
            server = LocalPostgres(Path(state.postgres), state.postgres_port)
            self._step(problems, "PostgreSQL", server.destroy)
        if not problems:
            state_path(self.folder).unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                self.folder.rmdir()  # only if empty: it may be the user's own folder
        else:
            save_state(self.folder, replace(state))
        return problems

    def _remove_stack(self, api: DockerApi, state: SwarmState) -> None:
        self.progress(f"removing stack {state.stack} (replicas drain and collect first)")
        cluster.remove_stack(api, state.stack, progress=self.progress)

    def _remove_images(self, api: DockerApi, state: SwarmState) -> None:
        """The drills' images, and the image `up` built."""
        made = api.images(DRILL_IMAGE_LABEL)
        if state.built and api.image_exists(state.image):
            made.append(state.image)
        for image in made:
            self.progress(f"removing image {image[:19]}")
            api.image_remove(image)

    def _step(self, problems: list[str], what: str, action: Callable[[], None]) -> None:
        try:
            action()
        except (DockerApiError, ContainerError, CannotStart, OSError) as exc:
            problems.append(f"{what}: {exc}")


def _remove_secret(api: DockerApi, state: SwarmState) -> None:
    try:
        api.secret_remove(state.secret)
    except DockerApiError as exc:
        if exc.status != 404:
            raise


def _check_port_free(port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            raise CannotStart(
                f"cannot use 127.0.0.1:{port} for the edge: {exc.strerror}; set PORT to a "
                "free port",
                exitcodes.TEMPFAIL,
            ) from None


def _answers(url: str) -> bool:
    """Whether GET `url` (on loopback: no proxy from the environment) answers 200."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False
