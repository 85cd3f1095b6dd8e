"""The Docker Engine API over its unix socket: HTTP/1.1 and JSON from the standard library,
so that the autoscaler in the edge's container and the drills need no Docker CLI and no
client package. Only what the swarm tooling uses is here."""

from __future__ import annotations

import base64
import http.client
import json
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

from cloud_phoenix import exitcodes

# Docker 20.10's; later engines answer it too, so one client speaks to all of them.
API_VERSION = "v1.41"
DEFAULT_HOST = "unix:///var/run/docker.sock"


class DockerApiError(Exception):
    """The engine refused a request or cannot be reached; `status` is its HTTP status
    (0: no answer), `code` the exit code for a command that gives up on it."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status
        self.code = exitcodes.UNAVAILABLE if status == 0 else exitcodes.SOFTWARE


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("docker", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.socket_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def socket_path(docker_host: str) -> str:
    """The socket of a DOCKER_HOST (unix:// only: the engines here are local)."""
    if not docker_host.startswith("unix://"):
        raise DockerApiError(
            f"DOCKER_HOST={docker_host!r}: only a local engine's unix:// socket is supported"
        )
    return docker_host.removeprefix("unix://")


@dataclass(frozen=True)
class Service:
    """What the swarm tooling reads of a service: its id, spec version and spec."""

    id: str
    name: str
    version: int
    spec: dict[str, Any]
    update_state: str  # "" when no update ever ran, else "updating", "completed", ...

    @property
    def replicas(self) -> int:
        return int(self.spec.get("Mode", {}).get("Replicated", {}).get("Replicas", 0))

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.spec.get("Labels") or {})

    @property
    def image(self) -> str:
        return str(self.spec["TaskTemplate"]["ContainerSpec"]["Image"])


@dataclass(frozen=True)
class Task:
    """One task of a service: its slot, the state it is in and the one it should be in."""

    id: str
    slot: int
    state: str  # new ... starting, running, complete, failed, shutdown, rejected
    desired_state: str  # running, shutdown
    container: str  # "" until the task has a container
    created: str
    image: str
    error: str  # why it failed or was rejected, as swarm says ("" if it did not)


