"""Replicas follow the traffic: the rate at the edge, the project's pure decision
(`stack.autoscale.decide`), and the service's replica count set through the Docker API.

A thin shell, as the one-host stack's: it reads, calls `decide`, and applies the result.
It applies the desired count every tick, not only when the decision changes, because an
operator's `docker service scale` or swarm's own rollback (which restores the previous
spec, replica count included) can change it behind the scaler's back. The label
cloud-phoenix.autoscale=off on the service pauses it: the count is then the operator's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from cloud_phoenix.notify.events import EventLog
from cloud_phoenix.stack import autoscale
from cloud_phoenix.stack.edge.stats import EdgeStats, EdgeStatsError
from cloud_phoenix.swarm.api import DockerApi, DockerApiError
from cloud_phoenix.swarm.stackfile import AUTOSCALE_LABEL

log = logging.getLogger(__name__)


class ReplicaScaler:
    """Sets `service`'s replicas to what the edge's request rate asks for."""

    def __init__(
        self,
        api: DockerApi,
        service: str,
        stats: EdgeStats,
        policy: autoscale.ScalePolicy,
        events: EventLog,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api = api
        self.service = service
        self.stats = stats
        self.policy = policy
        self.events = events
        self.clock = clock
        self.state: autoscale.ScaleState | None = None  # known once the service is read
        self.applied: int | None = None  # the replicas the service was last seen or set at
        self._warned = False

    def tick(self) -> None:
        """One second's work: read the rate, decide, and set the replicas if they differ."""
        now = self.clock()
        try:
            service = self.api.service(self.service)
        except DockerApiError as exc:
            self._warn("cannot read the service %s: %s", self.service, exc)
            return
        current = service.replicas
        if service.labels.get(AUTOSCALE_LABEL, "").lower() == "off":
            if self.state is not None:
                self.events.record(
                    "autoscale_paused",
                    f"{AUTOSCALE_LABEL}=off on {self.service}: {current} replicas as set",
                    {"service": self.service, "replicas": current},
                )
            self.state = None  # resumed from the count it finds then
            return
        if self.state is None:
            self.state = self._resume(now, current)
        try:
            rate: float | None = self.stats.request_rate()
        except EdgeStatsError as exc:
            log.debug("no rate from the edge: %s", exc)
            rate = None
        before = self.state.desired
        decision = autoscale.decide(now, rate, self.state, self.policy)
        self.state = decision.state
        desired = decision.state.desired
        if decision.changed:
            kind = "scaled_out" if desired > before else "scaled_in"
            data = {"service": self.service, "desired": desired, "rate_rps": rate}
            self.events.record(kind, decision.reason, data)
        if current != desired:
            try:
                self.api.scale(self.service, desired)
            except DockerApiError as exc:
                self._warn("cannot scale %s to %d: %s", self.service, desired, exc)
                return
            log.info("%s: %d -> %d replicas", self.service, current, desired)
        self.applied = desired
        self._warned = False

    def _resume(self, now: float, current: int) -> autoscale.ScaleState:
        """The service's count, within bounds, held for one window: an edge that restarts
        mid-peak neither drops the replicas at once nor forgets why they are there."""
        held = max(self.policy.min_workers, min(self.policy.max_workers, current))
        return autoscale.ScaleState(desired=held, history=((now, held),))

    def _warn(self, message: str, *args: object) -> None:
        """Once per outage, then at debug level: the engine may be away for a while."""
        log.log(logging.DEBUG if self._warned else logging.WARNING, message, *args)
        self._warned = True
