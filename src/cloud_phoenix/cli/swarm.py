"""`phoenix swarm-edge`: a Docker Swarm stack's edge and replica autoscaler (the command of
deploy/swarm/stack.yml's `edge` service)."""

from __future__ import annotations

import os

import typer

from cloud_phoenix import exitcodes
from cloud_phoenix.cli.edge import edge, fail, load_settings, setup_logging


@edge
def swarm_edge() -> None:
    """HAProxy on PORT in front of the replicas at 127.0.1.1..N, and their autoscaler."""
    from cloud_phoenix.stack.edge.program import find_haproxy
    from cloud_phoenix.swarm.api import DEFAULT_HOST, DockerApi, DockerApiError
    from cloud_phoenix.swarm.edge import SwarmEdge

    settings = load_settings()
    setup_logging(settings)
    haproxy_bin = settings.haproxy_bin or find_haproxy()
    if haproxy_bin is None:
        raise fail("HAProxy is not installed: apt-get install haproxy", exitcodes.UNAVAILABLE)
    try:
        api = DockerApi(os.environ.get("DOCKER_HOST") or DEFAULT_HOST)
    except DockerApiError as exc:
        raise fail(str(exc), exitcodes.CONFIG) from None
    swarm = SwarmEdge(settings, api, haproxy_bin)
    swarm.prepare()
    raise typer.Exit(swarm.run())
