"""Database URLs: refused where the drivers could read the password differently; shown and
scrubbed as the drivers read them. libpq, pymongo and urllib parse here, no server runs."""

from __future__ import annotations

import string
from urllib.parse import quote, unquote, urlsplit

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from psycopg.conninfo import conninfo_to_dict
from pymongo.errors import OperationFailure
from pymongo.uri_parser import parse_uri

from cloud_phoenix import exitcodes
from cloud_phoenix.backup import BackupError
from cloud_phoenix.backup.snapshot import backend_name, source_name
from cloud_phoenix.config import ConfigError, Settings
from cloud_phoenix.store import StoreError, StoreUnavailable, open_store
from cloud_phoenix.store.mongodb import MongoStore
from cloud_phoenix.store.urls import (
    check_database_url,
    redact_url,
    scrub,
    url_backend,
    url_database,
    url_problem,
    url_secrets,
)

# `?`, `/`, `@`, `#` end the user information for some readers only; ':' is a second
# separator to pymongo, '+' a space, '%' an escape; '[' breaks urllib; a space is stripped.
RESERVED = "?/@#:+%[] \n"
SCHEMES = ("postgresql", "mongodb")


def password_with(char: str) -> str:
    return f"{char}x!~Q*{char}*Z~!k{char}"


def pieces(text: str) -> set[str]:
    return {text[i : i + 3] for i in range(len(text) - 2)}


def url_for(scheme: str, password: str, host: str = "db.example") -> str:
    return f"{scheme}://phoenix:{password}@{host}/phoenix"


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("char", RESERVED)
def test_an_unencoded_reserved_character_is_refused_without_quoting_the_password(
    scheme: str, char: str
) -> None:
    password = password_with(char)
    url = url_for(scheme, password)
    problem = url_problem(url)
    assert problem is not None and "percent-encode" in problem
    with pytest.raises(ConfigError, match="DB_CONNECTION_STRING") as refused:
        check_database_url(Settings.from_env({"DB_CONNECTION_STRING": url}).db_url)
    with pytest.raises(StoreError) as store_refused:
        open_store(url)
    with pytest.raises(BackupError) as backup_refused:
        backend_name(url)
    assert backup_refused.value.code == 64
    shown = [problem, str(refused.value), str(store_refused.value), str(backup_refused.value)]
    shown.append(redact_url(url))
    for text in shown:
        assert not pieces(password) & pieces(text), text


def test_the_issues_url_no_longer_shows_the_start_of_its_password() -> None:
    url = "postgresql://phoenix2:ab?Q9zzSecretTail@host/db"
    assert redact_url(url) == "postgresql://(unreadable URL)"
    assert url_problem(url) is not None


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("char", RESERVED)
def test_a_percent_encoded_password_is_accepted_and_read_alike_by_every_driver(
    scheme: str, char: str
) -> None:
    password = password_with(char)
    url = url_for(scheme, quote(password, safe=""))
    assert url_problem(url) is None
    assert Settings.from_env({"DB_CONNECTION_STRING": url}).db_url == url
    check_database_url(url)
    assert conninfo_to_dict(url.replace(scheme, "postgresql", 1))["password"] == password
    assert parse_uri(url.replace(scheme, "mongodb", 1))["password"] == password
    assert unquote(urlsplit(url).password or "") == password
    port = 5432 if scheme == "postgresql" else 27017
    assert redact_url(url) == f"{scheme}://db.example:{port}"
    assert source_name(url) == f"{scheme}://db.example:{port}/phoenix"
    assert password in url_secrets(url)


USERINFO = st.text(
    alphabet=st.sampled_from(
        string.ascii_letters[:6] + string.digits[:3] + "-._~!$&'()*,;=" + RESERVED
    ),
    max_size=12,
)


@settings(max_examples=500)
@given(user=USERINFO, password=USERINFO)
@example(user="u", password="ab?Q9")
@example(user="u", password="ab@cd")
@example(user="u", password="12/cd@x")
@example(user="u", password="a%zz")
@example(user="u", password="%00")
@example(user="u", password="%A0")
def test_what_is_accepted_every_reader_splits_alike(user: str, password: str) -> None:
    url = f"postgresql://{user}:{password}@db.example:5433/phoenix"
    if url_problem(url) is not None:
        return
    libpq = conninfo_to_dict(url)
    rfc = urlsplit(url)
    assert libpq.get("host") == rfc.hostname == "db.example"
    assert libpq.get("dbname") == "phoenix"
    assert str(libpq.get("password") or "") == unquote(rfc.password or "")
    assert str(libpq.get("user") or "") == unquote(rfc.username or "")
    if user:  # pymongo refuses an empty user name, with no part of the URL in its message
        mongo = parse_uri(url.replace("postgresql", "mongodb", 1))
        assert mongo["nodelist"] == [("db.example", 5433)]
        assert mongo["username"] == libpq.get("user")
        assert (mongo["password"] or "") == str(libpq.get("password") or "")


@given(
    password=st.text(
        st.characters(codec="utf-8", exclude_characters="\x00"),  # no lone surrogates
        min_size=1,
        max_size=20,
    )
)
def test_any_password_once_encoded_is_accepted_and_read_back_whole(password: str) -> None:
    url = f"postgresql://phoenix:{quote(password, safe='')}@db.example/phoenix"
    assert url_problem(url) is None
    assert conninfo_to_dict(url)["password"] == password
    assert parse_uri(url.replace("postgresql", "mongodb", 1))["password"] == password


