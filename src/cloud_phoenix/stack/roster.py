"""The gunicorn master's workers as the supervisor sees them.

Pure bookkeeping, fed the worker pids the supervisor reads each tick: when each worker
started, which left on purpose (retired by a scale-in or a deploy) and which died, and how
long the stack ran with fewer workers than desired. No processes, no clock: `now` comes in.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class RosterChange:
    """What one update found: workers that died (not retired), and the length of a spell
    below the desired count that has just ended (None if none ended)."""

    died: tuple[int, ...] = ()
    ended_below_desired_s: float | None = None


@dataclass
class WorkerRoster:
    started: dict[int, float] = field(default_factory=dict)  # pid -> monotonic start
    retiring: int = 0  # workers told to leave (TTOU) that have not left yet
    deaths: int = 0
    below_since: float | None = None

    def retire(self) -> None:
        """One worker will leave on purpose (the master was sent TTOU)."""
        self.retiring += 1

    def replace(self, pids: list[int], now: float) -> None:
        """A new master (a restart or a deploy): its workers, none retiring."""
        self.started = dict.fromkeys(pids, now)
        self.retiring = 0

    def update(
        self, pids: set[int], master_running: bool, desired: int, now: float
    ) -> RosterChange:
        """Take the workers running now. A worker gone while the master runs and none was
        retiring died (gunicorn replaces it); gone with the master, it is the master's exit."""
        died = []
        for gone in sorted(set(self.started) - pids):
            del self.started[gone]
            if self.retiring > 0:
                self.retiring -= 1
            elif master_running:
                self.deaths += 1
                died.append(gone)
        for new in pids - set(self.started):
            self.started[new] = now
        ended = None
        if len(pids) < desired:
            if self.below_since is None:
                self.below_since = now
        elif self.below_since is not None:
            ended = round(now - self.below_since, 3)
            self.below_since = None
        return RosterChange(tuple(died), ended)
