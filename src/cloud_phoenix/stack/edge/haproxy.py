"""The edge's HAProxy configuration: `render` is pure, an `EdgeConfig` in, the text of
haproxy.cfg out (running HAProxy and its syntax check are program.py's). HAProxy serves a
listening socket that the supervisor bound and hands down (`bind fd@N`), proxies to the
gunicorn master's socket (also held by the supervisor, so a restarting gunicorn makes
requests wait in the backlog rather than fail), resends a safe request whose worker died
(never `/crash`, never a non-GET), refuses itself what the application's server would
answer without the application (so every answer is journaled or in HAProxy's log), and
exposes its counters on a Unix admin socket that `EdgeStats` reads.

The same configuration fronts a cluster's replicas (cloud_phoenix.swarm): several servers,
each health-checked, and a resent request goes to another server than the one that failed.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cloud_phoenix.probes import (
    PRIVATE_NETWORKS,
    PROBE_AGENT_PATTERN,
    PROBE_HEADER,
    PROBE_METHODS,
    PROBE_PATHS,
)

FRONTEND = "edge"
BACKEND = "app"
SERVER_PREFIX = "app"  # servers are app1, app2 ... in the order of EdgeConfig.servers
HEALTH_CHECK_AGENT = "phoenix-edge-health-check"
# What the application keeps of a client's X-Request-ID: 1 to 128 visible ASCII characters.
REQUEST_ID_PATTERN = "^[!-~]{1,128}$"
# HAProxy 2.6 refuses longer Unix socket paths (sun_path is 108 bytes, and it binds
# "<path>.<pid>.tmp" first, then renames it).
MAX_SOCKET_PATH = 97
MAX_SERVED_BY = 128

_DURATION = re.compile(r"([1-9][0-9]*)(us|ms|s|m|h|d)?")
_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"{_LABEL}(\.{_LABEL})*")
_PRINTABLE = re.compile(r"[ -~]+")
_VISIBLE = re.compile(r"[!-~]+")
_TIMEOUTS = (
    "timeout_connect",
    "timeout_client",
    "timeout_server",
    "timeout_http_request",
    "timeout_queue",
    "timeout_http_keep_alive",
)


def parse_duration(value: str) -> float:
    """Seconds in a positive HAProxy time ("500ms", "5s", "2m"; a bare number is ms)."""
    match = _DURATION.fullmatch(value)
    if match is None:  # "0" is refused too: to HAProxy it means "never time out"
        raise ValueError(f"{value!r} is not a positive HAProxy time such as 500ms, 5s or 2m")
    return int(match[1]) * _UNITS[match[2] or "ms"]


def backend_address(backend: str) -> str:
    """Check "host:port" (IPv4, [IPv6] or a host name) and return it for a server line."""
    host, sep, port = backend.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"backend must be host:port with a port in 1-65535: {backend!r}")
    if host.startswith("[") and host.endswith("]"):
        ipaddress.IPv6Address(host[1:-1])  # its ValueError names the address
    elif _HOSTNAME.fullmatch(host) is None:
        raise ValueError(f"backend host must be an IPv4 address, [IPv6] or a host name: {host!r}")
    return f"{host}:{int(port)}"


@dataclass(frozen=True, slots=True)
class EdgeConfig:
    """Everything `render` needs; values are checked on construction (ValueError)."""

    edge_fd: int
    # host:port of each server. One host: ("127.0.0.1:41234",), the gunicorn master's socket
    # held by the supervisor. A cluster: every address a replica may have (127.0.1.1:8080,
    # 127.0.1.2:8080 ...); the health checks mark the absent ones DOWN.
    servers: tuple[str, ...]
    stats_socket: Path  # a relative path is resolved in HAProxy's working directory
    served_by: str = "phoenix-edge"  # the X-Served-By response header
    max_body_bytes: int = 1 << 20
    # A loopback connect to the supervisor's socket completes at once even while gunicorn
    # restarts; it only waits when that backlog is full, and 5 s of that is an outage.
    timeout_connect: str = "5s"
    # A client idle mid-request or mid-response (generous for a slow mobile link), and the
    # cap of timeout_http_keep_alive: HAProxy closes an idle connection after the shorter.
    timeout_client: str = "75s"
    # Waiting for the app's answer: a /generatecert waits up to ~5 s for a key under
    # load, and a request may sit in the backlog through a gunicorn restart first.
    timeout_server: str = "30s"
    # The whole request head: a slowloris client cannot hold a slot longer than this.
    timeout_http_request: str = "10s"
    # Waiting in HAProxy's queue for one of backend_maxconn slots: past it a 503 is
    # better than an answer the client has stopped waiting for.
    timeout_queue: str = "10s"
    # A client idle between two requests. Longer than a load balancer's idle timeout (the
    # ALB's and ingress-nginx's 60 s) in front of a container's edge: the balancer, not the
    # edge, closes an idle connection, so it never sends a request into one that the edge is
    # closing (a 502 it would not retry). nginx's default; an idle connection costs little,
    # and the request head still has timeout_http_request.
    timeout_http_keep_alive: str = "75s"
    # One /health answer after the connect: a CPU-saturated worker is slow, not dead.
    timeout_check: str = "2s"
    # A request in flight on a worker that dies is sent again. Under a crash storm (a
    # /crash every 250 ms) a slow request can be caught by more than one crash: 3 retries
    # were exhausted about once in a few thousand requests, 5 were not in our drills.
    retries: int = 5
    maxconn: int = 4096
    # Requests in flight to the app at once. An async worker accepts without limit, but
    # past a few dozen per host more concurrency only lengthens every answer (certificate
    # work is CPU-bound) and widens what one dying worker takes with it; HAProxy's queue
    # is FIFO, bounded by timeout_queue and visible in the stats (qcur).
    backend_maxconn: int = 64
    hard_stop_after: str = "30s"
    # Requests that must never be sent twice: a resent /crash would kill the next worker.
    no_retry_paths: tuple[str, ...] = ("/crash",)
    # uid and gid HAProxy takes after opening its sockets, when started as root (a cluster's
    # edge runs as root for the Docker socket; what faces clients need not). None: as is.
    run_as: int | None = None

    def __post_init__(self) -> None:
        _check(self)


def _check(config: EdgeConfig) -> None:
    # Descriptors 0-2 are HAProxy's stdin and its log and error streams under -db.
    if config.edge_fd < 3:
        raise ValueError(f"edge_fd must be an inherited socket (>= 3), not {config.edge_fd}")
    if isinstance(config.servers, str) or not config.servers:
        raise ValueError(f"servers must be a tuple of host:port, not {config.servers!r}")
    for server in config.servers:
        backend_address(server)
    path = str(config.stats_socket)
    if _PRINTABLE.fullmatch(path) is None or len(path) > MAX_SOCKET_PATH:
        raise ValueError(
            f"stats_socket must be a path of at most {MAX_SOCKET_PATH} printable ASCII "
            f"characters (a shorter PHOENIX_HOME helps): {path!r}"
        )
    served = config.served_by
    if len(served) > MAX_SERVED_BY or not _PRINTABLE.fullmatch(served) or served != served.strip():
        raise ValueError(
            f"served_by must be 1 to {MAX_SERVED_BY} printable ASCII characters, "
            f"without spaces around them: {served!r}"
        )
    least = {
        "max_body_bytes": 1,
        "retries": 0,
        "maxconn": 1,
        "backend_maxconn": 1,
    }
    for name, bound in least.items():
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < bound:
            raise ValueError(f"{name} must be an integer >= {bound}, not {value!r}")
    if config.backend_maxconn > config.maxconn:
        raise ValueError(
            f"backend_maxconn ({config.backend_maxconn}) exceeds maxconn ({config.maxconn})"
        )
    for name in (*_TIMEOUTS, "timeout_check", "hard_stop_after"):
        parse_duration(getattr(config, name))
    if config.run_as is not None and (
        isinstance(config.run_as, bool) or not isinstance(config.run_as, int) or config.run_as < 1
    ):
        raise ValueError(f"run_as must be a uid >= 1 (never root), not {config.run_as!r}")
    if not config.no_retry_paths:
        raise ValueError("no_retry_paths must name at least /crash")
    for item in config.no_retry_paths:
        if not item.startswith("/") or _VISIBLE.fullmatch(item) is None:
            raise ValueError(f"no_retry_paths holds /paths of visible ASCII, not {item!r}")


def _quoted(word: str) -> str:
    """One configuration word in weak quotes (spaces, '#' and "'" need nothing more)."""
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$") + '"'


def _literal(text: str) -> str:
    """A log-format argument that reads as `text`: '%' would start a substitution."""
    return _quoted(text.replace("%", "%%"))


def _json_reply(error: str, detail: str) -> str:
    """`content-type ... string ...` for an answer shaped like the application's errors."""
    body = json.dumps({"error": error, "detail": detail})
    # Strong quotes keep the JSON as it is; the texts are ours and hold no single quote.
    assert "'" not in body
    return f"content-type application/json string '{body}' hdr Cache-Control no-store"


