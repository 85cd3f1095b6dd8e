"""`phoenix up`: the supervisor of the one-host stack.

It owns the listening sockets (the public edge and the workers' backend socket) and hands
them to its children, so a restarted child never refuses a connection: clients wait in the
backlog. Children: HAProxy (the edge), a gunicorn master (uvicorn workers running the app;
gunicorn respawns dead workers) and the collector. Like gunicorn's arbiter, signal handlers
only enqueue; the loop dispatches them, reaps children, restarts what died (with backoff),
reconciles the worker count with the autoscaler's desire, and writes the status.
`phoenix deploy` (SIGUSR2 and a request under run/deploy) starts a new gunicorn generation
beside the old one and swaps them once it is ready (see `stack/deploy`).
"""

from __future__ import annotations

import logging
import math
import os
import select
import shutil
import signal
import time
from collections import deque
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import psutil

from cloud_phoenix import exitcodes
from cloud_phoenix.backup import DailyBackups
from cloud_phoenix.collector.keeper import collector_spec, last_pass
from cloud_phoenix.config import Settings
from cloud_phoenix.cpuwatch.context import busiest_endpoints
from cloud_phoenix.cpuwatch.decide import CpuPolicy
from cloud_phoenix.cpuwatch.watch import CpuWatch
from cloud_phoenix.exitcodes import CannotStart
from cloud_phoenix.journal import format_time
from cloud_phoenix.logformat import formatter
from cloud_phoenix.notify.events import EventLog
from cloud_phoenix.notify.notice import Notice
from cloud_phoenix.notify.notifier import Notifier
from cloud_phoenix.proc.child import Child, ChildSpec
from cloud_phoenix.stack import autoscale
from cloud_phoenix.stack.deploy import (
    Deployer,
    Plan,
    mark_accepting,
    stop_accepting,
    take_requests,
)
from cloud_phoenix.stack.edge.program import find_haproxy
from cloud_phoenix.stack.edge.sockets import open_edge
from cloud_phoenix.stack.edge.stats import EdgeStats, EdgeStatsError, LifetimeTotal
from cloud_phoenix.stack.host import lock_home, prepare_home
from cloud_phoenix.stack.roster import WorkerRoster
from cloud_phoenix.stack.spec import (
    child_env,
    gunicorn_spec,
    haproxy_spec,
    log_path,
    relay,
)
from cloud_phoenix.stack.status import (
    Operations,
    StackStatus,
    children_status,
    workers_status,
    write_status,
)
from cloud_phoenix.store import Event, LogStore, open_store

log = logging.getLogger(__name__)

TICK = 0.1
USR2 = signal.SIGUSR2  # `phoenix deploy`: a request waits under run/deploy
GUNICORN_BOOT_ERRORS = {3, 4}  # gunicorn: a worker cannot boot / the app cannot be loaded


