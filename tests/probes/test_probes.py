"""Which requests are a platform's probes (cloud_phoenix.probes): only what comes straight
from the private network, to a probe's path, saying what it is."""

from __future__ import annotations

import re

import pytest

from cloud_phoenix.probes import PROBE_AGENT_PATTERN, PROBE_AGENTS, private_address, probe_kind


@pytest.mark.parametrize(
    ("user_agent", "kind"),
    [
        ("ELB-HealthChecker/2.0", "elb"),
        ("kube-probe/1.29", "kubelet"),
        ("Prometheus/2.53.0", "prometheus"),
        ("ELB-HealthChecker/2.0 x", None),  # the ALB's agent is the whole of it
        ("Mozilla/5.0 kube-probe/1.29", None),
        ("prometheus/2.53.0", None),
        ("", None),
    ],
)
def test_the_agents_of_the_platform(user_agent: str, kind: str | None) -> None:
    assert probe_kind("GET", "/health", False, user_agent, False, "10.0.1.2") == kind


@pytest.mark.parametrize(
    ("method", "path", "forwarded", "client", "kind"),
    [
        ("GET", "/metrics", False, "10.0.1.2", "kubelet"),
        ("HEAD", "/ready", False, "192.168.0.9", "kubelet"),
        ("GET", "/health", False, "127.0.0.1", "kubelet"),  # through the edge
        ("GET", "/health", False, "::ffff:172.20.0.5", "kubelet"),
        ("GET", "/health", False, "fd00::5", "kubelet"),
        ("GET", "/health", True, "10.0.1.2", None),  # through a load balancer: a client
        ("GET", "/health", False, "203.0.113.9", None),  # from the internet
        ("GET", "/health", False, "172.32.0.1", None),  # just past 172.16.0.0/12
        ("GET", "/health", False, "testclient", None),
        ("GET", "/health", False, "", None),
        ("GET", "/health", False, None, "kubelet"),  # a Unix socket's peer: this host
        ("POST", "/health", False, "10.0.1.2", None),
        ("GET", "/generatecert", False, "10.0.1.2", None),  # a probe's agent, not its path
        ("GET", "/health/", False, "10.0.1.2", None),
    ],
)
def test_a_probe_comes_straight_from_the_private_network_to_a_probe_path(
    method: str, path: str, forwarded: bool, client: str | None, kind: str | None
) -> None:
    assert probe_kind(method, path, False, "kube-probe/1.29", forwarded, client) == kind
    assert probe_kind(method, path, True, "curl/8", forwarded, client) == (kind and "header")


def test_one_pattern_for_python_and_haproxy_says_each_agent() -> None:
    """HAProxy reads the pattern too: nothing in it but what both regex dialects agree on."""
    assert re.fullmatch(r"\^\((?:[A-Za-z/-]|\\\.|[0-9]|\$|\|)+\)", PROBE_AGENT_PATTERN)
    for agent in PROBE_AGENTS:
        assert re.match(PROBE_AGENT_PATTERN, agent + "1.0" * agent.endswith("/"))


def test_private_addresses() -> None:
    assert private_address("10.255.0.1") and private_address("100.64.3.4")
    assert not private_address("8.8.8.8") and not private_address("2001:db8::1")
