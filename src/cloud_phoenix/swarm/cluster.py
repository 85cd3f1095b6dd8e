"""A single-node swarm on loopback, and a stack deployed on it and removed again.

`init_swarm` makes the engine a swarm manager that listens and advertises on 127.0.0.1 and
takes overlay addresses from 127.77.0.0/16, then removes what swarm init makes that a
loopback-only stack never uses: the `ingress` routing-mesh network (no service publishes a
port) and the `docker_gwbridge` bridge, a host interface. Services run on the host network.
"""

from __future__ import annotations

import json
import logging
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from cloud_phoenix.containers.dockercli import ContainerError, DockerCli
from cloud_phoenix.swarm.api import DockerApi, DockerApiError
from cloud_phoenix.swarm.stackfile import NAMESPACE_LABEL

log = logging.getLogger(__name__)

SWARM_LISTEN = "127.0.0.1:2377"
SWARM_ADVERTISE = "127.0.0.1"
OVERLAY_POOL = "127.77.0.0/16"  # overlay networks, should anyone make one
OVERLAY_SUBNET_SIZE = 24
GATEWAY_BRIDGE = "docker_gwbridge"

Progress = Callable[[str], None]


def _quiet(_message: str) -> None:
    return None


def swarm_spec() -> dict[str, object]:
    """The body of POST /swarm/init for a manager on loopback."""
    return {
        "ListenAddr": SWARM_LISTEN,
        "AdvertiseAddr": SWARM_ADVERTISE,
        "DefaultAddrPool": [OVERLAY_POOL],
        "SubnetSize": OVERLAY_SUBNET_SIZE,
    }


def init_swarm(api: DockerApi, timeout: float = 30.0) -> bool:
    """Make the engine a single-node swarm on loopback, unless it is in one already.
    Returns whether this call made the swarm (and so `leave_swarm` should undo it)."""
    state = api.swarm_state()
    if state == "active":
        log.info("the engine is in a swarm already: using it")
        return False
    if state != "inactive":
        raise DockerApiError(
            f"the engine's swarm state is {state!r}: mend it (docker swarm leave --force?)"
        )
    api.swarm_init(swarm_spec())
    remove_unused_networks(api, timeout)
    return True


def remove_unused_networks(api: DockerApi, timeout: float = 30.0, appear: float = 10.0) -> None:
    """Remove `ingress`, then `docker_gwbridge`, which swarm lets go only once ingress is
    gone. The bridge (a host interface) is made a second or so after swarm init returns:
    it is awaited for up to `appear` seconds, then removed, retried until `timeout`."""
    deadline = time.monotonic() + timeout
    _remove_network(api, "ingress", deadline)
    shows_up = time.monotonic() + appear
    while GATEWAY_BRIDGE not in api.network_names():
        if time.monotonic() > shows_up:
            log.info("no %s network appeared: nothing to remove", GATEWAY_BRIDGE)
            return
        time.sleep(0.1)
    _remove_network(api, GATEWAY_BRIDGE, deadline)


def _remove_network(api: DockerApi, name: str, deadline: float) -> None:
    while name in api.network_names():
        try:
            api.network_remove(name)
        except DockerApiError as exc:
            if time.monotonic() > deadline:
                raise DockerApiError(f"cannot remove the {name} network: {exc}") from None
            time.sleep(0.2)


def leave_swarm(api: DockerApi) -> None:
    """Leave (and so end) the single-node swarm, and remove the bridge it may leave."""
    if api.swarm_state() != "inactive":
        api.swarm_leave()
    if GATEWAY_BRIDGE in api.network_names():
        api.network_remove(GATEWAY_BRIDGE)


def deploy_stack(
    docker: DockerCli,
    stack_file: Path,
    stack: str,
    variables: Mapping[str, str],
    timeout: float = 120.0,
) -> None:
    """`docker stack deploy` of `stack_file` with `variables` for its ${...} (the compose
    file is the CLI's to read: the Engine API knows services, not stack files)."""
    env = {**docker.env, **variables}
    try:
        done = subprocess.run(
            [docker.binary, "stack", "deploy", "--prune", "-c", str(stack_file), stack],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise ContainerError(f"docker stack deploy {stack}: no answer in {timeout:.0f} s") from None
    if done.returncode != 0:
        raise ContainerError(
            f"docker stack deploy {stack} failed (exit {done.returncode}): "
            f"{done.stderr.strip() or done.stdout.strip()}"
        )


def remove_stack(
    api: DockerApi, stack: str, timeout: float = 90.0, progress: Progress = _quiet
) -> None:
    """Remove the stack's services, wait until their containers are gone (each drains its
    requests and its collector's last lines first), then remove its volumes."""
    label = {NAMESPACE_LABEL: stack}
    services = api.services(label)
    for service in services:
        progress(f"removing service {service.name}")
        try:
            api.request("DELETE", f"/services/{service.id}")
        except DockerApiError as exc:
            if exc.status != 404:
                raise
    deadline = time.monotonic() + timeout
    while _containers(api, stack):
        if time.monotonic() > deadline:
            raise DockerApiError(
                f"the containers of stack {stack} are still there after {timeout:.0f} s"
            )
        time.sleep(0.5)
    volumes = api.request("GET", "/volumes", {"filters": _label_filter(stack)})["Volumes"]
    for volume in volumes or []:
        progress(f"removing volume {volume['Name']}")
        api.volume_remove(str(volume["Name"]))


def _containers(api: DockerApi, stack: str) -> list[str]:
    found = api.request("GET", "/containers/json", {"all": "1", "filters": _label_filter(stack)})
    return [str(c["Id"]) for c in found]


def _label_filter(stack: str) -> str:
    return json.dumps({"label": [f"{NAMESPACE_LABEL}={stack}"]})
