"""Which commit path the MongoDB store takes on the server CI gives it: a transaction on a
replica set (as Atlas and DocumentDB run), the position compare-and-set on a standalone
server. CI says which it set up (PHOENIX_TEST_MONGODB_TRANSACTIONS), so that a job meant to
exercise the transaction path cannot pass on the other one."""

from __future__ import annotations

import logging
import os

import pytest

from cloud_phoenix.store.mongodb import MongoStore
from tests.fixtures.stores import MONGO_ENV, MONGO_SKIP, drop_mongo_database, fresh_mongo_url
from tests.store.test_contract import FILE, at, batch

TRANSACTIONS_ENV = "PHOENIX_TEST_MONGODB_TRANSACTIONS"


def test_the_store_commits_on_the_path_the_server_offers(caplog: pytest.LogCaptureFixture) -> None:
    if not os.environ.get(MONGO_ENV):
        pytest.skip(MONGO_SKIP)
    expected = os.environ.get(TRANSACTIONS_ENV)
    if expected not in {"true", "false"}:
        pytest.skip(f"{TRANSACTIONS_ENV} (true or false) does not say what the server is")
    url = fresh_mongo_url(os.environ[MONGO_ENV])
    store = MongoStore(url)
    try:
        store.migrate()
        entries, end = batch([at(1), at(2), at(3)])
        with caplog.at_level(logging.INFO, logger="cloud_phoenix.store.mongodb"):
            assert store.commit_batch(FILE, 0, end, entries) == 3
        assert store.positions() == {FILE: end}
    finally:
        store.close()
        drop_mongo_database(url)
    said = [r.getMessage() for r in caplog.records if "batches commit" in r.getMessage()]
    assert said, caplog.text
    path = "in transactions" if expected == "true" else "by position compare-and-set"
    assert path in said[0], said