def _edge_errors(config: EdgeConfig) -> list[str]:
    # In 2.6 a request HAProxy cannot parse still gets its built-in HTML 400/408 pages,
    # answered by the HTTP/1 multiplexer before any proxy rule (haproxy issue #3032);
    # the rest are JSON like the application's.
    errors = {
        400: ("bad request", "the edge could not parse this HTTP request"),
        408: ("request timeout", "the request was not received in time"),
        413: ("content too large", f"request bodies are limited to {config.max_body_bytes} bytes"),
        500: ("internal error", "the edge failed; its log has the details"),
        502: (
            "bad gateway",
            "the application closed the connection without answering (its worker may "
            "have died); a GET is retried, other requests and /crash never are",
        ),
        503: ("service unavailable", "the application cannot take requests now; retry shortly"),
        504: ("gateway timeout", "the application did not answer in time"),
    }
    lines = []
    for status, (error, detail) in errors.items():
        retry_after = " hdr Retry-After 1" if status == 503 else ""
        lines.append(f"    http-error status {status} {_json_reply(error, detail)}{retry_after}")
    return lines


def _probe_rules() -> list[str]:
    """Set txn.probe on a probe: checked before the edge drops the X-Forwarded-For it got."""
    assert set(PROBE_METHODS) == {"GET", "HEAD"}  # what HAProxy's own METH_GET matches
    direct = (
        f"METH_GET {{ path -m str {' '.join(PROBE_PATHS)} }} "
        f"{{ src {' '.join(PRIVATE_NETWORKS)} }} !{{ req.hdr(x-forwarded-for) -m found }}"
    )
    return [
        f"    http-request set-var(txn.probe) bool(1) if {direct} "
        f"{{ req.hdr({PROBE_HEADER.lower()}) -m found }}",
        f"    http-request set-var(txn.probe) bool(1) if {direct} "
        f"{{ req.fhdr(user-agent) -m reg '{PROBE_AGENT_PATTERN}' }}",
    ]


