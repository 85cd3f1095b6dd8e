"""cloud-phoenix: the Phoenix application and the platform that keeps it alive."""

from __future__ import annotations

__version__ = "0.1.0"
