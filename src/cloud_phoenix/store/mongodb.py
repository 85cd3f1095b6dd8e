"""The MongoDB store: a `logs` collection whose `_id` is each record's journal position.

Because the position is the primary key, writing a record twice leaves one document:
that is what lets `commit_batch` stay exactly-once on a standalone server, which has no
multi-document transactions (see `MongoStore._commit_standalone`).

Events go to an `events` collection with the client's ObjectId as `_id`. An ObjectId is
(seconds, per-process random, per-process counter), so it follows insertion order for the
events of one process, which is where same-time ties come from (one clock reading used
twice); events of two processes at the very same microsecond keep a stable, arbitrary order.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qsl

from bson.errors import InvalidDocument
from pymongo import ASCENDING, DESCENDING, IndexModel, MongoClient, UpdateOne
from pymongo.client_session import ClientSession
from pymongo.collection import Collection
from pymongo.errors import (
    BulkWriteError,
    ConnectionFailure,
    DuplicateKeyError,
    OperationFailure,
    PyMongoError,
)

from cloud_phoenix.journal import RECORD_FIELDS, JournalEntry
from cloud_phoenix.store.base import (
    Event,
    LogQuery,
    LogRow,
    PositionConflict,
    StoreError,
    StoreUnavailable,
    check_events_limit,
    prepare_event,
)
from cloud_phoenix.store.mongodocs import (
    DUPLICATE_KEY,
    Document,
    error_detail,
    event_from,
    has_transactions,
    log_row,
    mongo_filter,
    record_document,
)
from cloud_phoenix.store.urls import redact_url, scrub, url_problem, url_secrets

log = logging.getLogger(__name__)

DEFAULT_DATABASE = "phoenix"
LOGS = "logs"
POSITIONS = "journal_positions"
EVENTS = "events"

# Short enough that a down server answers /checkdb with a 503 within seconds instead of
# MongoClient's 30 s default; a value given in the URL's query string wins.
CLIENT_DEFAULTS: dict[str, Any] = {
    "serverSelectionTimeoutMS": 3000,
    "connectTimeoutMS": 3000,
    "socketTimeoutMS": 15000,
    "appName": "cloud-phoenix",
}

_NAMESPACE_EXISTS = 48
_AUTH_CODES = frozenset({11, 13, 18})  # UserNotFound, Unauthorized, AuthenticationFailed
_TRANSACTION_ATTEMPTS = 3
_ORDER = [("time", DESCENDING), ("_id", DESCENDING)]
# The filtered indexes end in the page order too, so a filtered page is an index range
# read without an in-memory sort; they still serve every (status, time) or (path, time) use.
_INDEXES = [
    IndexModel(_ORDER, name="time_desc_id_desc"),
    IndexModel([("status", ASCENDING), *_ORDER], name="status_time"),
    IndexModel([("path", ASCENDING), *_ORDER], name="path_time"),
]
_EVENT_INDEXES = [
    IndexModel(_ORDER, name="time_desc_id_desc"),
    IndexModel([("kind", ASCENDING), *_ORDER], name="kind_time"),
]
_EVENT_FIELDS = {"_id": 0, "time": 1, "kind": 1, "message": 1, "data": 1}
# URL options naming files that the client reads when it is built (lower case).
_TLS_FILE_OPTIONS = frozenset({"tlscafile", "tlscertificatekeyfile", "tlscrlfile"})


class _Replay(Exception):
    """A batch inside a transaction met a stored document: run it again by upserts."""


class MongoStore:
    """Records in MongoDB (standalone, replica set or sharded); positions beside them."""

    backend = "mongodb"

    def __init__(self, url: str) -> None:
        problem = url_problem(url)
        if problem:
            raise StoreError(f"the MongoDB URL is refused: {problem}")
        # Every message names the servers by this, never by the URL (it holds the password).
        self.target = redact_url(url)
        self._secrets = url_secrets(url)
        given = {key.lower() for key, _ in parse_qsl(url.partition("?")[2])}
        options = {k: v for k, v in CLIENT_DEFAULTS.items() if k.lower() not in given}
        try:
            # connect=False: no thread, socket or SRV lookup until the first operation, so
            # a down server cannot fail or slow the construction, and a store built before
            # gunicorn forks its workers is safe to use in them.
            self._client: MongoClient[Document] = MongoClient(url, connect=False, **options)
            database = self._client.get_default_database(DEFAULT_DATABASE)
        except (PyMongoError, ValueError) as exc:  # pymongo raises ValueError for bad ports
            raise StoreError(
                f"invalid MongoDB URL for {self.target}: {self._scrub(error_detail(exc))}"
            ) from None
        except OSError as exc:
            # The client reads the TLS files the URL names as it is built: missing, a folder,
            # unreadable, or no PEM in it (ssl.SSLError is an OSError).
            raise StoreError(self._tls_file_error(url, exc)) from None
        self._logs: Collection[Document] = database[LOGS]
        self._positions: Collection[Document] = database[POSITIONS]
        self._events: Collection[Document] = database[EVENTS]
        self._transactions: bool | None = None
        # Set when a batch held documents already stored: inside a transaction the batches
        # that follow go by upserts (a replay goes on for a while) until one is all new.
        self._replaying = False

    @classmethod
    def from_url(cls, url: str) -> MongoStore:
        """A store for mongodb:// or mongodb+srv://; the database is the URL's path."""
        return cls(url)

    def migrate(self) -> None:
        with self._errors("create the collections and indexes"):
            # All up front, as the protocol asks, and so that no transaction has to.
            for name in (LOGS, POSITIONS, EVENTS):
                try:
                    self._logs.database.create_collection(name, check_exists=False)
                except OperationFailure as exc:
                    if exc.code != _NAMESPACE_EXISTS:
                        raise
            self._logs.create_indexes(_INDEXES)
            self._events.create_indexes(_EVENT_INDEXES)

    def ping(self) -> None:
        with self._errors("ping the server"):
            self._client.admin.command("ping")

    def positions(self, files: Iterable[str] | None = None) -> dict[str, int]:
        which: Document = {} if files is None else {"_id": {"$in": list(files)}}
        with self._errors("read the journal positions"):
            return {
                str(doc["_id"]): int(doc["offset"])
                for doc in self._positions.find(which, {"offset": 1})
            }

    def forget_positions(self, files: Iterable[str]) -> int:
        with self._errors("delete journal positions"):
            return self._positions.delete_many({"_id": {"$in": list(files)}}).deleted_count

    def commit_batch(self, file: str, start: int, end: int, entries: Sequence[JournalEntry]) -> int:
        documents = [record_document(entry) for entry in entries]
        with self._errors(f"commit {file} bytes {start}..{end}"):
            if self._supports_transactions():
                return self._commit_in_transaction(file, start, end, documents)
            return self._commit_standalone(file, start, end, documents)

    def query(self, query: LogQuery) -> list[LogRow]:
        if query.limit == 0:
            return []  # pymongo reads limit 0 as "no limit"; SQL's LIMIT 0 returns nothing
        fields = dict.fromkeys(RECORD_FIELDS, 1)
        with self._errors("read the logs"):
            found = self._logs.find(
                mongo_filter(query), fields, sort=_ORDER, limit=max(query.limit, 0)
            )
            return [log_row(doc) for doc in found]

    def count(self) -> int:
        """The collection's record count from its metadata (O(1)).

        `estimated_document_count`, not `count_documents({})`: the latter scans every
        document, and /checkdb asks often. The metadata is exact on a running server; it
        can drift only after an unclean shutdown or with orphans on a sharded cluster.
        """
        with self._errors("count the logs"):
            return self._logs.estimated_document_count()

    def add_event(self, event: Event) -> None:
        stored, _ = prepare_event(event)
        document = {
            "time": stored.time,
            "kind": stored.kind,
            "message": stored.message,
            "data": stored.data,  # a sub-document: readable and queryable in the shell
        }
        with self._errors(f"record a {stored.kind!r} event"):
            try:
                self._events.insert_one(document)
            except InvalidDocument as exc:  # not a PyMongoError: too large, or unencodable
                raise StoreError(
                    f"MongoDB at {self.target}: event {stored.kind!r} cannot be stored: "
                    f"{self._scrub(str(exc))}"
                ) from None

    def events(
        self, limit: int = 50, kind: str | None = None, since: str | None = None
    ) -> list[Event]:
        check_events_limit(limit)
        found: Document = {}
        if kind is not None:
            found["kind"] = kind
        if since is not None:
            found["time"] = {"$gte": since}
        with self._errors("read the events"):
            documents = list(self._events.find(found, _EVENT_FIELDS, sort=_ORDER, limit=limit))
        return [event_from(doc) for doc in documents]

    def close(self) -> None:
        self._client.close()

    def _supports_transactions(self) -> bool:
        """Replica set or mongos: multi-document transactions are there (pymongo 4.x
        speaks to no server older than 4.4, so the version needs no check)."""
        if self._transactions is None:
            hello: dict[str, Any] | None
            try:
                hello = self._client.admin.command("hello")
            except OperationFailure as exc:
                if exc.code in _AUTH_CODES:
                    raise
                # A server without `hello` (some DocumentDB versions refuse it): the driver
                # has discovered the topology by now, with the handshake the server does know.
                log.info("MongoDB at %s has no hello command (%s)", self.target, exc.code)
                hello = None
            topology = self._client.topology_description.topology_type_name
            self._transactions = has_transactions(hello, topology)
            log.info(
                "MongoDB at %s: batches commit %s",
                self.target,
                "in transactions"
                if self._transactions
                else "by position compare-and-set (standalone server)",
            )
        return self._transactions

    def _commit_in_transaction(
        self, file: str, start: int, end: int, documents: list[Document]
    ) -> int:
        """Position and records in one transaction: both are written or neither."""
        attempt = 1
        with self._client.start_session() as session:
            while True:
                try:
                    with session.start_transaction():
                        self._move_position(file, start, end, session)
                        inserted = self._insert_in_transaction(documents, session)
                    return inserted
                except _Replay:
                    self._replaying = True  # the transaction is aborted: run it again
                    continue
                except PyMongoError as exc:
                    # A write conflict (two collectors on one file) is transient: run again
                    # and the compare-and-set says who won. A lost connection is left to
                    # the collector's backoff, so an outage surfaces within seconds. If a
                    # commit's outcome is unknown, the collector's retry meets the moved
                    # position (PositionConflict) and re-reads positions: nothing doubles.
                    if (
                        attempt >= _TRANSACTION_ATTEMPTS
                        or isinstance(exc, ConnectionFailure)
                        or not exc.has_error_label("TransientTransactionError")
                    ):
                        raise
                attempt += 1
                time.sleep(0.05 * attempt)

    def _commit_standalone(self, file: str, start: int, end: int, documents: list[Document]) -> int:
        """Records first, then the position by compare-and-set: exactly-once all the same.

        A standalone server has no multi-document transactions. Each record's `_id` is its
        journal position, so writing it again is a duplicate-key no-op: if the process dies
        after the inserts and before the position moves, the retry from the old position
        re-inserts nothing. The compare-and-set keeps two collectors from both moving on.
        """
        stored = self._stored_position(file)
        if stored != start:
            raise PositionConflict(f"{file}: stored position is {stored}, batch starts at {start}")
        inserted = self._insert_new(documents)
        self._move_position(file, start, end)
        return inserted

    def _stored_position(self, file: str) -> int:
        doc = self._positions.find_one({"_id": file})
        return int(doc["offset"]) if doc else 0

    def _move_position(
        self, file: str, start: int, end: int, session: ClientSession | None = None
    ) -> None:
        """Move `file`'s offset from `start` to `end`, or raise PositionConflict."""
        conflict = f"{file}: stored position is not {start}: another collector committed first"
        try:
            # A file never seen has position 0 without a document, hence the upsert.
            result = self._positions.update_one(
                {"_id": file, "offset": start},
                {"$set": {"offset": end}},
                upsert=start == 0,
                session=session,
            )
        except DuplicateKeyError:
            raise PositionConflict(conflict) from None  # the upsert met a moved document
        if result.matched_count == 0 and result.upserted_id is None:
            raise PositionConflict(conflict)

    def _insert_new(self, documents: list[Document]) -> int:
        """Insert the documents whose `_id` is not stored yet; returns how many."""
        if not documents:
            return 0
        try:
            return len(self._logs.insert_many(documents, ordered=False).inserted_ids)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if exc.details.get("writeConcernErrors") or any(
                error.get("code") != DUPLICATE_KEY for error in errors
            ):
                raise
            return int(exc.details.get("nInserted", 0))

    def _insert_in_transaction(self, documents: list[Document], session: ClientSession) -> int:
        """Insert the documents not stored yet, inside `session`'s transaction.

        An unordered insert_many is the server's fastest way in, but inside a transaction a
        duplicate key aborts the transaction: _Replay then says to run it again the slower
        way, by upserts, which skip what is stored. Batches go that way while a replay lasts
        (until one inserts every document it holds).
        """
        if not documents:
            return 0
        if self._replaying:
            inserted = self._upsert(documents, session)
            self._replaying = inserted < len(documents)
            return inserted
        try:
            result = self._logs.insert_many(documents, ordered=False, session=session)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if errors and all(error.get("code") == DUPLICATE_KEY for error in errors):
                raise _Replay from None
            raise
        return len(result.inserted_ids)

    def _upsert(self, documents: list[Document], session: ClientSession) -> int:
        """Insert-if-absent inside a transaction, where a duplicate-key error would abort it."""
        if not documents:
            return 0
        writes = [
            UpdateOne(
                {"_id": doc["_id"]},
                {"$setOnInsert": {k: v for k, v in doc.items() if k != "_id"}},
                upsert=True,
            )
            for doc in documents
        ]
        return self._logs.bulk_write(writes, session=session).upserted_count

    @contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        """Turn pymongo's errors into StoreUnavailable or StoreError, without the password."""
        try:
            yield
        except PyMongoError as exc:
            detail = self._scrub(error_detail(exc))
            if isinstance(exc, OperationFailure) and exc.code in _AUTH_CODES:
                raise StoreUnavailable(
                    f"MongoDB at {self.target} refused to {doing}: {detail}; check the user, "
                    "password and authSource in the database URL"
                ) from exc
            # ConnectionFailure covers AutoReconnect, NetworkTimeout and
            # ServerSelectionTimeoutError; `timeout` catches operations that ran out of time.
            if isinstance(exc, ConnectionFailure) or exc.timeout:
                raise StoreUnavailable(
                    f"MongoDB at {self.target} is unreachable, cannot {doing}: {detail}; "
                    "is the server running and the URL right?"
                ) from exc
            raise StoreError(f"MongoDB at {self.target}: cannot {doing}: {detail}") from exc

    def _tls_file_error(self, url: str, exc: OSError) -> str:
        """Which TLS file of the URL failed, and what to do; pymongo names only the option."""
        named = [
            (key, value)
            for key, value in parse_qsl(url.partition("?")[2])
            if key.lower() in _TLS_FILE_OPTIONS
        ]
        detail = self._scrub(str(exc))
        # "The tlscafile file is not readable": the option in lower case. An SSLError about
        # the contents names none, and then every file the URL names is shown.
        blamed = [(k, v) for k, v in named if k.lower() in detail.lower()] or named
        files = ", ".join(f"{key}={value}" for key, value in blamed)
        return (
            f"MongoDB at {self.target}: cannot use the TLS file {files} that the database URL "
            f"names ({detail}): put the file there or correct the path (the image carries the "
            "RDS CA bundle for DocumentDB at /etc/ssl/certs/rds-global-bundle.pem)"
        )

    def _scrub(self, text: str) -> str:
        return scrub(text, self._secrets)
