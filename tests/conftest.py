"""Fixtures shared by every test folder; each lives in its own module under tests/fixtures."""

from __future__ import annotations

# postgres_server, postgres_url, postgres_db_url (a fresh database); phoenix_server (serve);
# backend, store_url, connect, store (one fresh store of each kind); browser (Chromium);
# receiver (a loopback webhook); engine, docker, image (a private Docker Engine, the image);
# swarm_stack (scripts/swarm up on a private engine of its own, down at the end).
# tiers: the guard that keeps servers out of the fast tier; pytester: for that guard's test.
pytest_plugins = [
    "pytester",
    "tests.fixtures.browser",
    "tests.fixtures.containers",
    "tests.fixtures.postgres",
    "tests.fixtures.server",
    "tests.fixtures.stores",
    "tests.fixtures.swarm",
    "tests.fixtures.tiers",
    "tests.fixtures.webhook",
]
