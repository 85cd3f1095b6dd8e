"""The cluster's edge, `phoenix swarm-edge`: HAProxy in front of every replica address, and
the replica autoscaler beside it, in one process on a swarm manager.

It binds PORT itself and hands the socket to HAProxy (`bind fd@N`), as `phoenix up` does,
so a restarted HAProxy never refuses a connection: clients wait in the backlog. HAProxy
checks 127.0.1.1 to 127.0.1.MAX (PHOENIX_MAX_REPLICAS) and retries a request whose replica
died on another one, with the one-host stack's rules (never /crash, only GET and HEAD).
The autoscaler reads the rate from HAProxy's admin socket and sets the app service's
replicas through the Docker API, so it runs as root beside the Docker socket; HAProxy,
which faces the clients, drops to the image's unprivileged user.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from types import FrameType

from cloud_phoenix import exitcodes
from cloud_phoenix.config import Settings
from cloud_phoenix.exitcodes import CannotStart
from cloud_phoenix.notify.events import EventLog
from cloud_phoenix.proc.child import Child, ChildSpec
from cloud_phoenix.stack import autoscale
from cloud_phoenix.stack.edge import haproxy
from cloud_phoenix.stack.edge.program import EdgeConfigError, check_config, command_line
from cloud_phoenix.stack.edge.stats import EdgeStats
from cloud_phoenix.stack.host import listen
from cloud_phoenix.store import LogStore, open_store
from cloud_phoenix.swarm.api import DockerApi
from cloud_phoenix.swarm.autoscaler import ReplicaScaler
from cloud_phoenix.swarm.stackfile import replica_addresses

log = logging.getLogger(__name__)

TICK = 1.0  # seconds: HAProxy's req_rate is a per-second figure
IMAGE_USER = 10001  # the image's unprivileged uid and gid (the Dockerfile's `phoenix`)


def edge_config(settings: Settings, edge_fd: int, as_root: bool) -> haproxy.EdgeConfig:
    """The one-host edge's configuration with every replica address as a server."""
    return haproxy.EdgeConfig(
        edge_fd=edge_fd,
        servers=replica_addresses(settings.max_replicas),
        stats_socket=settings.run_dir.resolve() / "edge.sock",
        served_by="phoenix-swarm-edge",
        hard_stop_after=f"{settings.graceful_timeout:g}s",
        run_as=IMAGE_USER if as_root else None,
    )


class SwarmEdge:
    """Runs HAProxy (restarted if it dies) and the autoscaler until SIGTERM or SIGINT."""

    def __init__(self, settings: Settings, api: DockerApi, haproxy_bin: str) -> None:
        if not settings.swarm_service:
            raise CannotStart(
                "PHOENIX_SWARM_SERVICE is not set: name the service whose replicas the edge "
                "scales (deploy/swarm/stack.yml sets it)",
                exitcodes.CONFIG,
            )
        self.settings = settings
        self.api = api
        self.haproxy_bin = haproxy_bin
        self.stopping = threading.Event()

    def prepare(self) -> None:
        """Listen on PORT, write and check HAProxy's configuration: CannotStart if not."""
        s = self.settings
        try:
            s.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CannotStart(
                f"cannot make {s.run_dir}: {exc.strerror}", exitcodes.CANTCREAT
            ) from None
        self.public = listen(s.host, s.port, "edge")
        config = edge_config(s, self.public.fileno(), os.geteuid() == 0)
        path = s.run_dir / "edge.cfg"
        try:
            path.write_text(haproxy.render(config))
            check_config(self.haproxy_bin, path, pass_fds=(self.public.fileno(),))
        except (OSError, EdgeConfigError) as exc:
            self.public.close()
            raise CannotStart(f"the edge cannot start: {exc}", exitcodes.CONFIG) from None
        env = {k: v for k, v in os.environ.items() if not k.startswith("DB_")}
        # Output to the edge's own stdout: `docker service logs` shows HAProxy's lines.
        spec = ChildSpec(
            "haproxy",
            command_line(self.haproxy_bin, path),
            env,
            pass_fds=(self.public.fileno(),),
            stop_signal=signal.SIGUSR1,  # soft stop: requests in flight finish
        )
        self.haproxy = Child(spec)
        self.store: LogStore = open_store(s.db_url)
        self.events = EventLog(self.store)
        policy = autoscale.ScalePolicy(
            s.min_replicas, s.max_replicas, s.scale_rps, s.scale_in_window, unit="replicas"
        )
        stats = EdgeStats(config.stats_socket)
        self.scaler = ReplicaScaler(self.api, s.swarm_service, stats, policy, self.events)
        log.info(
            "edge on %s:%d in front of %d replica addresses; scaling %s within %d-%d",
            s.host,
            s.port,
            len(config.servers),
            s.swarm_service,
            s.min_replicas,
            s.max_replicas,
        )

    def run(self) -> int:
        """Until a stop signal; returns the exit code."""
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._stop)
        try:
            self.haproxy.start(time.monotonic())
            while not self.stopping.is_set():
                self._keep_haproxy(time.monotonic())
                self.scaler.tick()
                self.events.flush()
                self.stopping.wait(TICK)
        finally:
            self.haproxy.stop(self.settings.graceful_timeout)
            self.public.close()
            self.events.flush()
            self.store.close()
        return exitcodes.OK

    def _keep_haproxy(self, now: float) -> None:
        code = self.haproxy.reap(now)
        if code is not None:
            log.warning("HAProxy exited with %d: restarting it (clients wait meanwhile)", code)
        if not self.haproxy.running() and now >= self.haproxy.next_start:
            self.haproxy.start(now)

    def _stop(self, signum: int, _frame: FrameType | None) -> None:
        log.info("%s: stopping the edge", signal.Signals(signum).name)
        self.stopping.set()
