"""Send notices through Apprise URLs and into the events store, never blocking the caller.

Every notice is logged at once, in the caller's thread. Then each channel (one per Apprise
URL, and the events store) gets it on a bounded queue served by a thread of its own
(notify/channel.py), so a channel that hangs or fails delays no other channel and never the
CPU watch.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from urllib.parse import SplitResult, unquote, urlsplit

import apprise
from apprise import URLBase
from apprise.apprise import N_MGR

from cloud_phoenix.journal import format_time
from cloud_phoenix.notify.channel import QUEUE_SIZE, Channel, Job, RetryPolicy
from cloud_phoenix.notify.notice import Notice
from cloud_phoenix.store.base import Event

log = logging.getLogger(__name__)


class DeliveryFailed(Exception):
    """A channel did not accept a notice (Apprise said no)."""


# Apprise and urllib3 log a webhook's whole URL, secret path and query included, at DEBUG
# ("JSON POST URL: http://host/services/T0/B0/<secret>"): they are held at INFO.
URL_LOGGERS = ("apprise", "urllib3")


def _private(text: str) -> str:
    """Apprise's privacy form of a token: its first and last character, "T...2"."""
    pprint: Callable[..., object] = URLBase.pprint  # untyped in Apprise
    return str(pprint(text, privacy=True))


def _shown_host(parts: SplitResult) -> str:
    """The host and port of a parsed URL as a channel is named: an IP address, localhost or
    a dotted name as it is, anything else in Apprise's privacy form ("T...2"), since many
    Apprise schemes put a token where the host goes (ntfys://<topic>, tgram://<bot token>)."""
    host = parts.hostname or ""
    try:
        port = f":{parts.port}" if parts.port is not None else ""
    except ValueError:  # tgram://<id>:<token>: no port but a token after the colon
        port = ""
    try:
        if ipaddress.ip_address(host).version == 6:
            return f"[{host}]{port}"
    except ValueError:
        if "." not in host and host != "localhost":
            host = _private(host)
    return f"{host}{port}"


def safe_url_name(url: str) -> str:
    """Scheme and host of a URL Apprise could not use, never user, password, token or path."""
    try:
        parts = urlsplit(url)
        if not parts.scheme or not parts.netloc:
            return "***"  # no scheme: the whole text may be a token
        user = "***@" if parts.username is not None else ""
        return f"{parts.scheme}://{user}{_shown_host(parts)}"
    except ValueError:  # an authority urllib cannot read ("[" without "]")
        return "***"


def _invalid_url_message(url: str, index: int) -> str:
    try:
        scheme = urlsplit(url).scheme
    except ValueError:
        scheme = ""
    if not scheme:
        why = "it has no scheme (expected e.g. json://host/path, slack://..., mailto://...)"
    elif scheme not in N_MGR:
        why = f"Apprise has no {scheme!r} service"
    else:
        why = f"the {scheme}:// URL is incomplete or malformed"
    return (
        f"notification URL {index} in PHOENIX_NOTIFY_URLS ({safe_url_name(url)}) is not a "
        f"valid Apprise URL: {why}; see https://github.com/caronc/apprise/wiki for the forms"
    )


