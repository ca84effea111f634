"""errors.py draws the exception tree; the drawing and the code must agree, and every error
in it must be raised or caught somewhere."""

import importlib
import pkgutil
import re
from pathlib import Path

import octoboot
from octoboot import errors
from octoboot.errors import OctobootError

REPO = Path(__file__).resolve().parents[2]
ROW = re.compile(r"^    (?P<branches>(?:[│ ]   )*)(?:[├└]── )?(?P<name>\w+)\s+(?P<code>[-\d])\s")


def drawn() -> list[tuple[int, str, str]]:
    """(depth, class name, exit code) per row of the drawing in errors.py's docstring."""
    lines = errors.__doc__.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:2] == ["class", "exit"])
    rows = []
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        match = ROW.match(line)
        assert match, line
        depth = len(match["branches"]) // 4 + (0 if line[4:5].isalpha() else 1)
        rows.append((depth, match["name"], match["code"]))
    return rows


def every_error() -> dict[str, type]:
    for module in pkgutil.walk_packages(octoboot.__path__, "octoboot."):
        if not module.name.endswith("__main__"):
            importlib.import_module(module.name)
    found, pending = {}, [OctobootError]
    while pending:
        cls = pending.pop()
        assert found.setdefault(cls.__name__, cls) is cls, f"two errors named {cls.__name__}"
        pending += cls.__subclasses__()
    return found


def edges(rows: list[tuple[int, str, str]]) -> set[tuple[str, str]]:
    """(class, its parent) for every row drawn under another."""
    found, parents = set(), []
    for depth, name, _ in rows:
        parents[depth:] = [name]
        if depth:
            found.add((name, parents[depth - 1]))
    return found


def test_the_drawn_tree_is_the_class_tree():
    classes, rows = every_error(), drawn()
    assert {name for _, name, _ in rows} == set(classes), "draw every error, and only those"
    assert edges(rows) == {
        (name, base.__name__)
        for name, cls in classes.items()
        for base in cls.__bases__
        if base is not Exception
    }
    for _, name, code in rows:
        if code != "-":
            assert classes[name].exit_code == int(code), name


def test_every_error_is_raised_or_caught_somewhere():
    sources = [*sorted((REPO / "octoboot").rglob("*.py")), REPO / "tasks.py"]
    text = "\n".join(path.read_text() for path in sources)
    for name in every_error():
        used = re.search(rf"(\braise\s+|\bexcept\b[^:\n]*)\b{name}\b", text)
        assert used, f"{name} is never raised or caught: remove it"
