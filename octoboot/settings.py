"""Settings from the process environment and .env: which Octopus, which key, where state lives.

The process environment wins over .env; an empty value counts as unset (CI systems set missing
secrets to ""). .env values are taken verbatim (no ${VAR} expansion), so a password is what it
says. Secrets are kept in `Secret`, which never shows its value in a repr, a log or an error, and
which registers every value it holds: `loaded_secrets()` is what the masking of terminal, logs
and reports hides, whichever run or environment loaded them.
"""

from __future__ import annotations

import contextlib
import os
import resource
import threading
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from urllib.parse import urlsplit

from dotenv import dotenv_values

from octoboot.errors import ConfigError
from octoboot.fleet import FDS_PER_MACHINE
from octoboot.inventory import Environment, OctopusOverride

DOTENV = Path(".env")
# The defaults of OCTOBOOT_STATE_DIR and OCTOBOOT_MACHINES_DIR (relative: the working directory's).
STATE_DIR = Path(".octoboot")
MACHINES_DIR = Path("machines")
# OCTOBOOT_HEALTH_TASKS: "shared": machines reaching health together share a Health task
# (health.py); "per-machine": each gets its own, as before, for comparison
# (benchmarks/bootstrap.py). The first is the default.
HEALTH_TASKS = ("shared", "per-machine")
API_KEY_VARIABLE = "OCTOPUS_API_KEY"  # where the settings' own API key is read from
URL_VARIABLE = "OCTOPUS_URL"  # and their Octopus URL
# What one machine in flight holds on the controller, measured at its peak (a parallel
# bootstrap: 2.2 file descriptors and 6 threads), with room to spare; docs/performance.md.
THREADS_PER_MACHINE = 8  # its worker, paramiko's transport, Invoke's stream and stdin threads
# Kept for the process itself (Python, httpx's pool, the health coordinator, ...).
RESERVED_FDS, RESERVED_THREADS = 100, 100
# Above this many SSH handshakes at once the controller's CPU, not its limits, is the bound.
MAX_DEFAULT_WORKERS = 256

# Every secret value this process has loaded; it only grows.
_LOADED: set[str] = set()
_LOADED_LOCK = threading.Lock()


def loaded_secrets() -> frozenset[str]:
    """Every secret value loaded so far, whether or not the current run uses it."""
    with _LOADED_LOCK:
        return frozenset(_LOADED)


@dataclass(frozen=True, repr=False)
class Secret:
    """A value that must not show in reprs, logs or tracebacks: `.reveal()` it where it is used."""

    _value: str

    def __post_init__(self) -> None:
        with _LOADED_LOCK:
            _LOADED.add(self._value)

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def reveal(self) -> str:
        return self._value


@dataclass(frozen=True)
class OctopusTarget:
    """The Octopus Server one environment registers with."""

    url: str
    api_key: Secret
    space: str | None  # a space name; None: the server's default space
    # Where the key came from, so an error can say what to fix; not part of the identity.
    key_source: str = field(default=API_KEY_VARIABLE, compare=False)
    url_source: str = field(default=URL_VARIABLE, compare=False)  # the same for the URL


