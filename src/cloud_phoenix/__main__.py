"""`python -m cloud_phoenix` is the `phoenix` command."""

from __future__ import annotations

from cloud_phoenix.cli import main

main()
