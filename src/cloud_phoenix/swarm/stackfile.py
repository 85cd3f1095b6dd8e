"""What deploy/swarm/stack.yml and the code around it agree on: names and addresses."""

from __future__ import annotations

from pathlib import Path

STACK_FILE = Path("deploy") / "swarm" / "stack.yml"  # in the repository
DEFAULT_STACK = "phoenix"
APP = "app"  # the replicas' service, `<stack>_app`
EDGE = "edge"
BACKUP = "backup"
DB_SECRET = "phoenix_db_url"  # noqa: S105 (a name): the secret of the database URL
NAMESPACE_LABEL = "com.docker.stack.namespace"
# On the app service, "off" pauses the autoscaler: the replicas stay as an operator sets
# them (docker service update --label-add cloud-phoenix.autoscale=off ...; rm to resume).
AUTOSCALE_LABEL = "cloud-phoenix.autoscale"
# On the images the cluster drills build (a new version, a broken one): `down` removes them.
DRILL_IMAGE_LABEL = "cloud-phoenix.drill"
# Replica slot N listens on 127.0.1.N:REPLICA_PORT (the file sets PHOENIX_HOST to
# 127.0.1.{{.Task.Slot}}): every replica on the same port, like separate hosts.
REPLICA_NETWORK = "127.0.1"
REPLICA_PORT = 8080
MAX_SLOT = 99  # 127.0.1.1 to 127.0.1.99 (tests and other servers use the addresses above)


def service_name(stack: str, service: str) -> str:
    """The name `docker stack deploy` gives a service of the stack."""
    return f"{stack}_{service}"


def replica_address(slot: int) -> str:
    """host:port of the replica in task slot `slot` (1-based, as swarm counts)."""
    if not 1 <= slot <= MAX_SLOT:
        raise ValueError(f"a replica's slot is 1 to {MAX_SLOT}, not {slot}")
    return f"{REPLICA_NETWORK}.{slot}:{REPLICA_PORT}"


def replica_addresses(max_replicas: int) -> tuple[str, ...]:
    """Every address a replica may have while at most `max_replicas` run: swarm fills the
    lowest free slots, so the slots stay within 1..max_replicas."""
    return tuple(replica_address(slot) for slot in range(1, max_replicas + 1))