class Supervisor:
    """Runs the stack until SIGTERM or SIGINT; `run()` returns the exit code."""

    def __init__(self, settings: Settings, store: LogStore | None = None) -> None:
        self.settings = settings
        self.policy = autoscale.ScalePolicy(
            settings.min_workers, settings.max_workers, settings.scale_rps, settings.scale_in_window
        )
        self.scale = autoscale.initial_state(self.policy)
        self.gunicorn_workers = self.scale.desired  # what gunicorn has been told
        self.worker_app = settings.worker_app  # what it serves (`phoenix deploy --app`)
        self.store = store
        self.signals: deque[int] = deque()
        self.children: dict[str, Child] = {}
        self.events = EventLog(store)
        self.workers = WorkerRoster()
        self.edge_dropped_logs = LifetimeTotal()
        self.started = format_time(datetime.now(UTC))
        self.status = StackStatus(os.getpid(), settings.port, self.started)
        self.stopping = False
        self.exit_code = exitcodes.OK
        self._wake_r, self._wake_w = os.pipe()

    # -- start ------------------------------------------------------------------------------

    def prepare(self) -> None:
        """Everything that can refuse to start, before any child runs."""
        s = self.settings
        haproxy_bin = s.haproxy_bin or find_haproxy()
        if haproxy_bin is None or not os.access(haproxy_bin, os.X_OK):
            raise CannotStart(
                "HAProxy is not installed: install it with "
                "`apt-get install haproxy` (or run ./phoenix, which does)",
                exitcodes.UNAVAILABLE,
            )
        self.haproxy_bin: str = haproxy_bin
        prepare_home(s)
        self.home_lock = lock_home(s)
        self.metrics_dir = s.run_dir / "metrics"
        shutil.rmtree(self.metrics_dir, ignore_errors=True)  # figures of a previous run
        self.metrics_dir.mkdir()
        self.edge = open_edge(s, haproxy_bin)
        self.stats = EdgeStats(self.edge.config.stats_socket)
        if self.store is None:
            self.store = self.events.store = open_store(s.db_url)
        self.env = child_env(s, self.metrics_dir)
        specs = [
            collector_spec(
                self.env, log_path(s, "collector"), relay=relay(s, "collector", "error")
            ),
            self._gunicorn_spec(),
            haproxy_spec(
                s, self.env, haproxy_bin, self.edge.config_path, self.edge.public.fileno()
            ),
        ]
        self.children = {spec.name: Child(spec) for spec in specs}
        try:
            # Its events sink is the supervisor's own events queue: log, status, store.
            self.notifier = Notifier(s.notify_urls, events_sink=self._record)
        except ValueError as exc:
            raise CannotStart(f"PHOENIX_NOTIFY_URLS: {exc}", exitcodes.CONFIG) from None
        self.backups = DailyBackups(s, notify=self._notify_backup, record_event=self.event)
        self.cpu = CpuWatch(
            CpuPolicy(
                threshold=s.cpu_threshold, peak_seconds=s.cpu_peak_seconds, interval=s.cpu_interval
            ),
            self.notifier,
            stack_pids=self._stack_pids,
            endpoints=lambda since: busiest_endpoints(s.journal_dir, since),
            workers=lambda: len(self.workers.started),
        )
        # A master being stopped gets gunicorn's grace for its workers, then a little more.
        self.deployer = Deployer(s.run_dir, s.graceful_timeout + 5, self.event)

    # -- the loop ---------------------------------------------------------------------------

    def run(self) -> int:
        """Start the children and supervise them until asked to stop (after `prepare()`)."""
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD, USR2):
            signal.signal(signum, self._enqueue)
        mark_accepting(self.settings.run_dir, os.getpid())  # `phoenix deploy` may signal now
        now = time.monotonic()
        for name, child in self.children.items():
            if name == "haproxy" and self.settings.reuse_port:
                child.next_start = math.inf  # started by _serve_when_ready
                continue
            child.start(now)
        log.info(
            "phoenix up: edge on http://%s:%d, %d worker(s), store %s",
            self.settings.host,
            self.settings.port,
            self.gunicorn_workers,
            self.store.backend if self.store else "?",
        )
        self.event(
            "stack_started",
            f"stack started on port {self.settings.port}",
            {"port": self.settings.port, "workers": self.gunicorn_workers},
        )
        next_second = next_cpu = now
        try:
            while not self.stopping:
                self._wait(TICK)
                self._dispatch_signals()
                if self.stopping:
                    break  # a child that exits from now on is stopping, not to be restarted
                now = time.monotonic()
                self._reap_and_restart(now)
                self._watch_workers(now)
                self._serve_when_ready(now)
                self.deployer.tick(self._promote)
                self._apply_desired()
                if now >= next_second:
                    next_second = now + 1.0
                    self._take_deploys()  # should a SIGUSR2 have been coalesced
                    self._autoscale(now)
                    self._count_dropped_edge_logs()
                    self.backups.tick()
                    self.events.flush()
                if now >= next_cpu:
                    next_cpu = now + self.settings.cpu_interval
                    self.cpu.tick()
                self._write_status()  # every tick: drills read it to the tenth of a second
        finally:
            self._shutdown()
        return self.exit_code

    def _enqueue(self, signum: int, _frame: object) -> None:
        self.signals.append(signum)
        os.write(self._wake_w, b"!")

    def _wait(self, timeout: float) -> None:
        ready, _, _ = select.select([self._wake_r], [], [], timeout)
        if ready:
            os.read(self._wake_r, 4096)

    def _dispatch_signals(self) -> None:
        while self.signals:
            signum = self.signals.popleft()
            if signum in (signal.SIGTERM, signal.SIGINT):
                log.info("%s: stopping the stack", signal.Signals(signum).name)
                self.stopping = True
            elif signum == signal.SIGHUP:
                log.info("SIGHUP: reloading the workers (gunicorn HUP)")
                self.children["gunicorn"].signal(signal.SIGHUP)
            elif signum == USR2:
                self._take_deploys()

    def _reap_and_restart(self, now: float) -> None:
        for name, child in self.children.items():
            code = child.reap(now)
            if code is not None:
                if name == "gunicorn" and code in GUNICORN_BOOT_ERRORS and child.failures >= 3:
                    log.error(
                        "gunicorn cannot load the application (exit %d, %d times): "
                        "stopping; see %s",
                        code,
                        child.failures,
                        self.settings.logs_dir,
                    )
                    self.exit_code = exitcodes.SOFTWARE
                    self.stopping = True
                    return
                log.warning(
                    "%s exited with %s; restarting in %.2f s",
                    name,
                    code,
                    max(0.0, child.next_start - now),
                )
                self.event(
                    "child_restarted",
                    f"{name} exited ({code}) and is restarted",
                    {"child": name, "exit_code": code, "restarts": child.restarts + 1},
                )
            if child.process is None and now >= child.next_start:
                if name == "gunicorn":
                    child.spec = self._gunicorn_spec()  # with the count desired now
                    self.workers.replace([], now)
                child.start(now)

    def _watch_workers(self, now: float) -> None:
        master = self.children["gunicorn"]
        running = master.running()
        pids = set(worker_pids(master.pid)) if running else set()
        change = self.workers.update(pids, running, self.scale.desired, now)
        for gone in change.died:
            self.event(
                "worker_restarted", f"worker {gone} died; gunicorn replaces it", {"pid": gone}
            )
        below = change.ended_below_desired_s
        if below is not None:
            self.status.longest_below_desired_s = max(self.status.longest_below_desired_s, below)
            self.status.below_desired.append((format_time(datetime.now(UTC)), below))
            del self.status.below_desired[:-100]

    def _serve_when_ready(self, now: float) -> None:
        """With PHOENIX_REUSE_PORT, HAProxy (which listens on the shared port) starts only
        once a worker runs, the application loaded: while another stack serves the same
        address (the old task of a start-first update), the kernel gives this one no
        connection it cannot serve yet, and none at all if the application never loads."""
        edge = self.children["haproxy"]
        if edge.next_start == math.inf and self.workers.started:
            edge.next_start = now

    def _autoscale(self, now: float) -> None:
        try:
            rate: float | None = self.stats.request_rate()
        except EdgeStatsError:
            rate = None
        self.status.rate_rps = rate
        decision = autoscale.decide(now, rate, self.scale, self.policy)
        self.scale = decision.state
        if decision.changed:
            self.status.scale_events += 1
            kind = "scaled_out" if self.scale.desired > self.gunicorn_workers else "scaled_in"
            self.event(kind, decision.reason, {"desired": self.scale.desired, "rate_rps": rate})

    def _count_dropped_edge_logs(self) -> None:
        """HAProxy drops a log line rather than wait for its output: count them, and say so."""
        try:
            dropped = self.edge_dropped_logs.update(self.stats.dropped_logs())
        except EdgeStatsError:
            return  # the edge is restarting: the next second's sample counts them
        if dropped:
            log.warning(
                "the edge dropped %d log lines (%d since the stack started): its output "
                "could not keep up (the application's journal does not depend on it)",
                dropped,
                self.edge_dropped_logs.total,
            )

    def _apply_desired(self) -> None:
        """One place changes the worker count: TTIN/TTOU to the gunicorn master, one signal a
        tick, because signals sent together coalesce and gunicorn queues at most five."""
        master = self.children["gunicorn"]
        if not master.running() or self.deployer.starting:  # the new master has the old count
            return
        if self.gunicorn_workers < self.scale.desired:
            master.signal(signal.SIGTTIN)
            self.gunicorn_workers += 1
        elif self.gunicorn_workers > self.scale.desired:
            master.signal(signal.SIGTTOU)
            self.gunicorn_workers -= 1
            self.workers.retire()

    # -- deploys ----------------------------------------------------------------------------

    def _take_deploys(self) -> None:
        try:
            requests, refused = take_requests(self.settings.run_dir)
        except OSError as exc:
            log.warning("cannot read the deploy requests: %s", exc)
            return
        for request_id, reason in refused:
            self.deployer.refuse(request_id, reason)
        for request in requests:
            if self.stopping:
                self.deployer.refuse(request.id, "the stack is stopping")
                continue
            app = request.app or self.settings.worker_app
            self.deployer.begin(request, app, self._gunicorn_spec(app), self.gunicorn_workers)

    def _promote(self, new: Child, plan: Plan) -> Child | None:
        """The ready generation becomes the supervised gunicorn; returns the old master to
        drain. Its workers leave quietly: they are retired, not crashed."""
        old = self.children["gunicorn"]
        new.starts = max(old.starts, 1)  # a deploy is not a restart: the count carries over
        self.children["gunicorn"] = new
        self.worker_app = plan.app
        self.gunicorn_workers = plan.workers
        self.workers.replace(worker_pids(new.pid), time.monotonic())
        return old if old.running() else None

    # -- events and status ------------------------------------------------------------------

    def event(self, kind: str, message: str, data: dict[str, Any]) -> None:
        """Into the server log, the status, and (soon after) the store's `events`."""
        self.events.record(kind, message, data)

    def _gunicorn_spec(self, app: str | None = None) -> ChildSpec:
        settings = replace(self.settings, worker_app=app or self.worker_app)
        return gunicorn_spec(settings, self.env, self.edge.backend.fileno(), self.gunicorn_workers)

    def _record(self, event: Event) -> None:
        """The notifier's events sink (called from its thread): deque appends are atomic."""
        self.event(event.kind, event.message, event.data)

    def _notify_backup(self, title: str, body: str) -> None:
        # The backup runner records its own event: the channels only.
        self.notifier.send(Notice("backup_failed", title, body), record=False)

    def _stack_pids(self) -> list[tuple[str, int]]:
        pids = [(name, child.pid) for name, child in self.children.items() if child.pid]
        pids += self.deployer.processes()
        return [*pids, *(("worker", pid) for pid in self.workers.started)]

    def _write_status(self) -> None:
        now = time.monotonic()
        status = self.status
        status.updated = format_time(datetime.now(UTC))
        status.workers = workers_status(self.scale.desired, self.workers.started, now)
        status.children = children_status(self.children, now)
        status.restarts = self.workers.deaths + sum(c.restarts for c in self.children.values())
        status.operations = Operations(
            cpu_peaks=self.cpu.peaks,
            cpu_in_peak=self.cpu.in_peak,
            notifications_sent=self.notifier.sent,
            notifications_failed=self.notifier.failed,
            backups_failed=self.backups.failures,
            edge_dropped_logs=self.edge_dropped_logs.total,
        )
        status.events = list(self.events.recent)
        status.stopping = self.stopping
        try:
            write_status(self.settings.run_dir, status)
        except OSError as exc:
            log.warning("cannot write the status file: %s", exc)

    # -- stop -------------------------------------------------------------------------------

    def _shutdown(self) -> None:
        """Edge first (stop accepting, finish in-flight), then workers, then the collector,
        then its last pass here."""
        self.stopping = True
        stop_accepting(self.settings.run_dir)
        self._write_status()
        self.edge.public.close()  # new connections are refused from now on, not left in a backlog
        grace = self.settings.graceful_timeout
        for name in ("haproxy", "gunicorn", "collector"):
            child = self.children.get(name)
            if child is not None and child.process is not None:
                code = child.stop(grace)
                log.info("%s stopped (%s)", name, code)
            if name == "gunicorn":
                self.deployer.close(grace)  # a master being started or drained
        # What no collector collected: it was waiting to be restarted, or a Ctrl-C (which
        # reaches the whole process group) made it pass before the workers had stopped.
        last_pass(self.settings)
        self.edge.backend.close()
        self.backups.join(30)
        self.event("stack_stopped", "stack stopped", {"exit_code": self.exit_code})
        self.notifier.close(5)
        self.events.flush()
        if self.store is not None:
            self.store.close()
        (self.settings.run_dir / "status.json").unlink(missing_ok=True)


def worker_pids(master: int | None) -> list[int]:
    """The workers of a gunicorn master: its children (none if it is gone)."""
    try:
        return [p.pid for p in psutil.Process(master).children()] if master else []
    except psutil.Error:
        return []


def log_to_file(settings: Settings) -> None:
    """The supervisor's log also goes to PHOENIX_HOME/logs/phoenix.log (archived by backups),
    unless PHOENIX_LOG_TO=stdout: then its stderr is all there is, as for its children."""
    path = log_path(settings, "phoenix")
    if path is None:
        return
    handler = logging.FileHandler(path)
    handler.setFormatter(formatter(settings.log_format))
    logging.getLogger().addHandler(handler)
