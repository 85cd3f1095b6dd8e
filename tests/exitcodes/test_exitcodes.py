"""The exit codes: sysexits.h's numbers under its names, written in exitcodes.py only."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

from cloud_phoenix import exitcodes

SRC = Path(exitcodes.__file__).parent
NOT_SYSEXITS = {"OK", "NOT_RUNNING"}
CODES = {
    name: value
    for name, value in vars(exitcodes).items()
    if name.isupper() and isinstance(value, int) and name not in NOT_SYSEXITS
}
# Calls whose whole-number argument is an exit code.
EXIT_CALLS = {"Exit", "exit", "_exit", "BackupError", "CannotStart", "ContainerError", "fail"}


@pytest.mark.parametrize(("name", "value"), sorted(CODES.items()))
def test_each_code_is_the_sysexits_number_of_its_name(name: str, value: int) -> None:
    assert getattr(os, f"EX_{name}") == value


def _exit_code_values(node: ast.AST) -> list[ast.expr]:
    """What `node` gives as an exit code: a call's arguments, a return value, `code = ...`
    (or a second `USAGE = ...`)."""
    if isinstance(node, ast.Call):
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if name in EXIT_CALLS:
            return [*node.args, *(keyword.value for keyword in node.keywords)]
    if isinstance(node, ast.Return) and node.value is not None:
        return [node.value]
    if isinstance(node, ast.Assign) and any(
        isinstance(target, ast.Name) and target.id in {"code", *CODES} for target in node.targets
    ):
        return [node.value]
    return []


def test_no_module_but_exitcodes_writes_a_sysexits_number_as_an_exit_code() -> None:
    numbers = set(CODES.values())
    found = [
        f"{path.relative_to(SRC)}:{value.lineno}: {value.value}"
        for path in sorted(SRC.rglob("*.py"))
        if path.name != "exitcodes.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path)))
        for value in _exit_code_values(node)
        if isinstance(value, ast.Constant) and value.value in numbers
    ]
    assert not found, "use the names in exitcodes.py: " + ", ".join(found)
