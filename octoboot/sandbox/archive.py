"""Pack the Tentacle stand-in like the real Linux archive, and write the systemctl launcher.

The real `tentacle-<version>-net8.0-linux-x64.tar.gz` has a top folder `tentacle/`, so
extracting it into /opt/octopus gives /opt/octopus/tentacle/Tentacle. Ours holds:

    tentacle/Tentacle               launcher: a `#!python -S` script that runs lib/tentacle_standin
    tentacle/VERSION                the version `Tentacle version` reports
    tentacle/configure-tentacle.sh  placeholder for the real interactive wizard
    tentacle/lib/tentacle_standin/  the stand-in, copied from octoboot/sandbox/tentacle_standin
    tentacle/lib/octoboot/          __init__, errors, certificates, copied from this tree
    tentacle/lib/*/__pycache__/     their bytecode for the hosts' Python

Every Tentacle command is a new Python process on the host, and an unpacked archive has no
bytecode cache (nor gets one where PYTHONDONTWRITEBYTECODE is set): the bytecode is packed
with the sources, as pip does for what it installs, in hash-based form that the source's
time cannot invalidate (PEP 552, unchecked: the archive's sources never change).

The archive is deterministic (sorted entries, fixed owners and times, gzip mtime 0), so the same
inputs always give the same bytes and the same checksum.
"""

from __future__ import annotations

import gzip
import io
import os
import py_compile
import shlex
import site
import sys
import tarfile
import tempfile
from pathlib import Path

import octoboot
from octoboot.sandbox import systemctl_standin, tentacle_standin

DEFAULT_TENTACLE_VERSION = "8.3.2977"
_MTIME = 1_704_067_200  # 2024-01-01: fixed, and recent enough that tar does not complain
_SHARED_MODULES = ("__init__.py", "errors.py", "certificates.py")
_SYSTEMCTL_SHELL = Path(systemctl_standin.__file__).with_suffix(".sh")

# Every Tentacle command starts this, so it keeps its own cost down: the interpreter runs it
# directly (no shell before it, no runpy), without `site` (-S: the venv's .pth hooks), given
# the interpreter's site-packages for cryptography; realpath finds lib/ also through a symlink.
# The cycle collector waits until the command's modules are imported (cli.main turns it back
# on): imports allocate much and free nothing, and its passes over them cost 3 ms a command.
_LAUNCHER = """#!{python} -S
# Octopus Tentacle stand-in (octoboot sandbox): the Python package in lib/ plays the Tentacle.
import gc, os, sys
gc.disable()
here = os.path.dirname(os.path.realpath(__file__))
sys.path[:0] = [os.path.join(here, "lib"), *{site_packages!r}]
from tentacle_standin.cli import main
sys.exit(main(sys.argv[1:]))
"""

_CONFIGURE_PLACEHOLDER = """#!/bin/sh
# The real archive ships an interactive configuration wizard here. The stand-in does not:
# configure an instance with `Tentacle create-instance`, `configure`, `service` and friends.
echo "configure-tentacle.sh is not part of the Tentacle stand-in." >&2
exit 1
"""


def archive_name(version: str = DEFAULT_TENTACLE_VERSION) -> str:
    return f"tentacle-{version}-net8.0-linux-x64.tar.gz"


def _files(python: str, version: str) -> dict[str, tuple[bytes, int]]:
    """Archive path -> (content, mode) for every file."""
    files = {
        "tentacle/Tentacle": (
            _LAUNCHER.format(python=python, site_packages=site.getsitepackages()).encode(),
            0o755,
        ),
        "tentacle/VERSION": (f"{version}\n".encode(), 0o644),
        "tentacle/configure-tentacle.sh": (_CONFIGURE_PLACEHOLDER.encode(), 0o755),
    }
    shared = Path(octoboot.__file__).parent
    package = Path(tentacle_standin.__file__).parent
    modules = [("octoboot", shared / name) for name in _SHARED_MODULES]
    modules += [("tentacle_standin", module) for module in sorted(package.glob("*.py"))]
    tag = sys.implementation.cache_tag
    with tempfile.TemporaryDirectory() as tmp:
        for folder, module in modules:
            files[f"tentacle/lib/{folder}/{module.name}"] = (module.read_bytes(), 0o644)
            compiled = Path(tmp) / f"{folder}.{module.stem}.pyc"
            py_compile.compile(
                str(module), cfile=str(compiled), doraise=True,
                invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
            )  # fmt: skip
            name = f"tentacle/lib/{folder}/__pycache__/{module.stem}.{tag}.pyc"
            files[name] = (compiled.read_bytes(), 0o644)
    return files


def _entry(name: str, mode: int, size: int = 0, *, directory: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    info.mode, info.size, info.mtime = mode, size, _MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def build_tentacle_archive(
    dest_dir: Path, *, python: str = sys.executable, version: str = DEFAULT_TENTACLE_VERSION
) -> Path:
    """Write the stand-in archive into dest_dir; python is the interpreter hosts will run
    (with this interpreter's site-packages: the controller's own, or one like it), a path
    without whitespace (it is the launcher's #! line)."""
    if not python.startswith("/") or any(c.isspace() for c in python):
        raise ValueError(f"the hosts' python must be an absolute path without spaces: {python}")
    files = _files(python, version)
    directories = {str(Path(name).parent) for name in files}
    directories |= {str(parent) for d in directories for parent in Path(d).parents}
    directories.discard(".")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(directories | set(files)):
            if name in files:
                content, mode = files[name]
                tar.addfile(_entry(name, mode, len(content)), io.BytesIO(content))
            else:
                tar.addfile(_entry(name, 0o755, directory=True))
    dest_dir.mkdir(parents=True, exist_ok=True)
    target = dest_dir / archive_name(version)
    partial = target.with_name(target.name + ".partial")
    with (
        open(partial, "wb") as raw,
        gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as gz,
    ):
        gz.write(buffer.getvalue())
    os.replace(partial, target)
    return target


def write_systemctl_launcher(path: Path, *, python: str = sys.executable) -> None:
    """An executable `systemctl`: a shell that answers the read-only verbs itself
    (`systemctl_standin.sh`) and runs the systemctl stand-in with the given interpreter for
    the rest, from its bytecode compiled beside the launcher: a script is compiled at every
    run, and `-m` costs runpy's imports. The stand-in is stdlib only, so the interpreter
    starts isolated and without `site` (-I -S)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    compiled = path.with_name(f".{path.name}.pyc")
    py_compile.compile(systemctl_standin.__file__, cfile=str(compiled), doraise=True)
    path.write_text(
        "#!/bin/sh\n"
        + _SYSTEMCTL_SHELL.read_text(encoding="utf-8")
        + f'exec {shlex.quote(python)} -I -S {shlex.quote(str(compiled))} "$@"\n',
        encoding="utf-8",
    )
    path.chmod(0o755)


def write_unshare_launcher(path: Path, *, unshare: str) -> None:
    """An executable `unshare` that runs the real one, unless the host plays a container that
    may not make namespaces (the fault `no_namespaces`): then it fails as unshare does there."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "#!/bin/sh\n# unshare as the sandbox host allows it (octoboot sandbox)\n"
        "if grep -qs '\"no_namespaces\": *true' /run/octoboot-sandbox/faults.json; then\n"
        '    echo "unshare: unshare failed: Operation not permitted" >&2\n'
        "    exit 1\n"
        "fi\n"
        f'exec {shlex.quote(unshare)} "$@"\n',
        encoding="utf-8",
    )
    path.chmod(0o755)
