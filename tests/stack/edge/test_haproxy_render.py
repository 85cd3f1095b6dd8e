"""The edge's configuration as text, its checks of unsafe values, and the stats parsing."""

from __future__ import annotations

import json
import re
import socket
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httptools
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloud_phoenix.app import logroutes, pages, routes
from cloud_phoenix.app.requestlog import valid_request_id
from cloud_phoenix.config import Settings
from cloud_phoenix.stack import ops
from cloud_phoenix.stack.edge.haproxy import (
    METHODS,
    REQUEST_ID_PATTERN,
    EdgeConfig,
    backend_address,
    parse_duration,
    render,
)
from cloud_phoenix.stack.edge.program import command_line
from cloud_phoenix.stack.edge.stats import EdgeStats, EdgeStatsError, parse_stat


def edge_config(**changes: Any) -> EdgeConfig:
    values: dict[str, Any] = {
        "edge_fd": 7,
        "servers": ("127.0.0.1:41234",),
        "stats_socket": Path("/run/phoenix/haproxy.sock"),
        "served_by": "phoenix-edge",
    }
    return EdgeConfig(**{**values, **changes})


def lines_of(text: str, section: str) -> list[str]:
    """The stripped lines of one section ("global", "defaults", "frontend edge", ...)."""
    found: list[str] = []
    inside = False
    for line in text.splitlines():
        if line and not line.startswith((" ", "#")):
            inside = line == section
        elif inside and line.strip():
            found.append(line.strip())
    return found


@pytest.fixture
def text() -> str:
    return render(edge_config())


# -- the admin socket ----------------------------------------------------------------------


def test_stats_socket_is_a_private_unix_socket_and_nothing_listens_on_tcp(text: str) -> None:
    stats = [line for line in text.splitlines() if "stats" in line]
    assert stats == ['    stats socket "unix@/run/phoenix/haproxy.sock" mode 600 level admin']
    binds = [line.strip() for line in text.splitlines() if line.strip().startswith("bind")]
    assert binds == ["bind fd@7 name edge"]
    assert "stats enable" not in text and "stats uri" not in text


def test_relative_stats_socket_stays_a_unix_socket() -> None:
    # Without unix@, HAProxy reads "var/run/haproxy.sock" as a TCP host name.
    text = render(edge_config(stats_socket=Path("var/run/haproxy.sock")))
    assert 'stats socket "unix@var/run/haproxy.sock" mode 600' in text


def test_stats_socket_path_with_spaces_and_quotes_is_one_quoted_word() -> None:
    text = render(edge_config(stats_socket=Path('/tmp/my "edge" $dir/h.sock')))
    assert 'stats socket "unix@/tmp/my \\"edge\\" \\$dir/h.sock" mode 600' in text


def test_global_runs_in_the_foreground_with_a_hard_stop(text: str) -> None:
    glob = lines_of(text, "global")
    assert "hard-stop-after 30s" in glob
    assert "maxconn 4096" in glob
    for word in ("daemon", "master-worker", "pidfile", "nbproc", "chroot", "user ", "group "):
        assert not any(line.startswith(word) for line in glob), word


# -- retries -------------------------------------------------------------------------------


def test_crash_is_never_retried_whatever_its_spelling(text: str) -> None:
    front = lines_of(text, "frontend edge")
    assert 'http-request disable-l7-retry if { path,url_dec -m str "/crash" "/crash/" }' in front


def test_only_get_and_head_are_retried(text: str) -> None:
    # METH_GET is HAProxy's predefined ACL for GET and HEAD.
    assert "http-request disable-l7-retry unless METH_GET" in lines_of(text, "frontend edge")


def test_no_retry_paths_are_configurable_and_quoted() -> None:
    text = render(edge_config(no_retry_paths=("/crash", "/admin/wipe/", "/")))
    assert '{ path,url_dec -m str "/crash" "/crash/" "/admin/wipe/" "/admin/wipe" "/" }' in text


def test_retry_on_dead_worker_but_not_on_slow_answers(text: str) -> None:
    back = lines_of(text, "backend app")
    assert "retry-on conn-failure empty-response" in back
    assert "response-timeout" not in text
    assert "retries 5" in lines_of(text, "defaults")
    assert "retries 0" in lines_of(render(edge_config(retries=0)), "defaults")


def test_server_timeout_covers_a_certificate_that_waits_for_its_key() -> None:
    config = edge_config()
    cert_wait = Settings.from_env({}).cert_max_wait
    assert parse_duration(config.timeout_server) >= 2 * cert_wait
    assert parse_duration(config.timeout_check) < parse_duration(config.timeout_server)