def _ambiguous_url_message(url: str, index: int) -> str | None:
    """Why `url` is refused although Apprise took it, if it is: with an unencoded '@' in the
    user or password (a second '@' in the authority), Apprise takes the rest of the
    password for the host, posts to it and names it in its own log lines."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.netloc.count("@") < 2:
        return None
    return (
        f"notification URL {index} in PHOENIX_NOTIFY_URLS ({parts.scheme}://***) has an "
        "unencoded '@' in its user or password: percent-encode it as %40"
    )


def _privacy_name(target: apprise.Apprise, url: str) -> str:
    """The URL in Apprise's own privacy form (passwords and tokens hidden), read back with
    urllib: the host shown as `_shown_host` does, every path segment in Apprise's privacy
    form too (a webhook's path, json://host/services/T0/B0/<secret>, is its secret and
    Apprise shows it whole), and no query (headers and GET parameters, tokens among them)."""
    for service in target:
        privacy_url: Callable[..., object] = service.url  # untyped in Apprise
        parts = urlsplit(str(privacy_url(privacy=True)))
        user = ""
        if parts.username is not None:
            user = f"{parts.username}:****@" if parts.password is not None else f"{parts.username}@"
        path = "/".join(_private(unquote(segment)) for segment in parts.path.split("/"))
        return f"{parts.scheme}://{user}{_shown_host(parts)}{path}"
    return safe_url_name(url)


def _quietly_added(target: apprise.Apprise, url: str) -> bool:
    """`target.add(url)` with Apprise's own log lines held back: for a URL it cannot parse
    it logs the URL whole, password and token included ("Unparseable URL ..."); the caller
    says what is wrong instead, without them."""
    apprise_log = logging.getLogger("apprise")
    hold = _Withhold()
    apprise_log.addFilter(hold)
    try:
        return bool(target.add(url))
    finally:
        apprise_log.removeFilter(hold)


class _Withhold(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return False


class Notifier:
    """Logs every notice and hands it to each Apprise URL and the events sink, in background.

    `sent`, `failed`, `retried` count deliveries to Apprise URLs (a notice to two URLs
    counts twice); `events_written`, `events_failed` the events sink; `dropped` notices
    lost to a full queue or to `close`; `notices` the notices passed to `send`.
    """

    def __init__(
        self,
        urls: Iterable[str],
        events_sink: Callable[[Event], None] | None = None,
        *,
        retry: RetryPolicy | None = None,
        queue_size: int = QUEUE_SIZE,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """Raises ValueError naming (without credentials) a URL that Apprise cannot use or
        would misread. Holds the loggers of URL_LOGGERS at INFO: at DEBUG they print a
        webhook's URL whole."""
        if queue_size < 1:
            raise ValueError(f"queue_size must be at least 1, got {queue_size}")
        retry = retry or RetryPolicy()
        for name in URL_LOGGERS:
            library_log = logging.getLogger(name)
            if library_log.getEffectiveLevel() < logging.INFO:
                library_log.setLevel(logging.INFO)
        targets: list[tuple[str, apprise.Apprise]] = []
        for index, url in enumerate(urls, start=1):
            target = apprise.Apprise()
            if not _quietly_added(target, url):
                raise ValueError(_invalid_url_message(url, index))
            ambiguous = _ambiguous_url_message(url, index)
            if ambiguous:
                raise ValueError(ambiguous)
            targets.append((_privacy_name(target, url), target))
        self._clock = clock
        self._monotonic = monotonic
        self.notices = 0
        self._urls = [
            Channel(name, self._apprise_delivery(target), retry, monotonic, queue_size)
            for name, target in targets
        ]
        self._sink: Channel | None = None
        if events_sink is not None:
            sink = events_sink
            self._sink = Channel(
                "events store", lambda job: sink(job.event), retry, monotonic, queue_size
            )

    @staticmethod
    def _apprise_delivery(target: apprise.Apprise) -> Callable[[Job], None]:
        def deliver(job: Job) -> None:
            started = job.notice.kind == "cpu_peak_started"
            result = target.notify(
                body=job.notice.body,
                title=job.notice.title,
                notify_type=apprise.NotifyType.WARNING if started else apprise.NotifyType.INFO,
                body_format=apprise.NotifyFormat.TEXT,
            )
            if not result:
                # Apprise has logged the cause (logger "apprise"); its result says only this.
                raise DeliveryFailed(f"Apprise reported {result.status.name.lower()}")

        return deliver

    def send(self, notice: Notice, *, record: bool = True) -> None:
        """Log `notice` and queue it for every channel (the events sink only if `record`: a
        caller that records its own event says False); returns at once, never raises."""
        level = logging.WARNING if notice.kind == "cpu_peak_started" else logging.INFO
        log.log(level, "%s\n%s", notice.title, notice.body)
        try:
            moment = datetime.fromtimestamp(self._clock(), UTC)
            event = Event(format_time(moment), notice.kind, notice.title, dict(notice.data))
            job = Job(notice, event, self._monotonic())
            self.notices += 1
            for channel in self._urls if not record else self._channels:
                channel.put(job)
        except Exception:  # the caller is a control loop: it must go on
            log.exception("could not queue notice %r", notice.title)

    @property
    def _channels(self) -> list[Channel]:
        return [*self._urls, *([self._sink] if self._sink else [])]

    @property
    def channel_names(self) -> list[str]:
        """The Apprise URLs in their privacy form (passwords and tokens hidden)."""
        return [channel.name for channel in self._urls]

    @property
    def sent(self) -> int:
        return sum(channel.sent for channel in self._urls)

    @property
    def failed(self) -> int:
        return sum(channel.failed for channel in self._urls)

    @property
    def retried(self) -> int:
        return sum(channel.retried for channel in self._urls)

    @property
    def dropped(self) -> int:
        return sum(channel.dropped for channel in self._channels)

    @property
    def events_written(self) -> int:
        return self._sink.sent if self._sink else 0

    @property
    def events_failed(self) -> int:
        return self._sink.failed if self._sink else 0

    def close(self, timeout: float = 5.0) -> bool:
        """Deliver what is queued within `timeout` s, then abandon the rest; True if all went."""
        deadline = time.monotonic() + timeout
        channels = self._channels
        for channel in channels:
            channel.begin_close()
        for channel in channels:
            channel.thread.join(max(0.0, deadline - time.monotonic()))
        drained = True
        for channel in channels:
            busy = channel.thread.is_alive()
            left = channel.abort()
            if left or busy:
                drained = False
                log.warning(
                    "notifier closed before %s took everything: %d queued notice(s) abandoned%s",
                    channel.name,
                    left,
                    ", one delivery still under way" if busy else "",
                )
        for channel in channels:
            # Threads waiting between retries exit at once now; one stuck in a network call
            # is a daemon and is left to its own timeout.
            channel.thread.join(0.5)
        return drained
