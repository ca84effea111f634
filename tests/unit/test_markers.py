"""`pytest -m "not sandbox"` is the fast loop: every sandbox test carries the marker."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def collected(marker: str) -> list[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
         "-m", marker, "tests"],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return [line for line in proc.stdout.splitlines() if "::" in line]


def test_every_test_under_tests_sandbox_is_marked_sandbox_and_no_other():
    sandbox, fast = collected("sandbox"), collected("not sandbox")
    assert sandbox and fast
    assert all(test.startswith("tests/sandbox/") for test in sandbox)
    assert not any(test.startswith("tests/sandbox/") for test in fast)
    files = {test.split("::")[0] for test in sandbox}
    assert files == {f"tests/sandbox/{p.name}" for p in (REPO / "tests/sandbox").glob("test_*.py")}
