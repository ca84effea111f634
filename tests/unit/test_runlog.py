import stat

from octoboot.runlog import MASK, MachineLog, Masker, new_run_dir


def test_masker_hides_every_secret_longest_first():
    mask = Masker(["API-KEY123", "API-KEY", ""])
    assert mask("key=API-KEY123 and API-KEY") == f"key={MASK} and {MASK}"


def test_machine_log_is_private_masked_and_echoes(tmp_path):
    run_dir = new_run_dir(tmp_path, "bootstrap")
    echoed = []
    log = MachineLog(run_dir / "web01.log", Masker(["s3cret"]), echo=echoed.append)
    log.write("$ run --password s3cret\nline two")
    log.write("quiet", echo=False)
    log.close()
    text = (run_dir / "web01.log").read_text()
    assert "s3cret" not in text and MASK in text and "line two" in text and "quiet" in text
    assert echoed == [f"$ run --password {MASK}\nline two"]
    assert stat.S_IMODE((run_dir / "web01.log").stat().st_mode) == 0o600
    assert stat.S_IMODE(run_dir.stat().st_mode) == 0o700


def test_every_secret_octoboot_loads_is_masked_without_being_handed_over(tmp_path):
    import secrets

    from octoboot.inventory import Environment, OctopusOverride
    from octoboot.settings import load_settings

    from_file, from_env = (f"API-{secrets.token_hex(12).upper()}" for _ in range(2))
    path = tmp_path / "own.key"
    path.write_text(from_file + "\n")
    path.chmod(0o600)
    loaded = load_settings({"OWN_KEY": from_env}, None)
    for n, override in enumerate(
        [OctopusOverride(url="https://a.example", api_key_file=path),
         OctopusOverride(url="https://b.example", api_key_env="OWN_KEY")]
    ):  # fmt: skip
        loaded.octopus_for(Environment(f"e{n}", "E", tmp_path / f"e{n}.toml", (), override))
    assert Masker()(f"{from_file} and {from_env}") == f"{MASK} and {MASK}"
    assert Masker()("OWN_KEY names it") == "OWN_KEY names it"
