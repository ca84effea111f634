"""What the Tentacle stand-in writes out by hand so that a short command imports no json,
re, enum or pathlib (every Tentacle command is a new process): each piece gives what the
module it replaces gives, over many generated inputs."""

from __future__ import annotations

import functools
import json
import os
import random
import re
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path, PurePosixPath

import pytest

from octoboot.sandbox.tentacle_standin import dotnet, jsontext, paths, pfx, spawn
from octoboot.sandbox.tentacle_standin.options import _split
from octoboot.sandbox.tentacle_standin.service import unit_name

_CHARS = [
    "a",
    " ",
    '"',
    "\\",
    "\n",
    "\x00",
    "\x7f",
    "é",
    "\u2028",
    "\U0001f600",
    "\udc80",
    ",",
    ":",
]
_CHARS += ["{", "]", "1", "/etc/octopus/Tentacle"]
_LAYOUTS: list[dict] = [{}, {"indent": 2}, {"separators": (",", ":")}, {"indent": 0}]


def _text(rng: random.Random) -> str:
    return "".join(rng.choice(_CHARS) for _ in range(rng.randint(0, 5)))


def _value(rng: random.Random, depth: int = 0) -> object:
    roll = rng.random()
    if depth < 3 and roll < 0.15:
        return {_text(rng): _value(rng, depth + 1) for _ in range(rng.randint(0, 3))}
    if depth < 3 and roll < 0.3:
        return [_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    scalars = [None, True, False, 0, -5, 10**20, 1.5, -0.0, 1e16, 1e-7, float("inf"), "plain"]
    return rng.choice([*scalars, float("nan"), _text(rng)])


def _outcome(read: Callable[[str], object], text: str) -> tuple[str, object]:
    try:
        return "value", json.dumps(read(text))
    except Exception as error:  # the kind of failure is what is compared
        return "error", type(error)


@pytest.mark.parametrize("seed", range(4))
def test_json_text_is_what_the_json_module_writes_and_reads(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(3000):
        value, layout = _value(rng), rng.choice(_LAYOUTS)
        written = json.dumps(value, **layout)
        assert jsontext.dumps(value, **layout) == written
        assert json.dumps(jsontext.loads(written, **layout)) == json.dumps(json.loads(written))
        # Text json.dumps would not write: the same value, or the same kind of error.
        damaged = list(written)
        for _ in range(rng.randint(1, 3)):
            damaged.insert(rng.randrange(len(damaged) + 1), rng.choice('",: 1{}[]e.-_'))
        text = "".join(damaged)
        shortcut = functools.partial(jsontext.loads, **layout)
        assert _outcome(shortcut, text) == _outcome(json.loads, text)


def test_the_control_files_as_the_sandbox_writes_them_need_no_json_module() -> None:
    for value, layout in [
        ({"install_seconds": 5.0}, {}),
        ({"startup_seconds": 0.5, "install_fails": True, "untrusting": False}, {}),
        ({"Name": "Tentacle", "ConfigurationFilePath": "/etc/octopus/t.config"}, {"indent": 2}),
        (
            [{"Thumbprint": "AB12", "CommunicationStyle": 1, "Address": None}],
            {"separators": (",", ":")},
        ),
    ]:
        assert jsontext._candidate(json.dumps(value, **layout), 0)[0] == value


@pytest.mark.parametrize("cwd", [None, "/"])  # None: the suite's; "/" is a service's
def test_paths_are_spelled_as_pathlib_spells_them(
    cwd: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    if cwd is not None:
        monkeypatch.chdir(cwd)
    rng = random.Random(1)
    pieces = ["/", "//", "///", ".", "..", "a", "b c", "", "x/", "/y"]
    for _ in range(20000):
        path = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 6)))
        other = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 4)))
        assert paths.pure(path) == str(PurePosixPath(path))
        assert paths.parent(path) == str(PurePosixPath(path).parent)
        assert paths.absolute(path) == str(Path(path).absolute())
        assert paths.suffix(path + other) == PurePosixPath(path + other).suffix
        if path:
            assert paths.join(path, other) == str(PurePosixPath(path, other))


def test_written_out_regexes_match_as_the_regexes_did() -> None:
    option = re.compile(r"^(?P<flag>--|-|/)(?P<name>[^:=]+)(?:(?P<sep>[:=])(?P<value>.*))?$", re.S)
    integer = re.compile(r"^\s*[+-]?\d+\s*$")
    rng = random.Random(2)
    pieces = ["-", "/", ":", "=", "a", "\n", " ", "\t", "+", "1", "\u0663", "\u2003", "x"]
    for _ in range(50000):
        arg = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 6)))
        found = option.match(arg)
        assert _split(arg) == (found.group(1, 2, 3, 4) if found else None), repr(arg)
        try:
            dotnet.parse_int(arg)
            parsed = True
        except dotnet.FormatException:
            parsed = False
        assert parsed == bool(integer.match(arg)), repr(arg)
        assert unit_name(arg) == re.sub(r"\s+", "-", arg.replace("/", "")), repr(arg)


