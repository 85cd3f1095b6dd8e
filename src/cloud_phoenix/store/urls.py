"""Database URLs: the rule that makes every reader split them alike, and how they are shown.

A password may hold characters that end the user information for one reader and not for
another: libpq reads it up to the first '@', RFC 3986 (urllib) up to the first '/', '?' or
'#', pymongo up to the last '@' before the first '/', and pymongo reads '+' as a space. A
display made by one reader then shows, as a host or a query, part of the password another
one took. So a PostgreSQL or MongoDB URL is refused unless its user and password are
percent-encoded (`url_problem`), and what is shown (`redact_url`) or scrubbed
(`url_secrets`) comes from the driver's own parser: libpq's conninfo, pymongo's.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from cloud_phoenix.config import ConfigError

# The backend each URL scheme names: the one map `open_store` and the backups pick by.
BACKENDS = {
    "sqlite": "sqlite",
    "postgresql": "postgresql",
    "postgres": "postgresql",
    "mongodb": "mongodb",
    "mongodb+srv": "mongodb",
}
POSTGRES_SCHEMES = frozenset(s for s, backend in BACKENDS.items() if backend == "postgresql")
MONGO_SCHEMES = frozenset(s for s, backend in BACKENDS.items() if backend == "mongodb")

# RFC 3986's unreserved characters and sub-delimiters, without '+' (a space to pymongo).
_PLAIN = frozenset(string.ascii_letters + string.digits + "-._~!$&'()*,;=")
_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")
ENCODE_HINT = (
    "percent-encode the user name and password, e.g. with "
    "urllib.parse.quote(password, safe=''): '@' is %40, ':' %3A, '/' %2F, '?' %3F, "
    "'#' %23, '+' %2B, '%' %25, a space %20"
)


def url_scheme(url: str) -> str:
    """The scheme, lower-cased, as `url_backend` reads it ('' without one)."""
    return url.split("://", 1)[0].lower() if "://" in url else ""


def url_backend(url: str) -> str:
    """sqlite, postgresql or mongodb, by `url`'s scheme; ValueError for any other."""
    scheme = url_scheme(url)
    try:
        return BACKENDS[scheme]
    except KeyError:
        raise ValueError(
            f"unsupported database URL scheme {scheme or '(none)'!r}: use sqlite:///path, "
            "postgresql://user:password@host/db or mongodb://host/db"
        ) from None


def url_problem(url: str) -> str | None:
    """Why the drivers could read the user or password of `url` differently, or None.

    None too for a URL that is not PostgreSQL's or MongoDB's (a SQLite path holds no
    password). The answer never quotes the URL: it is meant for a message.
    """
    if url_scheme(url) not in POSTGRES_SCHEMES | MONGO_SCHEMES:
        return None
    detail = _unencoded(url)
    if detail is None:
        return None
    return f"a character in it is not percent-encoded ({detail}); {ENCODE_HINT}"


def check_database_url(url: str) -> None:
    """Raise ConfigError naming DB_CONNECTION_STRING if `url_problem` refuses `url`: the
    commands call it where they read the settings, so that none starts with such a URL."""
    problem = url_problem(url)
    if problem:  # the message quotes no part of the URL: it may hold a password
        raise ConfigError(f"DB_CONNECTION_STRING is refused: {problem}")


def _unencoded(url: str) -> str | None:
    # urllib drops tabs and line ends and strips spaces where libpq keeps them.
    if any(ord(char) <= 0x20 or ord(char) == 0x7F for char in url):
        return "a space or a control character"
    if "#" in url:  # a fragment to urllib, text to libpq and pymongo
        return "a '#'"
    try:
        netloc = urlsplit(url).netloc
    except ValueError:  # an unmatched '[' or ']', or a character NFKC makes a delimiter
        return "a '[' or ']' in the user name or password"
    # One '@' at most, and only where RFC 3986 ends the user information: any other is
    # where a password's '/', '?' or '@' made the readers disagree.
    if url.count("@") > 1 or url.count("@") != netloc.count("@"):
        return "an '@' besides the one before the host"
    userinfo, at, _ = netloc.partition("@")
    user, _, password = userinfo.partition(":")
    if at and not (_plain(user) and _plain(password)):
        return "a reserved character in the user name or password"
    return None


