"""`inv` in a checkout runs that checkout's octoboot, even with another one installed."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("checkout_on_path", [False, True], ids=["elsewhere", "also-behind"])
def test_inv_imports_the_checkouts_octoboot(tmp_path, checkout_on_path):
    # Another octoboot, earlier on sys.path than this checkout (PYTHONPATH, a site dir),
    # and unusable, so that importing it fails the run.
    other = tmp_path / "site" / "octoboot"
    other.mkdir(parents=True)
    (other / "__init__.py").write_text('raise ImportError("the other octoboot was imported")\n')
    # also-behind: the checkout is on sys.path already, but after the other one (as an
    # editable install's .pth or PYTHONPATH puts it), where Invoke leaves it.
    path = [str(other.parent), *([str(REPO)] if checkout_on_path else [])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    proc = subprocess.run(
        [sys.executable, "-m", "invoke", "--search-root", str(REPO), "--list"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "the other octoboot" not in proc.stderr
    assert "bootstrap" in proc.stdout and "status" in proc.stdout
