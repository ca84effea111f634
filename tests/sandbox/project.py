"""A test project (machines/, .env, .octoboot/) aimed at a sandbox, and ways to look at it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import httpx

from octoboot import jobs
from octoboot.sandbox.control import Sandbox
from octoboot.settings import Settings, load_settings


def make_project(sandbox: Sandbox, root: Path) -> Settings:
    sandbox.write_target_files(root / "machines", root / ".env")
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


def quiet(parallel: bool = True, **options) -> jobs.RunOptions:
    return jobs.RunOptions(parallel=parallel, console=lambda line: None, **options)


def by_name(report) -> dict:
    return {r.machine: r for r in report.results}


def request_count(sandbox: Sandbox) -> int:
    return len((sandbox.root / "octopus" / "requests.jsonl").read_text().splitlines())


def writes_since(sandbox: Sandbox, offset: int) -> list[dict]:
    """Octopus requests after `offset` that could change something."""
    lines = (sandbox.root / "octopus" / "requests.jsonl").read_text().splitlines()[offset:]
    requests = [json.loads(line) for line in lines]
    return [r for r in requests if r["method"] in ("POST", "PUT", "DELETE")]


def tree_digest(*folders: Path) -> dict[str, str]:
    """Every file under folders with a hash of its bytes and its mode: a before/after view."""
    digest = {}
    for folder in folders:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and not path.is_symlink():
                data = hashlib.sha256(path.read_bytes()).hexdigest()
                digest[str(path)] = f"{data} {path.stat().st_mode:o}"
    return digest
