from pathlib import Path

import pytest

from octoboot.errors import ConfigError
from octoboot.fleet import FDS_PER_MACHINE
from octoboot.inventory import Environment, OctopusOverride
from octoboot.settings import (
    MAX_DEFAULT_WORKERS,
    OctopusTarget,
    Secret,
    Settings,
    default_workers,
    load_settings,
    workers_for,
)

KEY = "API-SECRETKEY0123456789"
PASSWORD = "pfx-pass-word"
URL = "https://octopus.example.com"


def settings(tmp_path: Path, dotenv: str = "", **environ: str) -> Settings:
    path = tmp_path / ".env"
    path.write_text(dotenv)
    return load_settings(environ, path)


def environment(tmp_path: Path, octopus: OctopusOverride | None = None) -> Environment:
    return Environment("qa", "QA", tmp_path / "machines" / "qa.toml", (), octopus)


def config_error(call, *args) -> str:
    with pytest.raises(ConfigError) as caught:
        call(*args)
    message = str(caught.value)
    assert KEY not in message and PASSWORD not in message and "\n" not in message
    return message


def key_file(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


# --- Secret -----------------------------------------------------------------------------


def test_secret_hides_its_value_everywhere_but_reveal():
    secret = Secret(KEY)
    assert repr(secret) == str(secret) == f"{secret}" == "Secret('***')"
    assert secret.reveal() == KEY
    assert secret == Secret(KEY) and secret != Secret("other")


def test_no_secret_shows_in_the_repr_of_settings_or_target(tmp_path):
    loaded = settings(
        tmp_path,
        f"OCTOPUS_API_KEY={KEY}\nOCTOBOOT_PFX_PASSWORD={PASSWORD}\n",
        OCTOPUS_URL=URL,
        OTHER_SECRET=KEY,
    )
    target = loaded.octopus_for(environment(tmp_path))
    for text in (repr(loaded), str(loaded), repr(target), str(target)):
        assert KEY not in text and PASSWORD not in text
    assert target.api_key.reveal() == KEY
    assert loaded.pfx_password().reveal() == PASSWORD


# --- loading ----------------------------------------------------------------------------


def test_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    loaded = load_settings({}, None)
    assert loaded == Settings(
        octopus_url=None,
        octopus_api_key=None,
        octopus_api_key_file=None,
        octopus_space=None,
        state_dir=tmp_path / ".octoboot",
        machines_dir=Path("machines"),
        workers=default_workers(),
        pfx_secret=None,
    )
    assert loaded.state_dir.is_absolute()


def test_default_workers_fit_the_controllers_limits():
    # A common soft limit of 1024 open files still runs 100 machines in one wave.
    assert 100 <= workers_for(1024, None) == (1024 - 100) // FDS_PER_MACHINE
    assert workers_for(None, 900) == (900 - 100) // 8
    assert workers_for(100_000, 100_000) == workers_for(None, None) == MAX_DEFAULT_WORKERS
    assert workers_for(50, 50) == 1  # never none
    assert 1 <= default_workers() <= MAX_DEFAULT_WORKERS


def test_default_environ_is_the_process_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("OCTOBOOT_WORKERS", "7")
    assert load_settings(dotenv_path=tmp_path / "missing.env").workers == 7


def test_default_dotenv_is_dot_env_in_the_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("OCTOBOOT_WORKERS=5\n")
    assert load_settings({}).workers == 5


def test_every_key(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    loaded = settings(
        tmp_path,
        f"OCTOPUS_URL={URL}/\n"
        "OCTOPUS_SPACE=Team A\n"
        "OCTOPUS_API_KEY_FILE=keys/octopus.key\n"
        "OCTOBOOT_STATE_DIR=~/state\n"
        "OCTOBOOT_MACHINES_DIR=inventory\n"
        f"OCTOBOOT_PFX_PASSWORD='{PASSWORD}'\n"
        "OCTOBOOT_WORKERS=4\n",
    )
    assert loaded.octopus_url == URL  # trailing slash dropped
    assert loaded.octopus_space == "Team A"
    assert loaded.octopus_api_key_file == tmp_path / "keys" / "octopus.key"
    assert loaded.state_dir == tmp_path / "home" / "state"
    assert loaded.machines_dir == Path("inventory")
    assert loaded.pfx_password() == Secret(PASSWORD)
    assert loaded.workers == 4


def test_health_tasks_are_shared_unless_per_machine_is_asked_for(tmp_path):
    assert settings(tmp_path, "").health_tasks == "shared"
    assert settings(tmp_path, "OCTOBOOT_HEALTH_TASKS=per-machine\n").health_tasks == "per-machine"
    with pytest.raises(ConfigError, match="OCTOBOOT_HEALTH_TASKS must be shared or per-machine"):
        settings(tmp_path, "OCTOBOOT_HEALTH_TASKS=one\n")


def test_process_environment_wins_over_dotenv(tmp_path):
    loaded = settings(
        tmp_path, "OCTOBOOT_WORKERS=4\nOCTOPUS_SPACE=FromFile\n", OCTOBOOT_WORKERS="9"
    )
    assert (loaded.workers, loaded.octopus_space) == (9, "FromFile")


def test_empty_values_count_as_unset(tmp_path):
    loaded = settings(tmp_path, "OCTOPUS_SPACE=FromFile\nOCTOBOOT_WORKERS=\n", OCTOPUS_SPACE="")
    assert (loaded.octopus_space, loaded.workers) == ("FromFile", default_workers())


def test_missing_dotenv_is_fine(tmp_path):
    assert load_settings({"OCTOBOOT_WORKERS": "3"}, tmp_path / "nope").workers == 3


def test_dotenv_values_are_verbatim(tmp_path):
    loaded = settings(tmp_path, "OCTOBOOT_PFX_PASSWORD='a${HOME}b'\n", HOME="/root")
    assert loaded.pfx_password().reveal() == "a${HOME}b"


@pytest.mark.parametrize("value", ["abc", "0", "-3", "2.5"])
def test_bad_workers(tmp_path, value):
    message = config_error(settings, tmp_path, f"OCTOBOOT_WORKERS={value}\n")
    assert message == f"OCTOBOOT_WORKERS must be a whole number of at least 1, got {value!r}"


@pytest.mark.parametrize(
    "url", ["octopus.example.com", "ftp://octopus.example.com", "https://", "https://h:99999"]
)
def test_octopus_url_must_be_http_or_https(tmp_path, url):
    message = config_error(settings, tmp_path, f"OCTOPUS_URL={url}\n")
    assert message.startswith("OCTOPUS_URL must be an http:// or https:// URL")


def test_octopus_url_with_credentials_is_refused_without_echoing_them(tmp_path):
    message = config_error(settings, tmp_path, f"OCTOPUS_URL=https://me:{KEY}@octopus.example\n")
    assert message == "OCTOPUS_URL must not contain a user name or password"


def test_plain_http_and_paths_are_fine(tmp_path):
    loaded = settings(tmp_path, "OCTOPUS_URL=http://127.0.0.1:8080/octopus/\n")
    assert loaded.octopus_url == "http://127.0.0.1:8080/octopus"


def test_key_and_key_file_together(tmp_path):
    message = config_error(settings, tmp_path, f"OCTOPUS_API_KEY={KEY}\nOCTOPUS_API_KEY_FILE=k\n")
    assert message == "set OCTOPUS_API_KEY or OCTOPUS_API_KEY_FILE, not both"


def test_api_key_with_spaces_is_refused_without_echoing_it(tmp_path):
    message = config_error(settings, tmp_path, f"OCTOPUS_API_KEY='{KEY} {KEY}'\n")
    assert message == "the Octopus API key in OCTOPUS_API_KEY must be one word, without spaces"


def test_control_characters_in_space(tmp_path):
    message = config_error(settings, tmp_path, 'OCTOPUS_SPACE="a\\nb"\n')
    assert message == "OCTOPUS_SPACE must not contain line breaks or other control characters"


# --- which Octopus for an environment ---------------------------------------------------


def test_octopus_from_settings(tmp_path):
    loaded = settings(tmp_path, f"OCTOPUS_URL={URL}\nOCTOPUS_API_KEY= {KEY} \nOCTOPUS_SPACE=S\n")
    target = loaded.octopus_for(environment(tmp_path))
    assert target == OctopusTarget(URL, Secret(KEY), "S")


def test_override_wins_field_by_field(tmp_path):
    loaded = settings(tmp_path, f"OCTOPUS_URL={URL}\nOCTOPUS_API_KEY={KEY}\nOCTOPUS_SPACE=S\n")
    space_only = loaded.octopus_for(environment(tmp_path, OctopusOverride(space="QA Space")))
    assert space_only == OctopusTarget(URL, Secret(KEY), "QA Space")
    same_server = loaded.octopus_for(environment(tmp_path, OctopusOverride(url=URL + "/")))
    assert same_server == OctopusTarget(URL, Secret(KEY), "S")


def test_override_with_api_key_env_looks_in_the_merged_environment(tmp_path):
    loaded = settings(
        tmp_path, "OCTOPUS_TEST_API_KEY=API-TEST\n", OCTOPUS_URL=URL, OCTOPUS_API_KEY=KEY
    )
    override = OctopusOverride(url="https://test.example", api_key_env="OCTOPUS_TEST_API_KEY")
    target = loaded.octopus_for(environment(tmp_path, override))
    assert target == OctopusTarget("https://test.example", Secret("API-TEST"), None)


def test_override_api_key_env_that_is_not_set(tmp_path):
    loaded = settings(tmp_path, OCTOPUS_URL=URL)
    env = environment(tmp_path, OctopusOverride(api_key_env="OCTOPUS_TEST_API_KEY"))
    message = config_error(loaded.octopus_for, env)
    assert message == (
        "OCTOPUS_TEST_API_KEY is not set (in the environment or .env); it is named by "
        f"api_key_env under [octopus] in {env.file}"
    )


def test_override_with_api_key_file(tmp_path):
    path = key_file(tmp_path / "test.key", f"\n{KEY}\n")
    loaded = settings(tmp_path, OCTOPUS_URL=URL)
    target = loaded.octopus_for(environment(tmp_path, OctopusOverride(api_key_file=path)))
    assert target.api_key.reveal() == KEY


def test_settings_api_key_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    key_file(tmp_path / "octopus.key", KEY + "\n")
    loaded = settings(tmp_path, f"OCTOPUS_URL={URL}\nOCTOPUS_API_KEY_FILE=octopus.key\n")
    assert loaded.octopus_for(environment(tmp_path)).api_key.reveal() == KEY


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_key_file_open_to_others_is_refused(tmp_path, mode):
    path = key_file(tmp_path / "test.key", KEY, mode)
    loaded = settings(tmp_path, OCTOPUS_URL=URL)
    message = config_error(
        loaded.octopus_for, environment(tmp_path, OctopusOverride(api_key_file=path))
    )
    assert message == (
        f"API key file {path} is open to group or others (mode {mode:o}): run chmod 600 {path}"
    )


def test_key_file_missing_or_empty(tmp_path):
    loaded = settings(tmp_path, OCTOPUS_URL=URL)
    missing = tmp_path / "missing.key"
    message = config_error(
        loaded.octopus_for, environment(tmp_path, OctopusOverride(api_key_file=missing))
    )
    assert message == f"cannot read API key file {missing}: No such file or directory"
    empty = key_file(tmp_path / "empty.key", "\n")
    message = config_error(
        loaded.octopus_for, environment(tmp_path, OctopusOverride(api_key_file=empty))
    )
    assert message == f"the Octopus API key in API key file {empty} is empty"


def test_missing_url(tmp_path):
    env = environment(tmp_path)
    message = config_error(settings(tmp_path, OCTOPUS_API_KEY=KEY).octopus_for, env)
    assert message == (
        "no Octopus URL for environment 'qa': set OCTOPUS_URL in .env, "
        f"or url under [octopus] in {env.file}"
    )


def test_missing_key(tmp_path):
    env = environment(tmp_path)
    message = config_error(settings(tmp_path, OCTOPUS_URL=URL).octopus_for, env)
    assert message == (
        "no Octopus API key for environment 'qa': set OCTOPUS_API_KEY in .env, "
        f"or api_key_env / api_key_file under [octopus] in {env.file}"
    )


def test_settings_key_is_never_sent_to_another_server(tmp_path):
    loaded = settings(tmp_path, OCTOPUS_URL=URL, OCTOPUS_API_KEY=KEY)
    env = environment(tmp_path, OctopusOverride(url="https://elsewhere.example"))
    message = config_error(loaded.octopus_for, env)
    assert (
        "its url under [octopus] in" in message and "OCTOPUS_API_KEY is not sent there" in message
    )
    without_settings_url = settings(tmp_path, OCTOPUS_API_KEY=KEY)
    assert "is not sent there" in config_error(without_settings_url.octopus_for, env)


def test_override_url_is_validated_and_named(tmp_path):
    env = environment(tmp_path, OctopusOverride(url="octopus-test", api_key_env="K"))
    message = config_error(settings(tmp_path, K=KEY).octopus_for, env)
    assert message == (
        f"url under [octopus] in {env.file} must be an http:// or https:// URL, "
        "like https://octopus.example.com"
    )


def test_pfx_password_missing(tmp_path):
    message = config_error(settings(tmp_path).pfx_password)
    assert "set OCTOBOOT_PFX_PASSWORD in .env" in message


def test_the_key_source_names_the_setting_to_fix(tmp_path):
    loaded = settings(tmp_path, f"OCTOPUS_URL={URL}\nOCTOPUS_API_KEY={KEY}\n")
    assert loaded.octopus_for(environment(tmp_path)).key_source.startswith("OCTOPUS_API_KEY")
    override = OctopusOverride(url="https://test.example", api_key_env="OCTOPUS_TEST_API_KEY")
    loaded = settings(tmp_path, "OCTOPUS_TEST_API_KEY=API-TEST\n", OCTOPUS_URL=URL)
    source = loaded.octopus_for(environment(tmp_path, override)).key_source
    assert source.startswith("OCTOPUS_TEST_API_KEY") and "api_key_env" in source


def test_the_url_source_names_the_setting_to_fix(tmp_path):
    loaded = settings(tmp_path, f"OCTOPUS_URL={URL}\nOCTOPUS_API_KEY={KEY}\n")
    assert loaded.octopus_for(environment(tmp_path)).url_source == "OCTOPUS_URL"
    override = OctopusOverride(url="https://test.example", api_key_env="OCTOPUS_TEST_API_KEY")
    loaded = settings(tmp_path, "OCTOPUS_TEST_API_KEY=API-TEST\n", OCTOPUS_URL=URL)
    env = environment(tmp_path, override)
    assert loaded.octopus_for(env).url_source == f"url under [octopus] in {env.file}"


def test_nothing_set_is_the_settings_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the state folder's default is the working directory's
    loaded = load_settings({}, dotenv_path=None)
    assert loaded == Settings()
    assert (loaded.state_dir, loaded.machines_dir) == (tmp_path / ".octoboot", Path("machines"))
    assert loaded.health_tasks == "shared"