def _path_words(paths: Iterable[str]) -> str:
    words: list[str] = []
    for path in paths:
        bare = path.rstrip("/") or "/"
        for variant in (path, bare, bare.rstrip("/") + "/"):
            if variant not in words:
                words.append(variant)
    return " ".join(_quoted(word) for word in words)


# The methods the application may answer; for any other it would only say 405, and its
# server's parser refuses some (CONNECT, lower case, unknown names) without it.
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
_METHODS_DETAIL = f"this service answers only {', '.join(METHODS)}"
_WEBSOCKET_DETAIL = "this service has no WebSocket endpoint"
_TARGET_DETAIL = "the request target holds a control character or a raw non-ASCII byte"
_HEADER_DETAIL = "a header value holds a control character"


# "option httplog" (whose %rc counts retries) without captures, plus the request id.
_LOG_FORMAT = (
    "%ci:%cp [%tr] %ft %b/%s %TR/%Tw/%Tc/%Tr/%Ta %ST %B %CC %CS %tsc "
    "%ac/%fc/%bc/%sc/%rc %sq/%bq %{+Q}r id=%[var(txn.request_id)]"
)


def render(config: EdgeConfig) -> str:
    """The haproxy.cfg text for `config`: pure, no file or socket is touched."""
    timeouts = [
        f"    timeout {name.removeprefix('timeout_').replace('_', '-')} {getattr(config, name)}"
        for name in _TIMEOUTS
    ]
    length_required = _json_reply(
        "length required",
        f"send the body with a Content-Length of at most {config.max_body_bytes} bytes",
    )
    lines = [
        "# Rendered by cloud_phoenix.stack.edge.haproxy; change EdgeConfig, not this file.",
        "global",
        # No daemon, pidfile or master-worker: the supervisor runs HAProxy with -db and
        # owns its lifetime. No TCP stats listener: the admin socket is a mode-600 file.
        f"    maxconn {config.maxconn}",
        f"    hard-stop-after {config.hard_stop_after}",
        # unix@: without it a relative path would be read as a TCP host name.
        f"    stats socket {_quoted(f'unix@{config.stats_socket}')} mode 600 level admin",
        "    log stdout format raw local0 info",
        *([f"    uid {config.run_as}", f"    gid {config.run_as}"] if config.run_as else []),
        "",
        "defaults",
        "    mode http",
        "    log global",
        f"    log-format {_quoted(_LOG_FORMAT)}",
        "    option dontlognull",
        # Keep-alive with clients, a fresh connection to the app per request: gunicorn's
        # workers share one listening socket, so only new connections spread the load over
        # them (a new worker would get nothing from a pool of old connections), and no
        # request is sent on a kept connection that a dead or idle worker has closed.
        "    option http-server-close",
        # A request whose client left while it was queued is never sent to the app.
        "    option abortonclose",
        f"    retries {config.retries}",
        *timeouts,
        *_edge_errors(config),
        "",
        f"frontend {FRONTEND}",
        f"    bind fd@{config.edge_fd} name {FRONTEND}",
        f"    unique-id-format {_quoted('%[uuid(),regsub(-,,g)]')}",
        # A platform's probe (cloud_phoenix.probes: a GET of a probe path, straight from
        # the private network, that says what it is) goes on without X-Forwarded-For, so
        # the application can tell it by the same rule and leave it out of the journal.
        *_probe_rules(),
        # The public edge: no client may claim an address or a scheme for itself.
        "    http-request del-header X-Forwarded-For",
        "    http-request set-header X-Forwarded-For %[src] unless { var(txn.probe) -m bool }",
        "    http-request set-header X-Forwarded-Proto http",
        # Keep the client's X-Request-ID when the application would keep it; otherwise set
        # one here, so that a resent request carries the same id to the next worker.
        "    http-request set-header X-Request-ID %[unique-id] unless "
        "{ req.fhdr_cnt(x-request-id) eq 1 } "
        f"{{ req.fhdr(x-request-id) -m reg '{REQUEST_ID_PATTERN}' }}",
        "    http-request set-var(txn.request_id) req.fhdr(x-request-id)",
        # Every request is either answered by the application, which journals it, or refused
        # here, in this log. uvicorn answers some requests itself, unrecorded: a WebSocket
        # handshake (there is no WebSocket endpoint: 403), a method its parser does not know,
        # and a control character or a raw non-ASCII byte its parser refuses (400). Upgrades
        # to other protocols (h2c) it ignores, and the application answers them.
        f"    http-request deny status 501 {_json_reply('not implemented', _METHODS_DETAIL)} "
        f"unless {{ method {' '.join(METHODS)} }}",
        f"    http-request deny status 501 {_json_reply('not implemented', _WEBSOCKET_DETAIL)} "
        "if { req.hdr(upgrade) -m sub -i websocket }",
        f"    http-request deny status 400 {_json_reply('bad request', _TARGET_DETAIL)} "
        "if { url -m reg '[^!-~]' }",
        # req.hdrs is the whole header block, its CRLFs included; a lone CR or LF never
        # gets this far (HAProxy's parser refuses it), a tab is allowed.
        f"    http-request deny status 400 {_json_reply('bad request', _HEADER_DETAIL)} "
        r"if { req.hdrs -m reg '[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]' }",
        # A Content-Length is judged before any body byte is read. A chunked body cannot
        # be measured up front (HAProxy sees one buffer of it), and no endpoint takes one.
        f"    http-request deny deny_status 413 if {{ req.body_size gt {config.max_body_bytes} }}",
        f"    http-request deny status 411 {length_required} if "
        "{ req.hdr(transfer-encoding) -m found }",
        # retry-on resends a request whose worker died before answering. One that may have
        # done the harm must not be resent: /crash would kill the next worker, and only GET
        # and HEAD are safe to repeat. `path` has no query string, and url_dec gives the
        # decoded path the application routes on (/%63rash is /crash).
        "    http-request disable-l7-retry if "
        f"{{ path,url_dec -m str {_path_words(config.no_retry_paths)} }}",
        "    http-request disable-l7-retry unless METH_GET",
        # after-response rules reach HAProxy's own answers (413, 502, 503) too.
        f"    http-after-response set-header X-Served-By {_literal(config.served_by)}",
        "    http-after-response set-header X-Request-ID %[var(txn.request_id)] if "
        "{ var(txn.request_id) -m found } !{ res.hdr(x-request-id) -m found }",
        f"    default_backend {BACKEND}",
        "",
        f"backend {BACKEND}",
        # empty-response is what a worker killed mid-request leaves. Not response-timeout:
        # a request that ran for timeout_server is an expensive one (a /generatecert under
        # load), and resending it would multiply the overload.
        "    retry-on conn-failure empty-response",
        # With several servers, every retry goes to another one: a replica that is gone
        # refuses or drops the next attempt too.
        *(["    option redispatch 1"] if len(config.servers) > 1 else []),
        "    option httpchk GET /health",
        # The probe header lets the app leave the edge's own checks out of the request log.
        f"    http-check send hdr User-Agent {HEALTH_CHECK_AGENT} hdr {PROBE_HEADER} edge",
        "    http-check expect status 200",
        f"    timeout check {config.timeout_check}",
        # fall 5 (about 15 s of silence): a gunicorn restart, 1-2 s in the backlog, must not
        # mark the only server DOWN, since HAProxy then answers 503 at once instead of
        # letting requests wait; in a cluster, replicas starved of CPU while others start
        # must not all go DOWN together. A replica that is gone refuses at once, and the
        # request is resent to another. rise 1: back in service on the first good answer.
        *(
            f"    server {SERVER_PREFIX}{n} {backend_address(server)} check inter 1s fall 5 "
            f"rise 1 maxconn {config.backend_maxconn}"
            for n, server in enumerate(config.servers, 1)
        ),
        "",
    ]
    return "\n".join(lines)
