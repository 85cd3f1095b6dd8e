"""The TLS files a MongoDB URL names (DocumentDB's tlsCAFile): a missing or unusable one is a
StoreError that names it, never a bare OSError. No server is needed: the client is built
without connecting, and it reads these files when it is built."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloud_phoenix.store.base import StoreError
from cloud_phoenix.store.mongodb import MongoStore
from tests.fixtures.certs import self_signed_pem

URL = "mongodb://phoenix:hunter2@127.0.0.1:9/phoenix?tls=true&replicaSet=rs0"


def refused(url: str) -> str:
    with pytest.raises(StoreError) as caught:
        MongoStore(url)
    message = str(caught.value)
    assert "hunter2" not in message
    return message


def test_a_missing_ca_file_is_named_with_what_to_do() -> None:
    message = refused(f"{URL}&tlsCAFile=/etc/ssl/certs/rds-global-bundle.pem")
    assert "tlsCAFile=/etc/ssl/certs/rds-global-bundle.pem" in message
    assert "127.0.0.1:9" in message
    assert "put the file there or correct the path" in message


def test_a_ca_file_that_holds_no_certificate(tmp_path: Path) -> None:
    page = tmp_path / "bundle.pem"
    page.write_text("<html>503 Service Unavailable</html>")
    assert f"tlsCAFile={page}" in refused(f"{URL}&tlsCAFile={page}")


def test_a_folder_given_as_the_ca_file(tmp_path: Path) -> None:
    assert f"tlsCAFile={tmp_path}" in refused(f"{URL}&tlsCAFile={tmp_path}")


def test_the_file_named_is_the_one_that_fails(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_bytes(self_signed_pem("test CA"))
    missing = tmp_path / "client.pem"
    message = refused(f"{URL}&tlsCAFile={ca}&tlsCertificateKeyFile={missing}")
    assert f"tlsCertificateKeyFile={missing}" in message
    assert "tlsCAFile" not in message


def test_a_readable_ca_bundle_builds_the_store_without_a_server(tmp_path: Path) -> None:
    ca = tmp_path / "rds-global-bundle.pem"
    ca.write_bytes(self_signed_pem("test CA one") + self_signed_pem("test CA two"))
    store = MongoStore(f"{URL}&tlsCAFile={ca}")
    store.close()