def test_pem_blocks_and_key_size_are_found_as_the_regexes_found_them() -> None:
    pem = re.compile(rb"-----BEGIN ([A-Z ]+)-----\n.*?\n-----END \1-----\n", re.DOTALL)
    key_bits = re.compile(rb"\((\d+) bit")
    rng = random.Random(3)
    pieces = [b"-----BEGIN ", b"\n-----END ", b"-----\n", b"KEY", b"A", b" ", b"\n", b"x", b"-"]
    for _ in range(50000):
        text = b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 10)))
        assert pfx._pem_blocks(text) == [(m[1], m[0]) for m in pem.finditer(text)], text
        text = b"".join(rng.choice([b"(", b"1", b"20", b" bit", b")", b" "]) for _ in range(8))
        found = key_bits.search(text)
        assert pfx._key_bits(text) == (int(found[1]) if found else None), text


def _both(argv: list[str], data: bytes = b"") -> tuple[object, object]:
    done = subprocess.run(argv, input=data, capture_output=True, timeout=30, check=False)
    return spawn.run(argv, data, timeout=30), (done.returncode, done.stdout, done.stderr)


def test_a_program_is_run_as_subprocess_runs_it() -> None:
    big = bytes(range(256)) * 8192  # 2 MiB each way: more than a pipe holds
    mine, theirs = _both(["cat"], big)
    assert mine == theirs and len(theirs[1]) == len(big)  # type: ignore[index]
    assert _both(["sh", "-c", "echo out; echo err >&2; exit 3"]) == ((3, b"out\n", b"err\n"),) * 2
    # What the child gets: SIGPIPE and SIGXFSZ back to default (Python ignores them) and no
    # descriptor of ours beyond 0-2, even one marked inheritable. glibc's posix_spawn leaves
    # its own two real-time signals (32, 33: thread cancellation, set*id) ignored, which
    # subprocess's fork does not: neither openssl nor systemctl uses them.
    read, write = os.pipe()
    os.set_inheritable(write, True)
    try:
        report = ["sh", "-c", "grep -E '^Sig(Ign|Blk)' /proc/self/status; ls /proc/self/fd"]
        mine, theirs = _both(report)
        assert mine[:1] + mine[2:] == theirs[:1] + theirs[2:]  # type: ignore[index]
        mine_lines, their_lines = mine[1].splitlines(), theirs[1].splitlines()  # type: ignore[index]
        glibc_own = 0x180000000
        assert int(mine_lines[1].split()[1], 16) & ~glibc_own == int(their_lines[1].split()[1], 16)
        assert mine_lines[0] == their_lines[0] and mine_lines[2:] == their_lines[2:]
        assert str(write).encode() not in mine_lines[2:]  # ours kept its descriptor
    finally:
        os.close(read)
        os.close(write)
    with pytest.raises(FileNotFoundError):
        spawn.run(["no-such-program-here"], timeout=5)


def test_a_program_past_its_timeout_is_killed(tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(spawn.TimeoutExpired):
        spawn.run(["sh", "-c", f"echo $$ > {tmp_path}/pid; exec sleep 30"], timeout=0.5)
    assert time.monotonic() - started < 10
    pid = int((tmp_path / "pid").read_text())
    assert not Path(f"/proc/{pid}").exists()  # killed and waited for, not left running


def test_a_program_is_killed_whatever_ends_the_exchange(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = []  # the program's pid, once it is known to have started

    def interrupted(*args: object) -> tuple[bytes, bytes]:
        pid_file = tmp_path / "pid"
        deadline = time.monotonic() + 10
        while not pid_file.exists() or not pid_file.read_text().endswith("\n"):
            assert time.monotonic() < deadline, "the program never started"
            time.sleep(0.01)
        started.append(int(pid_file.read_text()))
        raise KeyboardInterrupt

    monkeypatch.setattr(spawn, "_exchange", interrupted)
    with pytest.raises(KeyboardInterrupt):
        spawn.run(["sh", "-c", f"echo $$ > {tmp_path}/pid; exec sleep 30"], timeout=30)
    left_running = Path(f"/proc/{started[0]}").exists()
    if left_running:  # still our unreaped child, so the pid is still its own
        os.kill(started[0], signal.SIGKILL)
    assert not left_running  # killed and waited for
