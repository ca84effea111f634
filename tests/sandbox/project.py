"""A test project (machines/, .env, .octoboot/) aimed at a sandbox, and ways to look at it."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx

from octoboot.run import RunOptions
from octoboot.sandbox.control import Sandbox
from octoboot.sandbox.standin_settings import StandInSettings
from octoboot.settings import Settings, load_settings

REPO = Path(__file__).resolve().parents[2]
# Stand-ins for tests that measure something else than the real products' limits: quick
# Health tasks, no API rate limit, Tentacle commands that start at once. The task cap stays
# the real one. Tests of those limits ask for them (sandbox_factory(..., settings=...)).
FAST = StandInSettings(
    health_seconds=0.2, health_seconds_per_machine=0, rate_limit=0, tentacle_startup_seconds=0
)


def project_settings(root: Path) -> Settings:
    """Settings of a project folder written by Sandbox.write_target_files."""
    return load_settings(
        environ={
            "OCTOBOOT_STATE_DIR": str(root / ".octoboot"),
            "OCTOBOOT_MACHINES_DIR": str(root / "machines"),
        },
        dotenv_path=root / ".env",
    )


def octopus_client(sandbox: Sandbox) -> httpx.Client:
    return httpx.Client(
        base_url=sandbox.endpoints().octopus_url,
        headers={"X-Octopus-ApiKey": sandbox.api_key()},
        timeout=10,
    )


def octopus_machines(octopus: httpx.Client) -> dict[str, dict]:
    return {m["Name"]: m for m in octopus.get("/api/Spaces-1/machines/all").json()}


def quiet(parallel: bool = True, **options) -> RunOptions:
    return RunOptions(parallel=parallel, console=lambda line: None, **options)


def by_name(report) -> dict:
    return {r.machine: r for r in report.results}


def request_count(sandbox: Sandbox) -> int:
    return len((sandbox.root / "octopus" / "requests.jsonl").read_text().splitlines())


def writes_since(sandbox: Sandbox, offset: int) -> list[dict]:
    """Octopus requests after `offset` that could change something."""
    lines = (sandbox.root / "octopus" / "requests.jsonl").read_text().splitlines()[offset:]
    requests = [json.loads(line) for line in lines]
    return [r for r in requests if r["method"] in ("POST", "PUT", "DELETE")]


def tree_digest(*paths: Path) -> dict[str, str]:
    """Each file under paths (or the path itself) with a hash of its bytes and its mode: a
    before/after view."""
    digest = {}
    for path in paths:
        for file in [path, *sorted(path.rglob("*"))] if path.is_dir() else [path]:
            if file.is_file() and not file.is_symlink():
                data = hashlib.sha256(file.read_bytes()).hexdigest()
                digest[str(file)] = f"{data} {file.stat().st_mode:o}"
    return digest


def inv(
    settings: Settings, *args: str, env: dict[str, str] | None = None, **popen
) -> subprocess.CompletedProcess:
    """The real command line (`inv ...` of this repository), aimed at the test project by
    environment variables (and `env`, added to them)."""
    return subprocess.run(
        inv_argv(args), capture_output=True, text=True, env=_inv_environ(settings, env),
        stdin=subprocess.DEVNULL, timeout=300, **popen,
    )  # fmt: skip


def inv_started(settings: Settings, *args: str) -> subprocess.Popen:
    """`inv ...` as inv() runs it, started and not waited for (communicate() to end it)."""
    return subprocess.Popen(
        inv_argv(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=_inv_environ(settings), stdin=subprocess.DEVNULL,
    )  # fmt: skip


def inv_argv(args: tuple[str, ...]) -> list[str]:
    """`inv ARGS` as a command line, on this checkout's tasks."""
    return [sys.executable, "-m", "invoke", "--search-root", str(REPO), *args]


def _inv_environ(settings: Settings, env: dict[str, str] | None = None) -> dict[str, str]:
    return {
        **os.environ,
        "OCTOBOOT_STATE_DIR": str(settings.state_dir),
        "OCTOBOOT_MACHINES_DIR": str(settings.machines_dir),
        "OCTOBOOT_PFX_PASSWORD": settings.pfx_password().reveal(),
        **(env or {}),
    }