def _plain(text: str) -> bool:
    """Plain characters and %XX escapes only, the escapes UTF-8 text without NUL: libpq
    refuses %00 and psycopg bytes that are not UTF-8, where pymongo takes both."""
    if not all(char in _PLAIN for char in _ESCAPE.sub("", text)):
        return False
    try:
        return "\x00" not in unquote(text, errors="strict")
    except UnicodeDecodeError:
        return False


def redact_url(url: str) -> str:
    """The servers `url` names, as its driver reads them: scheme://host:port[,host:port...].

    Never the user, password, database or options; a fixed text where the URL is refused
    by `url_problem` or its driver cannot read it (its error would quote the URL).
    """
    scheme = url_scheme(url)
    if scheme == "sqlite":
        return "sqlite"
    if scheme not in POSTGRES_SCHEMES | MONGO_SCHEMES:
        return "(not a database URL)"
    if url_problem(url) is None:
        parsed = _parse(url)
        if parsed is not None:
            return f"{scheme}://{parsed['servers']}"
    return f"{scheme}://(unreadable URL)"


def url_database(url: str) -> str:
    """The database `url` names, as its driver reads it; '' when it names none or is refused."""
    parsed = _parse(url) if url_problem(url) is None else None
    return str(parsed["database"] or "") if parsed else ""


def url_secrets(url: str) -> tuple[str, ...]:
    """Text no message may hold, longest first: the password as written, percent-decoded,
    and as the driver read it (libpq also takes one from `?password=`)."""
    found: set[str] = set()
    try:
        written = urlsplit(url).password
    except ValueError:
        written = None
    if written:
        found |= {written, unquote(written)}
    parsed = _parse(url) if url_scheme(url) in POSTGRES_SCHEMES | MONGO_SCHEMES else None
    if parsed and parsed["password"]:
        found.add(str(parsed["password"]))
    return tuple(sorted(found - {""}, key=len, reverse=True))


def scrub(text: str, secrets: Iterable[str]) -> str:
    """`text` on one line with every secret replaced by ***."""
    for secret in secrets:
        text = text.replace(secret, "***")
    # After the replacing: a password may hold a line end or two spaces of its own.
    return " ".join(text.split())


def _parse(url: str) -> dict[str, Any] | None:
    """servers, database and password of `url` as its driver reads them; None if it cannot."""
    if url_scheme(url) in POSTGRES_SCHEMES:
        return _parse_postgres(url)
    return _parse_mongo(url)


def _parse_postgres(url: str) -> dict[str, Any] | None:
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    try:
        params = conninfo_to_dict(url)
    except (psycopg.Error, ValueError):  # ValueError: an escape that is not UTF-8
        return None
    hosts = str(params.get("host") or params.get("hostaddr") or "localhost").split(",")
    ports = str(params.get("port") or "5432").split(",")
    if len(ports) == 1:
        ports *= len(hosts)
    servers = ",".join(
        f"{_host(host or 'localhost')}:{port or 5432}"
        for host, port in zip(hosts, ports, strict=False)
    )
    return {
        "servers": servers,
        "database": params.get("dbname"),
        "password": params.get("password"),
    }


def _parse_mongo(url: str) -> dict[str, Any] | None:
    from pymongo.errors import PyMongoError

    # parse_uri itself looks a mongodb+srv:// name up in DNS; this is its parse without that.
    from pymongo.uri_parser_shared import _validate_uri

    try:
        parsed = _validate_uri(url, validate=False, warn=False)
    except (PyMongoError, ValueError):
        return None
    if parsed["fqdn"]:
        servers = _host(str(parsed["fqdn"]))
    else:
        servers = ",".join(
            _host(str(host)) + (f":{port}" if port is not None else "")  # a socket has none
            for host, port in parsed["nodelist"]
        )
    return {"servers": servers, "database": parsed["database"], "password": parsed["password"]}


def _host(host: str) -> str:
    """A host as a URL writes it: an IPv6 address in brackets, a socket path encoded."""
    if ":" in host:
        return f"[{host}]"
    return quote(host, safe="")
