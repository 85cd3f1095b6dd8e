"""Which requests are a platform's probes and scrapes, counted in the metrics but not
journaled: at 6 to 17 thousand a day per instance they would bury the requests in /logs.

A probe is a GET of /health, /ready or /metrics that comes straight from the private
network, with no proxy in between (no X-Forwarded-For), and says what it is: the header
X-Phoenix-Probe, which a platform sets where it can (the kubelet's httpHeaders, the edge's
own check), or the user agent of the ALB's health checker, the kubelet or Prometheus.
A client cannot pose as one: whatever reaches the instance through a load balancer, an
ingress or the edge carries X-Forwarded-For, and the public internet has no private address.
The edge applies the same rule (stack/edge/haproxy.py), and passes a probe on without the
X-Forwarded-For it sets on everything else.
"""

from __future__ import annotations

import ipaddress
import re

PROBE_HEADER = "X-Phoenix-Probe"
PROBE_PATHS = ("/health", "/ready", "/metrics")
PROBE_METHODS = ("GET", "HEAD")
# The user agents, each to the kind the metrics count it under: one that ends in "/" is
# the start of the agent (a version follows), any other the whole of it.
PROBE_AGENTS = {
    "ELB-HealthChecker/2.0": "elb",
    "kube-probe/": "kubelet",  # kube-probe/1.29
    "Prometheus/": "prometheus",  # Prometheus/2.53.0
}
# The same as one regular expression, which both Python and HAProxy read.
# Only the dot is escaped: the agents hold no other special character, and HAProxy's
# regex library may not read every escape Python's re.escape writes.
PROBE_AGENT_PATTERN = "^({})".format(
    "|".join(
        agent.replace(".", "\\.") + ("" if agent.endswith("/") else "$") for agent in PROBE_AGENTS
    )
)
# The networks a probe comes from: RFC 1918, loopback, the shared space some clusters give
# their pods (RFC 6598), and IPv6's unique local and loopback addresses.
PRIVATE_NETWORKS = (
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "127.0.0.0/8",
    "100.64.0.0/10",
    "fc00::/7",
    "::1/128",
)

_AGENT = re.compile(PROBE_AGENT_PATTERN)
_NETWORKS = tuple(ipaddress.ip_network(network) for network in PRIVATE_NETWORKS)


def private_address(host: str) -> bool:
    """Whether `host` is an address in PRIVATE_NETWORKS (an IPv4-mapped IPv6 one as IPv4)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:  # a Unix socket's peer, or a name: not an address to believe
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in _NETWORKS)


def probe_kind(
    method: str, path: str, header: bool, user_agent: str, forwarded: bool, client: str | None
) -> str | None:
    """What kind of probe the request is ("header", "elb", "kubelet", "prometheus"), or
    None if it is a request to journal. `header`: it has PROBE_HEADER; `forwarded`: it has
    X-Forwarded-For; `client`: the address it came from, None if it has none (a Unix
    socket's peer, or one gone before its connection was accepted: this host's own)."""
    if forwarded or path not in PROBE_PATHS or method not in PROBE_METHODS:
        return None
    if header:
        kind: str | None = "header"
    else:
        match = _AGENT.match(user_agent)  # group 1 is the agent's key: "$" takes no text
        kind = PROBE_AGENTS[match[1]] if match else None
    if kind is None or (client is not None and not private_address(client)):
        return None
    return kind
