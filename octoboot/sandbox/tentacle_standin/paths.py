"""Paths as strings, spelled as pathlib spelled them, without importing pathlib.

Every Tentacle command is a new process, and pathlib's import (re, fnmatch, urllib.parse,
ipaddress) was about a fifth of a short command's imports. The stand-in shows paths in its
messages and keeps them in its files, so they are written as `str(PurePosixPath(p))` and
`str(Path(p).absolute())` wrote them: repeated and trailing slashes and `.` parts dropped,
`..` kept, a leading `//` (and only exactly two) kept
(tests/unit/test_tentacle_without_imports.py holds them equal to pathlib).
"""

from __future__ import annotations

import os


def pure(path: str) -> str:
    """str(PurePosixPath(path))."""
    root = ""
    if path.startswith("/"):
        root = "//" if path.startswith("//") and not path.startswith("///") else "/"
    parts = [part for part in path.split("/") if part and part != "."]
    return root + "/".join(parts) if root or parts else "."


def absolute(path: str) -> str:
    """str(Path(path).absolute()): against the working directory, `..` kept."""
    return pure(os.path.join(os.getcwd(), path))  # an absolute path starts again


def join(*parts: str) -> str:
    """str(PurePosixPath(*parts)): a part that starts with / starts again from it."""
    return pure(os.path.join(*parts))


def parent(path: str) -> str:
    """str(PurePosixPath(path).parent)."""
    path = pure(path)
    rest = path.lstrip("/")
    root = path[: len(path) - len(rest)]
    if rest in ("", ".") or "/" not in rest:
        return root or "."
    return root + rest.rpartition("/")[0]


def suffix(path: str) -> str:
    """PurePosixPath(path).suffix."""
    name = pure(path).rpartition("/")[2]
    at = name.rfind(".")
    return name[at:] if 0 < at < len(name) - 1 else ""
