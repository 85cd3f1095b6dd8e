"""deploy/swarm/stack.yml and the code around it agree, and what they promise is written in
the file: loopback only, start-first updates with rollback, a secret for the database.
No Docker here; the swarm tier (test_swarm.py) runs the stack."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from cloud_phoenix.config import Settings
from cloud_phoenix.containers.engine import ADDRESS_POOL, daemon_config
from cloud_phoenix.swarm.cluster import OVERLAY_POOL, swarm_spec
from cloud_phoenix.swarm.edge import IMAGE_USER, edge_config
from cloud_phoenix.swarm.stackfile import (
    APP,
    BACKUP,
    DB_SECRET,
    EDGE,
    MAX_SLOT,
    REPLICA_NETWORK,
    REPLICA_PORT,
    STACK_FILE,
    replica_address,
    replica_addresses,
)

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


@pytest.fixture(scope="module")
def stack() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / STACK_FILE).read_text())
    return loaded


def services(stack: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = stack["services"]
    return found


def test_the_services_are_the_replicas_the_edge_and_the_backup(stack: dict[str, Any]) -> None:
    assert set(services(stack)) == {APP, EDGE, BACKUP}


def test_every_service_is_on_the_host_network_and_publishes_nothing(
    stack: dict[str, Any],
) -> None:
    assert stack["networks"] == {"hostnet": {"external": True, "name": "host"}}
    for name, service in services(stack).items():
        assert service["networks"] == ["hostnet"], name
        assert "ports" not in service, name
        assert service["read_only"] is True, name


def test_replica_n_listens_on_its_own_loopback_address(stack: dict[str, Any]) -> None:
    env = services(stack)[APP]["environment"]
    assert env["PHOENIX_HOST"] == f"{REPLICA_NETWORK}.{{{{.Task.Slot}}}}"
    assert int(env["PORT"]) == REPLICA_PORT
    assert replica_address(3) == f"127.0.1.3:{REPLICA_PORT}"
    assert replica_addresses(2) == (f"127.0.1.1:{REPLICA_PORT}", f"127.0.1.2:{REPLICA_PORT}")
    for slot in (0, MAX_SLOT + 1):
        with pytest.raises(ValueError):
            replica_address(slot)


def test_a_replica_keeps_the_promise_of_the_one_host_stack(stack: dict[str, Any]) -> None:
    app = services(stack)[APP]
    assert app["command"] == ["up"]
    env = app["environment"]
    assert env["PHOENIX_REUSE_PORT"] == "true"
    assert env["PHOENIX_INSTANCE"] == "volume"
    assert int(env["PHOENIX_MIN_WORKERS"]) >= 2
    assert env["PHOENIX_BACKUP_AT"] == "off"
    # Its health is its own edge's, never the address's (shared during an update).
    assert app["healthcheck"]["test"] == ["CMD", "python", "-m", "cloud_phoenix.stack.edge.health"]


def test_each_slot_has_a_volume_and_each_container_its_own_run_files(
    stack: dict[str, Any],
) -> None:
    mounts = {m["target"]: m for m in services(stack)[APP]["volumes"]}
    home = mounts["/var/lib/phoenix"]
    assert home["type"] == "volume"
    assert "{{.Task.Slot}}" in stack["volumes"][home["source"]]["name"]
    assert mounts["/var/lib/phoenix/run"]["type"] == "tmpfs"
    assert mounts["/tmp"]["type"] == "tmpfs"


def test_updates_start_first_and_roll_back_by_themselves(stack: dict[str, Any]) -> None:
    deploy = services(stack)[APP]["deploy"]
    assert deploy["update_config"]["order"] == "start-first"
    assert deploy["update_config"]["failure_action"] == "rollback"
    assert deploy["update_config"]["parallelism"] == 1
    assert deploy["rollback_config"]["order"] == "start-first"
    assert deploy["restart_policy"]["condition"] == "any"


def test_the_database_url_is_a_secret_read_from_a_file(stack: dict[str, Any]) -> None:
    assert stack["secrets"][DB_SECRET]["external"] is True
    for name, service in services(stack).items():
        env = service["environment"]
        assert "DB_CONNECTION_STRING" not in env, name
        assert env["DB_CONNECTION_STRING_FILE"] == f"/run/secrets/{DB_SECRET}", name
        assert [s["source"] for s in service["secrets"]] == [DB_SECRET], name


def test_the_edge_runs_on_a_manager_with_the_docker_socket(stack: dict[str, Any]) -> None:
    edge = services(stack)[EDGE]
    assert edge["command"] == ["swarm-edge"]
    assert edge["deploy"]["replicas"] == 1
    assert "node.role == manager" in edge["deploy"]["placement"]["constraints"]
    targets = {m["target"]: m for m in edge["volumes"]}
    assert targets["/run/docker.sock"]["type"] == "bind"
    assert edge["environment"]["DOCKER_HOST"] == "unix:///run/docker.sock"
    assert edge["environment"]["PHOENIX_HOST"] == "127.0.0.1"
    assert edge["environment"]["PHOENIX_SWARM_SERVICE"].endswith(f"_{APP}")


def test_every_setting_the_file_names_is_a_documented_one(stack: dict[str, Any]) -> None:
    text = (ROOT / STACK_FILE).read_text()
    named = set(re.findall(r"\b((?:PHOENIX|DB)_[A-Z_]+)\b", text))
    # Read by docker stack deploy (the file's own ${...}), not by the application:
    deploy_time = {"PHOENIX_IMAGE", "PHOENIX_DB_SECRET"}
    for name in sorted(named - deploy_time):
        assert f"`{name}`" in README, f"{name} is not in the README"


def test_the_edge_fronts_every_replica_address_and_drops_root(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, max_replicas=4)
    config = edge_config(settings, 5, as_root=True)
    assert config.servers == replica_addresses(4)
    assert config.run_as == IMAGE_USER
    assert edge_config(settings, 5, as_root=False).run_as is None


def test_swarm_and_engine_addresses_stay_on_loopback() -> None:
    spec = swarm_spec()
    assert str(spec["ListenAddr"]).startswith("127.0.0.1:")
    assert spec["AdvertiseAddr"] == "127.0.0.1"
    assert spec["DefaultAddrPool"] == [OVERLAY_POOL]
    assert OVERLAY_POOL.startswith("127.") and ADDRESS_POOL.startswith("127.")
    assert daemon_config()["default-address-pools"] == [{"base": ADDRESS_POOL, "size": 24}]