class DockerApi:
    """Requests to one engine; a connection per request (the engine is local)."""

    def __init__(self, docker_host: str = DEFAULT_HOST, timeout: float = 30.0) -> None:
        self.path = socket_path(docker_host)
        self.timeout = timeout

    def request(
        self,
        method: str,
        path: str,
        query: Mapping[str, str] | None = None,
        body: object = None,
        *,
        timeout: float | None = None,
    ) -> Any:
        """`method /vX/path?query` with a JSON body; the answer's JSON (text if it is not)."""
        data = None if body is None else json.dumps(body).encode()
        headers = {} if body is None else {"Content-Type": "application/json"}
        kind, payload = self.send(method, path, query, data, headers, timeout)
        if not payload:
            return None
        if kind.startswith("application/json"):
            return json.loads(payload)
        return payload.decode(errors="replace")

    def send(
        self,
        method: str,
        path: str,
        query: Mapping[str, str] | None,
        data: bytes | None,
        headers: Mapping[str, str],
        timeout: float | None = None,
    ) -> tuple[str, bytes]:
        """One request; its answer's content type and body. DockerApiError if refused."""
        target = f"/{API_VERSION}{path}"
        if query:
            target += "?" + urlencode(query)
        connection = _UnixConnection(self.path, timeout or self.timeout)
        try:
            connection.request(method, target, body=data, headers=dict(headers))
            response = connection.getresponse()
            payload = response.read()
        except OSError as exc:
            raise DockerApiError(
                f"the Docker Engine at {self.path} does not answer ({exc}): is it running?"
            ) from None
        finally:
            connection.close()
        if response.status >= 400:
            raise DockerApiError(
                f"{method} {path}: {response.status} {_message(payload)}", response.status
            )
        return response.getheader("Content-Type", ""), payload

    def ping(self) -> bool:
        try:
            return bool(self.request("GET", "/_ping", timeout=2.0) == "OK")
        except DockerApiError:
            return False

    # -- swarm ------------------------------------------------------------------------------

    def swarm_state(self) -> str:
        """This node's swarm state: "inactive", "active", "pending", "error", "locked"."""
        return str(self.request("GET", "/info")["Swarm"]["LocalNodeState"])

    def swarm_init(self, spec: Mapping[str, object]) -> str:
        """Make this node a swarm's first manager; returns the node id."""
        return str(self.request("POST", "/swarm/init", body=dict(spec), timeout=60.0))

    def swarm_leave(self) -> None:
        self.request("POST", "/swarm/leave", {"force": "true"}, timeout=60.0)

    def network_names(self) -> list[str]:
        return [str(n["Name"]) for n in self.request("GET", "/networks")]

    def network_remove(self, name: str) -> None:
        self.request("DELETE", f"/networks/{quote(name, safe='')}")

    # -- services and tasks -----------------------------------------------------------------

    def service(self, name: str) -> Service:
        found = self.request("GET", f"/services/{quote(name, safe='')}")
        return Service(
            id=found["ID"],
            name=found["Spec"]["Name"],
            version=int(found["Version"]["Index"]),
            spec=found["Spec"],
            update_state=str((found.get("UpdateStatus") or {}).get("State", "")),
        )

    def services(self, labels: Mapping[str, str] | None = None) -> list[Service]:
        filters = {"label": [f"{k}={v}" for k, v in (labels or {}).items()]}
        query = {"filters": json.dumps(filters)} if labels else None
        return [
            Service(
                s["ID"],
                s["Spec"]["Name"],
                int(s["Version"]["Index"]),
                s["Spec"],
                str((s.get("UpdateStatus") or {}).get("State", "")),
            )
            for s in self.request("GET", "/services", query)
        ]

    def update_service(self, service: Service, spec: Mapping[str, object]) -> None:
        """Replace the service's spec; refused (an error) if it changed since `service` was
        read, so that a scaler and an operator never overwrite each other unseen."""
        self.request(
            "POST",
            f"/services/{service.id}/update",
            {"version": str(service.version)},
            body=dict(spec),
        )

    def scale(self, name: str, replicas: int, attempts: int = 3) -> Service:
        """Set the service's replicas, reading it afresh if someone updated it meanwhile."""
        for attempt in range(1, attempts + 1):
            service = self.service(name)
            if service.replicas == replicas:
                break
            spec = json.loads(json.dumps(service.spec))
            spec.setdefault("Mode", {}).setdefault("Replicated", {})["Replicas"] = replicas
            try:
                self.update_service(service, spec)
                break
            except DockerApiError as exc:
                # "update out of sequence": another update went in between; read again.
                if "out of sequence" not in str(exc) or attempt == attempts:
                    raise
                time.sleep(0.1)
        return self.service(name)

    def tasks(self, service: str) -> list[Task]:
        query = {"filters": json.dumps({"service": [service]})}
        return [
            Task(
                id=t["ID"],
                slot=int(t.get("Slot", 0)),
                state=str(t["Status"]["State"]),
                desired_state=str(t["DesiredState"]),
                container=str((t["Status"].get("ContainerStatus") or {}).get("ContainerID", "")),
                created=str(t["CreatedAt"]),
                image=str(t["Spec"]["ContainerSpec"]["Image"]),
                error=str(t["Status"].get("Err", "")),
            )
            for t in self.request("GET", "/tasks", query)
        ]

    # -- containers, images, secrets, volumes -----------------------------------------------

    def kill(self, container: str, signal: str = "KILL") -> None:
        self.request("POST", f"/containers/{quote(container, safe='')}/kill", {"signal": signal})

    def container_restarts(self, container: str) -> int:
        return int(
            self.request("GET", f"/containers/{quote(container, safe='')}/json")["RestartCount"]
        )

    def build(self, context_tar: bytes, tag: str, timeout: float = 300.0) -> None:
        """Build an image from a tar holding a Dockerfile (the engine's own builder; the
        context names only local images, so nothing is pulled)."""
        _kind, payload = self.send(
            "POST",
            "/build",
            {"t": tag, "rm": "1", "forcerm": "1"},
            context_tar,
            {"Content-Type": "application/x-tar"},
            timeout,
        )
        # The answer is a stream of JSON lines; a failed step is one with "error".
        for line in payload.splitlines():
            if line.strip() and "error" in (message := json.loads(line)):
                raise DockerApiError(f"build of {tag} failed: {message['error']}")

    def image_exists(self, ref: str) -> bool:
        try:
            self.request("GET", f"/images/{quote(ref, safe='')}/json")
        except DockerApiError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def images(self, label: str) -> list[str]:
        """Ids of the images that carry `label` (any value)."""
        query = {"filters": json.dumps({"label": [label]})}
        return [str(i["Id"]) for i in self.request("GET", "/images/json", query)]

    def image_remove(self, ref: str) -> None:
        self.request("DELETE", f"/images/{quote(ref, safe='')}", {"force": "true"})

    def secret_create(self, name: str, data: bytes, labels: Mapping[str, str]) -> str:
        made = self.request(
            "POST",
            "/secrets/create",
            body={"Name": name, "Data": base64.b64encode(data).decode(), "Labels": dict(labels)},
        )
        return str(made["ID"])

    def secret_remove(self, name: str) -> None:
        self.request("DELETE", f"/secrets/{quote(name, safe='')}")

    def volume_names(self) -> list[str]:
        return [str(v["Name"]) for v in self.request("GET", "/volumes")["Volumes"] or []]

    def volume_remove(self, name: str) -> None:
        self.request("DELETE", f"/volumes/{quote(name, safe='')}", {"force": "true"})


def _message(payload: bytes) -> str:
    try:
        return str(json.loads(payload)["message"])
    except (ValueError, KeyError, TypeError):
        return payload.decode(errors="replace").strip()[:500]