# -- health checks and the server ----------------------------------------------------------


def test_health_check_tolerates_a_gunicorn_restart(text: str) -> None:
    back = lines_of(text, "backend app")
    assert "option httpchk GET /health" in back
    assert "http-check expect status 200" in back
    assert (
        "http-check send hdr User-Agent phoenix-edge-health-check hdr X-Phoenix-Probe edge" in back
    )
    assert "timeout check 2s" in back
    [server] = [line for line in back if line.startswith("server ")]
    assert server == "server app1 127.0.0.1:41234 check inter 1s fall 5 rise 1 maxconn 64"


def test_a_cluster_edge_checks_every_replica_and_resends_to_another() -> None:
    replicas = tuple(f"127.0.1.{n}:8080" for n in range(1, 4))
    back = lines_of(render(edge_config(servers=replicas)), "backend app")
    assert [line for line in back if line.startswith("server ")] == [
        f"server app{n} 127.0.1.{n}:8080 check inter 1s fall 5 rise 1 maxconn 64"
        for n in range(1, 4)
    ]
    # Every retry goes to another server; the same rules as on one host otherwise.
    assert "option redispatch 1" in back
    assert "retry-on conn-failure empty-response" in back


def test_one_server_has_no_other_to_resend_to(text: str) -> None:
    assert "redispatch" not in text


def test_haproxy_started_as_root_can_drop_to_a_user(text: str) -> None:
    assert not [line for line in lines_of(text, "global") if line.startswith(("uid", "gid"))]
    dropped = lines_of(render(edge_config(run_as=10001)), "global")
    assert {"uid 10001", "gid 10001"} <= set(dropped)


def test_backend_maxconn_and_timeouts_are_rendered() -> None:
    text = render(
        edge_config(
            backend_maxconn=8,
            maxconn=100,
            timeout_server="45s",
            timeout_queue="3s",
            timeout_http_keep_alive="500ms",
            hard_stop_after="2m",
        )
    )
    defaults = lines_of(text, "defaults")
    assert "timeout server 45s" in defaults
    assert "timeout queue 3s" in defaults
    assert "timeout http-keep-alive 500ms" in defaults
    assert {"timeout connect 5s", "timeout client 75s", "timeout http-request 10s"} <= set(defaults)
    assert "hard-stop-after 2m" in lines_of(text, "global")
    assert text.splitlines()[-1].endswith("maxconn 8")


def test_an_idle_client_connection_outlives_a_load_balancers_idle_timeout(text: str) -> None:
    # Behind an ALB or ingress-nginx (60 s idle), the balancer must close first, or it sends
    # a request into a connection the edge is closing: a 502 it never retries. HAProxy closes
    # an idle connection after the shorter of these two (measured: 30 s with client 30s).
    seconds = {
        name: int(value.removesuffix("s"))
        for line in lines_of(text, "defaults")
        if line.startswith("timeout ")
        for name, value in [line.split()[1:]]
    }
    assert min(seconds["client"], seconds["http-keep-alive"]) > 60


def test_keep_alive_with_clients_and_a_fresh_connection_per_request_to_the_app(
    text: str,
) -> None:
    defaults = lines_of(text, "defaults")
    assert "option http-server-close" in defaults
    assert "option http-keep-alive" not in defaults
    assert {"mode http", "option abortonclose"} <= set(defaults)


@pytest.mark.parametrize(
    ("backend", "rendered"),
    [
        ("127.0.0.1:8000", "127.0.0.1:8000"),
        ("[::1]:8000", "[::1]:8000"),
        ("localhost:08000", "localhost:8000"),
        ("app-1.internal:1", "app-1.internal:1"),
    ],
)
def test_backend_addresses(backend: str, rendered: str) -> None:
    assert backend_address(backend) == rendered
    assert f"server app1 {rendered} check" in render(edge_config(servers=(backend,)))


# -- request ids, headers, bodies ----------------------------------------------------------


def test_request_id_is_set_only_when_the_client_sent_no_usable_one(text: str) -> None:
    front = lines_of(text, "frontend edge")
    assert (
        "http-request set-header X-Request-ID %[unique-id] unless "
        "{ req.fhdr_cnt(x-request-id) eq 1 } "
        "{ req.fhdr(x-request-id) -m reg '^[!-~]{1,128}$' }"
    ) in front
    assert 'unique-id-format "%[uuid(),regsub(-,,g)]"' in front
    # The id is set before any rule that can answer, so 413s and 502s carry it too.
    set_id = front.index(next(line for line in front if "set-header X-Request-ID" in line))
    first_deny = front.index(next(line for line in front if line.startswith("http-request deny")))
    assert set_id < first_deny