@pytest.mark.parametrize("escape", ["%00", "%A0", "%C3", "%zz", "%4"])
def test_an_escape_that_libpq_and_pymongo_would_read_differently_is_refused(escape: str) -> None:
    # libpq refuses NUL, psycopg bytes that are not UTF-8, and both a bare '%'; pymongo
    # takes NUL and makes U+FFFD of the others: a different password, or a quoted error.
    assert url_problem(f"postgresql://u:ab{escape}@db/x") is not None
    assert url_problem(f"mongodb://u{escape}:ab@db/x") is not None


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "postgresql://user:secret@db.example:5432/phoenix?sslmode=require",
            "postgresql://db.example:5432",
        ),
        ("postgres://user:secret@db.example/phoenix", "postgres://db.example:5432"),
        ("postgresql://u:secret@h1:5433,h2/db", "postgresql://h1:5433,h2:5432"),
        ("postgresql://u:secret@[::1]:5433/db", "postgresql://[::1]:5433"),
        (
            "postgresql:///phoenix?host=/run/postgresql&password=secret",
            "postgresql://%2Frun%2Fpostgresql:5432",
        ),
        ("mongodb://admin:secret@mongo/phoenix", "mongodb://mongo:27017"),
        ("mongodb://u:p%40secret@db:27017/phoenix?authSource=admin", "mongodb://db:27017"),
        ("mongodb://u:secret@h1:27017,h2:27018/db?replicaSet=rs", "mongodb://h1:27017,h2:27018"),
        ("mongodb://u:secret@[::1]:27017/db", "mongodb://[::1]:27017"),
        ("mongodb+srv://u:secret@cluster.example/phoenix", "mongodb+srv://cluster.example"),
        (
            "mongodb://u:secret@%2Ftmp%2Fmongodb-27017.sock/db",
            "mongodb://%2Ftmp%2Fmongodb-27017.sock",
        ),
        ("mongodb://u:p@ss:secret@[::1]:27017/db", "mongodb://(unreadable URL)"),
        ("sqlite:////var/lib/phoenix.db", "sqlite"),
        ("phoenix.db", "(not a database URL)"),
    ],
)
def test_a_url_is_shown_as_its_driver_reads_its_servers(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert "secret" not in redact_url(url)


def test_the_database_is_the_drivers_reading() -> None:
    assert url_database("postgresql://u:p@h/my%20db?sslmode=disable") == "my db"
    assert url_database("mongodb://u:p@h/logs?authSource=admin") == "logs"
    assert url_database("postgresql://u:p@h") == ""
    assert url_database("postgresql://u:a@b@h/db") == ""  # refused: no reading at all


def test_the_secrets_are_the_password_as_written_decoded_and_as_the_driver_took_it() -> None:
    assert set(url_secrets("mongodb://u:p%40ss@db/x")) == {"p%40ss", "p@ss"}
    assert set(url_secrets("postgresql://u:p%40ss@db/x?password=other")) == {
        "p%40ss",
        "p@ss",
        "other",
    }
    # Refused, but were it ever read: what libpq would take is a secret too.
    assert "ab?Q9zzTail" in url_secrets("postgresql://u:ab?Q9zzTail@host/db")
    assert url_secrets("mongodb://db/x") == ()
    assert url_secrets("sqlite:///x.db") == ()


def test_scrubbing_replaces_every_form_then_joins_the_lines() -> None:
    secrets = url_secrets("postgresql://u:a%0Ab%20c@db/x")
    message = 'connection failed: user "u"\n\tpassword a\nb c was refused (a%0Ab%20c)'
    assert scrub(message, secrets) == 'connection failed: user "u" password *** was refused (***)'


@pytest.mark.parametrize("char", "?/@#:+%")
def test_a_driver_error_quoting_the_password_is_scrubbed(char: str) -> None:
    password = password_with(char)
    url = url_for("mongodb", quote(password, safe=""), host="127.0.0.1:9")
    store = MongoStore(url)  # connects on first use only: no server is needed here
    try:
        with pytest.raises(StoreUnavailable) as raised, store._errors("ping the server"):
            raise OperationFailure(f"auth failed for phoenix:{password} ({url})", code=18)
    finally:
        store.close()
    assert "mongodb://127.0.0.1:9" in str(raised.value)
    assert not pieces(password) & pieces(str(raised.value))
    assert not pieces(quote(password, safe="")) & pieces(str(raised.value))


@pytest.mark.parametrize(
    ("url", "backend"),
    [
        ("sqlite:///var/db/phoenix.sqlite3", "sqlite"),
        ("SQLite:///var/db/phoenix.sqlite3", "sqlite"),
        ("postgresql://u:p@db/phoenix", "postgresql"),
        ("postgres://u:p@db/phoenix", "postgresql"),
        ("mongodb://u:p@db/phoenix", "mongodb"),
        ("mongodb+srv://u:p@cluster.example/phoenix", "mongodb"),
    ],
)
def test_the_store_and_the_backups_read_a_scheme_as_the_same_backend(
    url: str, backend: str
) -> None:
    assert url_backend(url) == backend_name(url) == backend


@pytest.mark.parametrize("url", ["mysql://u:p@db/phoenix", "file:///tmp/x", "no-scheme"])
def test_the_store_and_the_backups_refuse_another_scheme_with_one_message(url: str) -> None:
    with pytest.raises(StoreError) as by_store:
        open_store(url)
    with pytest.raises(BackupError) as by_backup:
        backend_name(url)
    assert str(by_store.value) == str(by_backup.value)
    assert "unsupported database URL scheme" in str(by_store.value)
    assert by_backup.value.code == exitcodes.USAGE
