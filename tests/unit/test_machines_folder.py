"""The repository ships machines/ (the layout names it), with a README that octoboot does not
read as an environment; the sandbox's inventory in it stays out of git."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from octoboot.errors import ConfigError
from octoboot.inventory import load_inventory

REPO = Path(__file__).resolve().parents[2]
README = REPO / "machines" / "README.md"


def test_the_readme_is_not_an_environment_and_its_example_is_one(tmp_path):
    folder = tmp_path / "machines"
    folder.mkdir()
    shutil.copy(README, folder)
    with pytest.raises(ConfigError, match=r"has no \*\.toml files"):
        load_inventory(folder)
    example = re.search(r"^```toml\n(.*?)^```$", README.read_text(), re.S | re.M)
    assert example, "machines/README.md shows a ```toml example"
    (folder / "qa.toml").write_text(example.group(1))
    inventory = load_inventory(folder)
    assert list(inventory.environments) == ["qa"]
    assert [m.address for m in inventory.environments["qa"].machines] == ["web01", "10.0.0.6"]


def test_git_keeps_the_readme_and_ignores_the_sandbox_inventory():
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout")

    def ignored(path: str) -> bool:
        check = subprocess.run(["git", "-C", str(REPO), "check-ignore", "-q", path])
        return check.returncode == 0

    assert ignored("machines/sandbox.toml")
    assert not ignored("machines/README.md")
    tracked = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "machines"], capture_output=True, text=True
    ).stdout.split()
    assert tracked == ["machines/README.md"]