@given(st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=200), max_size=140))
def test_request_id_pattern_agrees_with_the_application(value: str) -> None:
    # The edge replaces exactly the ids the application would replace: otherwise a
    # retried request would get a different id from each worker.
    assert (re.fullmatch(REQUEST_ID_PATTERN[1:-1], value) is not None) == valid_request_id(value)


def test_request_id_pattern_bounds() -> None:
    pattern = REQUEST_ID_PATTERN[1:-1]
    assert re.fullmatch(pattern, "a" * 128)
    assert not re.fullmatch(pattern, "a" * 129)
    assert not re.fullmatch(pattern, "has space")


def test_served_by_is_set_on_every_answer_and_escaped() -> None:
    text = render(edge_config(served_by="edge \"one\" $HOME 100% #1 'x' \\"))
    assert (
        'http-after-response set-header X-Served-By "edge \\"one\\" \\$HOME 100%% #1 \'x\' \\\\"'
    ) in text


def test_clients_cannot_forge_their_address(text: str) -> None:
    front = lines_of(text, "frontend edge")
    delete = front.index("http-request del-header X-Forwarded-For")
    assert front[delete + 1] == (
        "http-request set-header X-Forwarded-For %[src] unless { var(txn.probe) -m bool }"
    )
    assert "http-request set-header X-Forwarded-Proto http" in front


def test_a_probe_is_told_by_the_forwarded_for_it_came_with_before_that_goes(text: str) -> None:
    front = lines_of(text, "frontend edge")
    delete = front.index("http-request del-header X-Forwarded-For")
    probes = [n for n, line in enumerate(front) if "set-var(txn.probe)" in line]
    assert len(probes) == 2 and max(probes) < delete
    for n in probes:
        assert "!{ req.hdr(x-forwarded-for) -m found }" in front[n]
        assert "{ src 10.0.0.0/8 172.16.0.0/12 192.168.0.0/16 127.0.0.0/8" in front[n]
        assert "{ path -m str /health /ready /metrics }" in front[n]


def test_bodies_over_the_limit_are_refused(text: str) -> None:
    front = lines_of(render(edge_config(max_body_bytes=1000)), "frontend edge")
    assert "http-request deny deny_status 413 if { req.body_size gt 1000 }" in front
    [chunked] = [line for line in front if "transfer-encoding" in line]
    assert chunked.startswith("http-request deny status 411 content-type application/json")
    assert "option http-buffer-request" not in text


def test_edge_errors_are_json_like_the_application() -> None:
    text = render(edge_config(max_body_bytes=1000))
    bodies: dict[int, dict[str, str]] = {}
    for line in text.splitlines():
        match = re.search(r"(?:http-error status|deny status) (\d+) .* string '([^']*)'", line)
        if match:
            bodies[int(match[1])] = json.loads(match[2])
    assert set(bodies) == {400, 408, 411, 413, 500, 501, 502, 503, 504}
    assert all(set(body) == {"error", "detail"} for body in bodies.values())
    assert "1000 bytes" in bodies[413]["detail"]
    assert "hdr Retry-After 1" in next(line for line in text.splitlines() if "status 503" in line)


# -- what only the application's server would answer ---------------------------------------


class _Ignored:
    """A parser protocol without callbacks: only whether httptools accepts the bytes counts."""


def _server_refuses(request: bytes) -> bool:
    """Whether uvicorn's parser (httptools, as `phoenix serve` and `up` run it) refuses it."""
    try:
        httptools.HttpRequestParser(_Ignored()).feed_data(request)
    except httptools.HttpParserUpgrade:
        return False
    except httptools.HttpParserError:
        return True
    return False


def _refusal_pattern(text: str, fetch: str) -> re.Pattern[bytes]:
    [line] = [x for x in lines_of(text, "frontend edge") if f"{{ {fetch} -m reg " in x]
    assert line.startswith("http-request deny status 400 ")
    match = re.search(rf"{{ {re.escape(fetch)} -m reg '([^']+)' }}$", line)
    assert match is not None, line
    return re.compile(match[1].encode())


