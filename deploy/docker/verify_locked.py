"""Fail unless every package installed beside this interpreter is at its locked version.

The image's builder installs the runtime dependencies with the lock as constraints; a package
the lock does not name (a dependency added to pyproject.toml without locking again) would be
installed at whatever version is newest. This makes that a failed build instead.

    python verify_locked.py requirements.lock [--ignore NAME ...]
"""

from __future__ import annotations

import argparse
import re
import sys
from importlib import metadata


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(lock_text: str) -> dict[str, str]:
    """name -> version of every `name==version` line."""
    found = {}
    for line in lock_text.splitlines():
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;#]+)", line)
        if match:
            found[canonical(match.group(1))] = match.group(2)
    return found


def unlocked(lock_text: str, ignore: set[str]) -> list[str]:
    """The installed packages whose version is not the locked one, as `name==version`."""
    locked = pins(lock_text)
    ignored = {canonical(name) for name in ignore}
    wrong = []
    for dist in metadata.distributions():
        name = canonical(dist.metadata["Name"])
        if name not in ignored and locked.get(name) != dist.version:
            wrong.append(f"{name}=={dist.version} (locked: {locked.get(name, 'not at all')})")
    return sorted(wrong)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lock")
    parser.add_argument("--ignore", action="append", default=[], metavar="NAME")
    args = parser.parse_args()
    with open(args.lock, encoding="utf-8") as lock:
        wrong = unlocked(lock.read(), set(args.ignore))
    for line in wrong:
        sys.stderr.write(f"not as locked in {args.lock}: {line}\n")
    if wrong:
        sys.stderr.write("lock the dependencies again (see the header of the lock file)\n")
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