@dataclass(frozen=True)
class Settings:
    octopus_url: str | None = None
    octopus_api_key: Secret | None = None
    octopus_api_key_file: Path | None = None
    octopus_space: str | None = None
    state_dir: Path = field(default_factory=lambda: STATE_DIR.absolute())
    machines_dir: Path = MACHINES_DIR
    workers: int = field(default_factory=lambda: default_workers())
    health_tasks: str = HEALTH_TASKS[0]
    pfx_secret: Secret | None = None
    # The merged environment and .env, where an inventory's api_key_env is looked up.
    variables: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    def octopus_for(self, environment: Environment) -> OctopusTarget:
        """The Octopus of `environment`: its [octopus] table wins, field by field."""
        override = environment.octopus or OctopusOverride()
        where = f"under [octopus] in {environment.file}"
        url_source = f"url {where}" if override.url else URL_VARIABLE
        url = _http_url(override.url, url_source) if override.url else self.octopus_url
        if url is None:
            raise ConfigError(
                f"no Octopus URL for environment {environment.key!r}: "
                f"set {URL_VARIABLE} in .env, or url {where}"
            )
        api_key, key_source = self._api_key_for(environment, override, url)
        return OctopusTarget(
            url=url,
            api_key=api_key,
            space=override.space or self.octopus_space,
            key_source=key_source,
            url_source=url_source,
        )

    def load_secrets(self, environments: Iterable[Environment]) -> None:
        """Read every API key the settings and these environments name, so that they are
        masked (see Secret) even in a run that does not use them: `exec` shows what hosts
        print. A key that cannot be read is left for the run that needs it to report."""
        for environment in environments:
            with contextlib.suppress(ConfigError):
                self.octopus_for(environment)
        if self.octopus_api_key_file:
            with contextlib.suppress(ConfigError):
                _read_key_file(self.octopus_api_key_file)

    def pfx_password(self) -> Secret:
        if self.pfx_secret is None:
            raise ConfigError(
                "no password for the machine identities (PFX files): "
                "set OCTOBOOT_PFX_PASSWORD in .env, and keep it: the identities need it"
            )
        return self.pfx_secret

    def _api_key_for(
        self, environment: Environment, override: OctopusOverride, url: str
    ) -> tuple[Secret, str]:
        where = f"under [octopus] in {environment.file}"
        if override.api_key_env:
            value = self.variables.get(override.api_key_env)
            if not value:
                raise ConfigError(
                    f"{override.api_key_env} is not set (in the environment or .env); "
                    f"it is named by api_key_env {where}"
                )
            return _api_key(value, override.api_key_env), (
                f"{override.api_key_env} (named by api_key_env {where})"
            )
        if override.api_key_file:
            return _read_key_file(override.api_key_file), (
                f"the file {override.api_key_file} (api_key_file {where})"
            )
        if url != self.octopus_url:
            # The settings' key belongs to OCTOPUS_URL: never hand it to another server.
            raise ConfigError(
                f"no Octopus API key for environment {environment.key!r}: its url {where} is not "
                f"OCTOPUS_URL, so OCTOPUS_API_KEY is not sent there; set api_key_env or "
                f"api_key_file {where}"
            )
        if self.octopus_api_key:
            return self.octopus_api_key, "OCTOPUS_API_KEY (environment or .env)"
        if self.octopus_api_key_file:
            return _read_key_file(self.octopus_api_key_file), (
                f"the file {self.octopus_api_key_file} (OCTOPUS_API_KEY_FILE)"
            )
        raise ConfigError(
            f"no Octopus API key for environment {environment.key!r}: set OCTOPUS_API_KEY in "
            f".env, or api_key_env / api_key_file {where}"
        )


def load_settings(
    environ: Mapping[str, str] | None = None, dotenv_path: Path | None = DOTENV
) -> Settings:
    """Settings from `environ` (default: os.environ) over `dotenv_path` (None: no .env file)."""
    variables = _merge(os.environ if environ is None else environ, dotenv_path)
    url = variables.get(URL_VARIABLE)
    key = variables.get(API_KEY_VARIABLE)
    key_file = variables.get("OCTOPUS_API_KEY_FILE")
    if key and key_file:
        raise ConfigError("set OCTOPUS_API_KEY or OCTOPUS_API_KEY_FILE, not both")
    space = variables.get("OCTOPUS_SPACE")
    if space is not None:
        _refuse_control_characters(space, "OCTOPUS_SPACE")
    password = variables.get("OCTOBOOT_PFX_PASSWORD")
    return Settings(
        octopus_url=_http_url(url, URL_VARIABLE) if url else None,
        octopus_api_key=_api_key(key, API_KEY_VARIABLE) if key else None,
        octopus_api_key_file=_absolute(key_file) if key_file else None,
        octopus_space=space,
        state_dir=_absolute(variables.get("OCTOBOOT_STATE_DIR", STATE_DIR)),
        machines_dir=Path(variables.get("OCTOBOOT_MACHINES_DIR", MACHINES_DIR)).expanduser(),
        workers=_workers(variables.get("OCTOBOOT_WORKERS")),
        health_tasks=_health_tasks(variables.get("OCTOBOOT_HEALTH_TASKS", HEALTH_TASKS[0])),
        pfx_secret=Secret(password) if password else None,
        variables=MappingProxyType(variables),
    )


