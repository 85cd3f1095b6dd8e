"""What a notification says: its kind, a title and body for people, and JSON details.

The watches that decide a notice is due (the CPU watch, the daily backups) make one; the
notifier sends it to every channel and records it as an event of the same kind.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

NoticeKind = Literal["cpu_peak_started", "cpu_peak_ended", "backup_failed"]


@dataclass(frozen=True, slots=True)
class Notice:
    """A notification to send: the kind (also the event kind), human text and JSON details."""

    kind: NoticeKind
    title: str
    body: str
    data: dict[str, Any] = field(default_factory=dict)
