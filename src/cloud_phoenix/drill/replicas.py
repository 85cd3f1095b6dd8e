"""A swarm stack as the cluster drills see it: its edge, the app service's replicas through
the Docker API, and a sampler of how many serve against how many are desired."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cloud_phoenix.swarm.api import DockerApi, DockerApiError, Task
from cloud_phoenix.swarm.stackfile import AUTOSCALE_LABEL
from cloud_phoenix.swarm.up import SwarmState, load_state

Progress = Callable[[str], None]


def _quiet(_message: str) -> None:
    return None


@dataclass(frozen=True)
class Cluster:
    """A deployed stack: the edge's URL, the engine, the replicas' service, the store."""

    url: str
    api: DockerApi
    service: str
    db_url: str
    scale_in_window: float
    min_replicas: int

    @classmethod
    def from_state(cls, state: SwarmState) -> Cluster:
        variables = state.variables
        return cls(
            url=state.url,
            api=DockerApi(state.docker_host),
            service=state.app_service,
            db_url=state.db_url,
            scale_in_window=float(variables.get("PHOENIX_SCALE_IN_WINDOW", "60")),
            min_replicas=int(variables.get("PHOENIX_MIN_REPLICAS", "2")),
        )

    @classmethod
    def from_folder(cls, folder: Path) -> Cluster:
        state = load_state(folder)
        if state is None or not state.deployed:
            raise DockerApiError(
                f"no swarm stack was made with the state folder {folder}: scripts/swarm up"
            )
        return cls.from_state(state)

    def serving(self) -> list[Task]:
        """The tasks that serve now: running (healthy) and meant to keep running."""
        return [
            t
            for t in self.api.tasks(self.service)
            if t.state == "running" and t.desired_state == "running"
        ]

    def serving_slots(self) -> int:
        """Slots with a task serving (a start-first update has two tasks in one slot)."""
        return len({t.slot for t in self.serving()})

    def pin(self, replicas: int, timeout: float = 120.0, progress: Progress = _quiet) -> None:
        """Pause the autoscaler (its label) and hold `replicas`, once they all serve."""
        service = self.api.service(self.service)
        spec = service.spec
        spec.setdefault("Labels", {})[AUTOSCALE_LABEL] = "off"
        spec["Mode"]["Replicated"]["Replicas"] = replicas
        self.api.update_service(service, spec)
        progress(f"autoscaler paused, {replicas} replicas held")
        self.await_serving(replicas, timeout)

    def unpin(self) -> None:
        """The autoscaler decides again (from the count it finds, held one window)."""
        service = self.api.service(self.service)
        spec = service.spec
        if (spec.get("Labels") or {}).pop(AUTOSCALE_LABEL, None) is not None:
            self.api.update_service(service, spec)

    def await_serving(self, replicas: int, timeout: float) -> float:
        """Seconds until exactly `replicas` slots serve and no update runs (AssertionError
        past `timeout`: a drill's own failure, not the engine's)."""
        started = time.monotonic()
        while True:
            serving = self.serving_slots()
            state = self.api.service(self.service).update_state
            if serving == replicas and state not in {"updating", "rollback_started"}:
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                raise AssertionError(
                    f"{self.service}: {serving} replicas serve, not {replicas}, after "
                    f"{timeout:.0f} s (update state {state or 'none'})"
                )
            time.sleep(0.25)

    def task_ids(self) -> set[str]:
        return {t.id for t in self.api.tasks(self.service)}

    def restarts(self) -> int:
        """Restarts of the serving containers themselves (swarm replaces a task instead, but
        a container restart would be one too)."""
        return sum(self.api.container_restarts(t.container) for t in self.serving())


@dataclass
class ReplicaSampler:
    """Samples (seconds, desired, serving) every `interval` while a drill runs."""

    cluster: Cluster
    interval: float = 0.25
    samples: list[tuple[float, int, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="replica-sampler", daemon=True)
        self.started = time.monotonic()

    def __enter__(self) -> ReplicaSampler:
        self.started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def now(self) -> float:
        return time.monotonic() - self.started

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                desired = self.cluster.api.service(self.cluster.service).replicas
                serving = self.cluster.serving_slots()
            except DockerApiError:
                serving = desired = -1
            if desired >= 0:
                self.samples.append((self.now(), desired, serving))
            self._stop.wait(self.interval)

    def longest_below_desired(self) -> float:
        """The longest spell, in seconds, with fewer replicas serving than desired."""
        longest = 0.0
        since: float | None = None
        for at, desired, serving in self.samples:
            if serving < desired:
                since = at if since is None else since
                longest = max(longest, at - since)
            else:
                since = None
        return longest

    def first(self, condition: Callable[[int, int], bool], after: float = 0.0) -> float | None:
        """Seconds of the first sample after `after` where condition(desired, serving)."""
        found = (at for at, d, s in self.samples if at >= after and condition(d, s))
        return next(found, None)
