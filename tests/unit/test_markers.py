"""`pytest -m "not sandbox"` is the fast loop: every sandbox test carries the marker."""

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


class Selection:
    """What one collection with `-m sandbox` selects and deselects (node ids)."""

    def __init__(self) -> None:
        self.selected: list[str] = []
        self.deselected: list[str] = []

    def pytest_deselected(self, items: list[pytest.Item]) -> None:
        self.deselected += [item.nodeid for item in items]

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.selected = [item.nodeid for item in session.items]


def test_every_test_under_tests_sandbox_is_marked_sandbox_and_no_other():
    # In this process, as `pytest --collect-only` would in its own: the modules are already
    # imported, so collecting every test again costs a fraction of a fresh interpreter's.
    selection = Selection()
    code = pytest.main(
        ["--collect-only", "-q", "-p", "no:cacheprovider", "--rootdir", str(REPO),
         "-m", "sandbox", str(REPO / "tests")],
        plugins=[selection],
    )  # fmt: skip
    assert code == pytest.ExitCode.OK
    sandbox, fast = selection.selected, selection.deselected
    assert sandbox and fast
    assert all(test.startswith("tests/sandbox/") for test in sandbox)
    assert not any(test.startswith("tests/sandbox/") for test in fast)
    files = {test.split("::")[0] for test in sandbox}
    assert files == {f"tests/sandbox/{p.name}" for p in (REPO / "tests/sandbox").glob("test_*.py")}
