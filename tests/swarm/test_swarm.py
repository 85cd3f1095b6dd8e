"""The swarm tier: `scripts/swarm up` on a private Docker Engine, the cluster drills through
the edge (the same functions `phoenix drill swarm` runs), and `scripts/swarm down`.

One stack for the whole module, the tests in order: each drill leaves the stack as it
found it (the autoscaler resumed), and the records test looks for every request the drills
before it had answered. Loopback only, bounded: a few minutes in all.
"""

from __future__ import annotations

import re
import urllib.request
from pathlib import Path

import pytest

from cloud_phoenix.drill import cluster as drills
from cloud_phoenix.store import open_store
from cloud_phoenix.store.base import Event
from cloud_phoenix.swarm.stackfile import AUTOSCALE_LABEL
from tests.fixtures.swarm import SwarmStack, addresses, run_swarm
from tests.fixtures.waiting import eventually

pytestmark = [pytest.mark.swarm, pytest.mark.timeout(900)]


def get(url: str) -> int:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=10) as response:
        return int(response.status)


def check(stack: SwarmStack, report: drills.Report) -> None:
    stack.reports.append(report)
    print("\n".join(report.lines()))  # the figures, in the test's output
    assert report.passed, "\n".join(report.lines())


def test_up_ends_with_the_edge_url_and_the_stack_answers(swarm_stack: SwarmStack) -> None:
    url = swarm_stack.up.stdout.splitlines()[-1]
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url)
    assert url == swarm_stack.state.url
    assert get(f"{url}/health") == 200
    # Progress was shown, step by step.
    for step in ("private Docker Engine", "building", "PostgreSQL", "swarm", "deploying"):
        assert step in swarm_stack.up.stderr
    swarm_stack.since = drills.since_now()


def test_the_swarm_keeps_to_loopback(swarm_stack: SwarmStack) -> None:
    api = swarm_stack.cluster.api
    assert {"ingress", "docker_gwbridge"}.isdisjoint(api.network_names())
    now = addresses()
    assert {name for name, _ in now} == {name for name, _ in swarm_stack.before}
    added = now - swarm_stack.before
    assert added == set(), f"added to the host: {added}"


def test_the_backup_service_backs_up_postgresql(swarm_stack: SwarmStack) -> None:
    from cloud_phoenix.containers.dockercli import DockerCli, find_cli

    state = swarm_stack.state
    api = swarm_stack.cluster.api
    [task] = [t for t in api.tasks(f"{state.stack}_backup") if t.state == "running"]
    docker = DockerCli(find_cli(), state.docker_host)
    done = docker.run("exec", task.container, "phoenix", "backup", check=False, timeout=120)
    assert done.returncode == 0, done.stderr + done.stdout
    assert "pg_dump (PostgreSQL)" in done.stdout  # the swarm's PostgreSQL, from the secret
    listed = docker.run("exec", task.container, "phoenix", "backups", check=False)
    assert listed.returncode == 0 and " ok " in listed.stdout, listed.stdout


def test_a_crash_storm_over_three_replicas(swarm_stack: SwarmStack) -> None:
    check(swarm_stack, drills.crash_storm(swarm_stack.cluster, progress=print))


def test_a_replica_killed(swarm_stack: SwarmStack) -> None:
    report = drills.kill_replica(swarm_stack.cluster, progress=print)
    check(swarm_stack, report)
    assert report.longest_below_desired_s > 0  # it did go, and came back


def test_a_rolling_update(swarm_stack: SwarmStack) -> None:
    check(swarm_stack, drills.rolling_update(swarm_stack.cluster, progress=print))


def test_an_update_to_a_broken_image_is_rolled_back(swarm_stack: SwarmStack) -> None:
    cluster = swarm_stack.cluster
    before = cluster.api.service(cluster.service).image
    check(swarm_stack, drills.rolling_update(cluster, broken=True, progress=print))
    assert cluster.api.service(cluster.service).image == before


def test_replicas_follow_the_load(swarm_stack: SwarmStack) -> None:
    cluster = swarm_stack.cluster
    since = drills.since_now()
    report = drills.follow_load(cluster, progress=print)
    check(swarm_stack, report)
    assert AUTOSCALE_LABEL not in cluster.api.service(cluster.service).labels
    # As on one host, the scale events are in the store's events.
    store = open_store(swarm_stack.state.db_url)

    def scale_events() -> tuple[list[Event], list[Event]] | None:
        out = store.events(kind="scaled_out", since=since)
        back = store.events(kind="scaled_in", since=since)
        return (out, back) if out and back else None

    try:
        out, _ = eventually(scale_events, 10, what="scaled_out and scaled_in in the store")
    finally:
        store.close()
    assert out[-1].data["service"] == cluster.service and out[-1].data["desired"] > 2


def test_every_request_is_in_postgresql_exactly_once(swarm_stack: SwarmStack) -> None:
    answered = set().union(*(report.request_ids for report in swarm_stack.reports))
    assert len(answered) > 5000  # the drills above ran
    report = drills.records(swarm_stack.cluster, answered, swarm_stack.since or "2000")
    print("\n".join(report.lines()))
    assert report.passed, "\n".join(report.lines())


def test_down_removes_everything_up_made(swarm_stack: SwarmStack) -> None:
    state = swarm_stack.state
    down = run_swarm("down", f"--state={swarm_stack.folder}", env=swarm_stack.env, timeout=300)
    assert down.returncode == 0, down.stderr
    assert not Path(state.engine).exists()
    assert not Path(state.postgres).exists()
    assert not swarm_stack.folder.exists()
    assert addresses() == swarm_stack.before
    for pid_dir in Path("/proc").iterdir():
        try:
            command = (pid_dir / "cmdline").read_bytes()
        except OSError:
            continue
        assert state.engine.encode() not in command, command
        assert state.postgres.encode() not in command, command