def test_the_edge_refuses_the_bytes_the_servers_parser_refuses(text: str) -> None:
    # Otherwise uvicorn answers 400 itself, and the request is in no log of the application.
    target = _refusal_pattern(text, "url")
    headers = _refusal_pattern(text, "req.hdrs")
    for byte in (bytes([b]) for b in range(256)):
        refused = _server_refuses(b"GET /a" + byte + b"b HTTP/1.1\r\nHost: e\r\n\r\n")
        assert (target.search(b"/a" + byte + b"b") is not None) == refused, byte
        if byte in b"\r\n":
            continue  # HAProxy's own parser refuses a lone CR or LF: the rule never sees one
        block = b"Host: e\r\nX-A: a" + byte + b"b\r\n\r\n"
        refused = _server_refuses(b"GET / HTTP/1.1\r\n" + block)
        assert (headers.search(block) is not None) == refused, byte


def test_websocket_handshakes_and_other_methods_are_refused_after_the_id_is_set(
    text: str,
) -> None:
    front = lines_of(text, "frontend edge")
    [methods] = [line for line in front if "{ method " in line]
    assert methods.startswith("http-request deny status 501 ")
    assert methods.endswith("unless { method GET HEAD POST PUT PATCH DELETE OPTIONS }")
    [websocket] = [line for line in front if "upgrade" in line]
    assert websocket.startswith("http-request deny status 501 ")
    assert websocket.endswith("if { req.hdr(upgrade) -m sub -i websocket }")
    set_id = next(i for i, line in enumerate(front) if "set-var(txn.request_id)" in line)
    assert set_id < front.index(methods) < front.index(websocket)
    # HAProxy stays strict: nothing it would otherwise refuse is let through to the server.
    assert "accept-invalid" not in text


def test_every_method_the_application_routes_passes_the_edge() -> None:
    routed: set[str] = set()
    for router in (routes.router, logroutes.router, ops.router, pages.router):
        for route in router.routes:
            routed |= getattr(route, "methods", set())
    assert routed and routed <= set(METHODS)


# -- refused values ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes",
    [
        {"edge_fd": 2},
        {"edge_fd": -1},
        {"servers": ("127.0.0.1",)},
        {"servers": ("127.0.0.1:0",)},
        {"servers": ("127.0.0.1:65536",)},
        {"servers": ("127.0.0.1:http",)},
        {"servers": ("a b:80",)},
        {"servers": ("[::zz]:80",)},
        {"servers": ("127.0.0.1:80\n    server evil 10.0.0.1:80",)},
        {"servers": ("-x:80",)},
        {"servers": ()},
        {"servers": "127.0.0.1:8080"},
        {"servers": ("127.0.1.1:8080", "127.0.1.2:80\n    server evil 10.0.0.1:80")},
        {"run_as": 0},
        {"run_as": True},
        {"stats_socket": Path("/tmp/a\nb.sock")},
        {"stats_socket": Path("/tmp/\u00e9.sock")},
        {"stats_socket": Path("/tmp/" + "x" * 93)},
        {"served_by": ""},
        {"served_by": " edge"},
        {"served_by": "edge\r\nSet-Cookie: x=1"},
        {"served_by": "\u00e9dge"},
        {"served_by": "e" * 129},
        {"max_body_bytes": 0},
        {"max_body_bytes": True},
        {"retries": -1},
        {"maxconn": 0},
        {"backend_maxconn": 0},
        {"backend_maxconn": 5000},
        {"timeout_server": "0"},
        {"timeout_server": "5 s"},
        {"timeout_server": "-1s"},
        {"timeout_server": "5x"},
        {"timeout_client": ""},
        {"timeout_check": "1.5s"},
        {"hard_stop_after": "30s\n    daemon"},
        {"no_retry_paths": ()},
        {"no_retry_paths": ("crash",)},
        {"no_retry_paths": ("/cr ash",)},
        {"no_retry_paths": ('/x" "/y',)},
    ],
)
def test_unsafe_values_are_refused(changes: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        edge_config(**changes)


def test_refusals_name_the_problem() -> None:
    with pytest.raises(ValueError, match="at most 97"):
        edge_config(stats_socket=Path("/tmp/" + "x" * 93))
    with pytest.raises(ValueError, match="backend_maxconn"):
        replace(edge_config(), backend_maxconn=10_000)


def test_longest_socket_path_haproxy_binds_is_accepted() -> None:
    assert "x" * 92 in render(edge_config(stats_socket=Path("/tmp/" + "x" * 92)))


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("500ms", 0.5), ("5s", 5.0), ("2m", 120.0), ("1h", 3600.0), ("250", 0.25), ("7us", 7e-6)],
)
def test_parse_duration(value: str, seconds: float) -> None:
    assert parse_duration(value) == pytest.approx(seconds)


