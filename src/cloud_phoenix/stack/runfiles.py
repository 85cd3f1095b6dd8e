"""Files under PHOENIX_HOME/run that one process writes and another reads: the stack's status,
the deploy requests and their results.

Each is replaced atomically, so a reader never sees half of one, and carries the version of
its format. A reader gets it back as its dataclass with every field's type checked: a file
from another version of phoenix, or a crafted one, is a clear error naming the file and the
field, not a KeyError three calls later. Fields a reader does not know are ignored (a newer
writer may add some without a new version); a field that changes meaning or goes away takes
a new version.
"""

from __future__ import annotations

import json
import os
import reprlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

if TYPE_CHECKING:
    from pydantic import TypeAdapter

T = TypeVar("T")

VERSION_KEY = "version"
UNVERSIONED = 1  # a file without a version comes from before versions: its format is the 1st

_adapters: dict[type[Any], TypeAdapter[Any]] = {}
_shown = reprlib.Repr()  # a value or key from the file, quoted and cut short
_shown.maxstring = _shown.maxother = 40


class RunFileError(Exception):
    """A run file is there but cannot be read as what it should hold; the message says why."""


def replace_json(path: Path, version: int, data: dict[str, Any], mode: int = 0o666) -> None:
    """Replace `path` with `data` and its format `version`; `mode` before the umask."""
    scratch = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as out:
        json.dump({VERSION_KEY: version, **data}, out, indent=1)
    os.replace(scratch, path)


def read_json(path: Path, shape: type[T], version: int) -> T | None:
    """What `path` holds, as `shape` (a dataclass); None when there is no such file.

    Raises RunFileError when the file cannot be read, is not a JSON object, has a format
    version other than `version`, or a field is missing, of the wrong type, or not finite.
    """
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise RunFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        # NaN and Infinity are not JSON: a crafted one would break the pages that show it.
        raw = json.loads(text, parse_constant=_not_a_number)
    except ValueError as exc:  # not UTF-8, not JSON
        raise RunFileError(f"{path} is not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise RunFileError(f"{path} holds no JSON object")
    found = raw.get(VERSION_KEY, UNVERSIONED)
    if found != version or isinstance(found, bool):
        raise RunFileError(
            f"{path} has format version {_shown.repr(found)}; this phoenix reads version "
            f"{version}: run the same version of phoenix as the stack (or restart the stack)"
        )
    from pydantic import ValidationError

    try:
        return _adapter(shape).validate_json(text, strict=True)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = _location(error["loc"])
        raise RunFileError(f"{path}: {where or 'the object'}: {error['msg']}") from None


def _not_a_number(constant: str) -> None:
    raise ValueError(f"{constant} is not a number JSON allows")


def _adapter(shape: type[T]) -> TypeAdapter[T]:
    # pydantic is loaded by the first read, not on import: the supervisor only writes.
    from pydantic import TypeAdapter

    if shape not in _adapters:
        _adapters[shape] = TypeAdapter(shape)
    return cast("TypeAdapter[T]", _adapters[shape])


def _location(loc: tuple[int | str, ...]) -> str:
    """A field's path, e.g. `children['gunicorn'].pid`; keys from the file are quoted as
    Python would, so no control character of a crafted key reaches a terminal."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part.isidentifier():
            text += f".{part}" if text else part
        else:
            text += f"[{_shown.repr(part)}]"
    return text