def _merge(environ: Mapping[str, str], dotenv_path: Path | None) -> dict[str, str]:
    from_file: dict[str, str | None] = {}
    if dotenv_path is not None:
        try:
            from_file = dotenv_values(dotenv_path, interpolate=False)
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigError(f"{dotenv_path}: cannot read: {error}") from None
    merged = {key: value for key, value in from_file.items() if value}
    merged.update((key, value) for key, value in environ.items() if value)
    return merged


def _absolute(value: str | Path) -> Path:
    return Path(value).expanduser().absolute()


def workers_for(open_files: int | None, threads: int | None) -> int:
    """How many machines at once fit in these limits (None: unlimited)."""
    fits = [MAX_DEFAULT_WORKERS]
    if open_files is not None:
        fits.append((open_files - RESERVED_FDS) // FDS_PER_MACHINE)
    if threads is not None:
        fits.append((threads - RESERVED_THREADS) // THREADS_PER_MACHINE)
    return max(1, min(fits))


def default_workers() -> int:
    """The default --workers: as many machines as this controller can hold at once."""
    return workers_for(_soft_limit(resource.RLIMIT_NOFILE), _thread_limit())


def _soft_limit(which: int) -> int | None:
    soft = resource.getrlimit(which)[0]
    return None if soft == resource.RLIM_INFINITY else soft


def _thread_limit() -> int | None:
    """The least of the limits on this process's threads: RLIMIT_NPROC (root is exempt),
    the kernel's threads-max and the cgroup's pids.max."""
    limits = [] if os.geteuid() == 0 else [_soft_limit(resource.RLIMIT_NPROC)]
    for path in ("/proc/sys/kernel/threads-max", "/sys/fs/cgroup/pids.max"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        limits.append(int(text) if text.isdigit() else None)  # "max": no limit
    known = [limit for limit in limits if limit is not None]
    return min(known) if known else None


def _workers(value: str | None) -> int:
    if value is None:
        return default_workers()
    try:
        workers = int(value)
    except ValueError:
        workers = 0
    if workers < 1:
        raise ConfigError(f"OCTOBOOT_WORKERS must be a whole number of at least 1, got {value!r}")
    return workers


def _health_tasks(value: str) -> str:
    if value not in HEALTH_TASKS:
        raise ConfigError(
            f"OCTOBOOT_HEALTH_TASKS must be {' or '.join(HEALTH_TASKS)}, not {value!r}"
        )
    return value


def _http_url(value: str, where: str) -> str:
    _refuse_control_characters(value, where)
    try:
        url = urlsplit(value)
        url.port  # noqa: B018 -- raises ValueError for a port out of range
    except ValueError:
        url = urlsplit("")
    if url.scheme not in ("http", "https") or not url.hostname or " " in value:
        raise ConfigError(
            f"{where} must be an http:// or https:// URL, like https://octopus.example.com"
        )
    if url.username is not None or url.password is not None:
        # Not echoed: it holds a password. The API key is what authenticates.
        raise ConfigError(f"{where} must not contain a user name or password")
    return value.rstrip("/")


def _api_key(value: str, where: str) -> Secret:
    key = value.strip()
    if not key:
        raise ConfigError(f"the Octopus API key in {where} is empty")
    if any(char.isspace() or unicodedata.category(char) == "Cc" for char in key):
        raise ConfigError(f"the Octopus API key in {where} must be one word, without spaces")
    return Secret(key)


def _read_key_file(path: Path) -> Secret:
    try:
        mode = path.stat().st_mode
        if mode & 0o077:
            raise ConfigError(
                f"API key file {path} is open to group or others (mode {mode & 0o777:o}): "
                f"run chmod 600 {path}"
            )
        return _api_key(path.read_text(encoding="utf-8"), f"API key file {path}")
    except OSError as error:
        raise ConfigError(f"cannot read API key file {path}: {error.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"API key file {path} is not UTF-8 text") from None


def _refuse_control_characters(value: str, where: str) -> None:
    if any(unicodedata.category(char) == "Cc" for char in value):
        raise ConfigError(f"{where} must not contain line breaks or other control characters")