def test_render_is_deterministic_and_ends_with_a_newline(text: str) -> None:
    assert render(edge_config()) == text
    assert text.endswith("\n")


def test_command_line_runs_haproxy_in_the_foreground() -> None:
    assert command_line("/usr/sbin/haproxy", Path("/run/h.cfg")) == [
        "/usr/sbin/haproxy",
        "-db",
        "-f",
        "/run/h.cfg",
    ]


# -- stats ---------------------------------------------------------------------------------

SHOW_STAT = (
    "# pxname,svname,qcur,qmax,scur,smax,slim,stot,status,check_status,req_rate,\n"
    "edge,FRONTEND,,,1,2,4096,40,OPEN,,17,\n"
    "app,app1,0,0,1,3,64,39,UP,L7OK,,\n"
    "app,BACKEND,0,0,1,3,410,39,UP,,,\n"
    "\n"
)


def test_parse_stat_keys_rows_by_column() -> None:
    rows = parse_stat(SHOW_STAT)
    assert [(r["pxname"], r["svname"]) for r in rows] == [
        ("edge", "FRONTEND"),
        ("app", "app1"),
        ("app", "BACKEND"),
    ]
    assert rows[0]["req_rate"] == "17"
    assert rows[1]["check_status"] == "L7OK"
    assert "" not in rows[0]


def test_parse_stat_refuses_an_answer_without_header() -> None:
    with pytest.raises(EdgeStatsError, match="header"):
        parse_stat("Unknown command.\n")


class FakeAdminSocket:
    """A Unix socket that answers each connection with `answer` (or with nothing)."""

    def __init__(self, path: Path, answer: bytes | None) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(8)
        self.sock.settimeout(0.05)  # so that the loop sees `stopped` soon
        self.answer = answer
        self.commands: list[bytes] = []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(5)
                self.commands.append(conn.recv(1024))
                if self.answer is None:
                    conn.recv(1024)  # hold the connection open until the client leaves
                else:
                    conn.sendall(self.answer)

    def close(self) -> None:
        self.stopped.set()
        self.thread.join(5)
        self.sock.close()


@pytest.fixture
def admin_path(tmp_path: Path) -> Path:
    return tmp_path / "admin.sock"


@pytest.fixture
def fake_admin(admin_path: Path) -> Iterator[FakeAdminSocket]:
    fake = FakeAdminSocket(admin_path, SHOW_STAT.encode())
    try:
        yield fake
    finally:
        fake.close()


def test_edge_stats_reads_rate_frontend_and_servers(
    fake_admin: FakeAdminSocket, admin_path: Path
) -> None:
    stats = EdgeStats(admin_path)
    assert stats.request_rate() == 17.0
    assert stats.frontend()["stot"] == "40"
    assert [s["svname"] for s in stats.servers()] == ["app1"]
    assert fake_admin.commands[0] == b"show stat\n"


def test_edge_stats_without_socket_says_so(admin_path: Path) -> None:
    with pytest.raises(EdgeStatsError, match="is the edge running"):
        EdgeStats(admin_path).request_rate()


def test_edge_stats_with_a_stale_socket_file_says_so(admin_path: Path) -> None:
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(admin_path))  # bound, never listening: what a dead HAProxy leaves
    stale.close()
    with pytest.raises(EdgeStatsError, match="nothing listens"):
        EdgeStats(admin_path).request_rate()


def test_edge_stats_gives_up_on_a_silent_socket(admin_path: Path) -> None:
    fake = FakeAdminSocket(admin_path, None)
    try:
        with pytest.raises(EdgeStatsError, match="did not answer"):
            EdgeStats(admin_path, timeout=0.2).request_rate()
    finally:
        fake.close()


def test_edge_stats_without_the_edge_frontend(admin_path: Path) -> None:
    fake = FakeAdminSocket(admin_path, b"# pxname,svname,req_rate,\nother,FRONTEND,3,\n")
    try:
        with pytest.raises(EdgeStatsError, match="no frontend 'edge'"):
            EdgeStats(admin_path).request_rate()
    finally:
        fake.close()


def test_edge_stats_sends_one_command_at_a_time(admin_path: Path) -> None:
    with pytest.raises(ValueError):
        EdgeStats(admin_path).ask("show stat; disable server app/app1")
