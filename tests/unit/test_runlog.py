import errno
import os
import stat

from octoboot import files
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


def test_a_log_the_disk_cannot_take_says_why_and_keeps_whole_lines(tmp_path, monkeypatch):
    path = tmp_path / "web01.log"
    log = MachineLog(path, Masker())
    log.write("--- connect")
    assert log.failure is None

    def full(fd, data):
        os.ftruncate(fd, os.fstat(fd).st_size + 3)  # a few bytes made it before the error
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(files.os, "write", full)
    log.write("--- probe")  # never raises where the machine's work is
    log.write("after")
    log.close()
    assert log.failure == (
        f"cannot write its log {path}: No space left on device (free some space and run again)"
    )
    assert path.read_text().endswith("--- connect\n")


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


def command_output(tmp_path, secrets=(), echo=None):
    log = MachineLog(tmp_path / "web01.log", Masker(secrets), echo=echo)
    return log, log.output("stdout")


def logged(log: MachineLog) -> str:
    """The stdout lines of a log, as the command printed them."""
    log.close()
    lines = log.path.read_text().splitlines()
    return "".join(line.split(" stdout| ", 1)[1] + "\n" for line in lines if " stdout| " in line)


def test_command_output_goes_whole_to_the_log_and_keeps_a_head_and_a_tail(tmp_path):
    from octoboot.runlog import EXCERPT_CHARS

    echoed: list[str] = []
    log, out = command_output(tmp_path, echo=echoed.append)
    text = "".join(f"line {n}\n" for n in range(100_000))
    data = text.encode()
    for start in range(0, len(data), 1000):
        out.feed(data[start : start + 1000])
    out.close()
    assert out.size == len(data)
    assert logged(log) == text
    excerpt = out.excerpt()
    assert excerpt.startswith("line 0\nline 1\n") and excerpt.endswith("line 99999\n")
    assert len(excerpt) < 2 * EXCERPT_CHARS + 200 and f"{len(data)} bytes in all" in excerpt
    assert str(log.path) in excerpt
    shown = "\n".join(echoed)
    assert len(shown) < 2 * EXCERPT_CHARS + 200 and shown.endswith("line 99999")


def test_short_output_is_kept_whole(tmp_path):
    _, out = command_output(tmp_path)
    for text in ("", "one\n", "x" * 5000 + "\n"):
        _, out = command_output(tmp_path)
        out.feed(text.encode())
        out.close()
        assert out.excerpt() == text


def test_characters_split_across_chunks_and_invalid_bytes(tmp_path):
    log, out = command_output(tmp_path)
    data = "héllo wörld €\n".encode() + b"\xff\xfe raw\n"
    for byte in data:
        out.feed(bytes([byte]))
    out.close()
    assert out.excerpt() == "héllo wörld €\n\\xff\\xfe raw\n"
    assert logged(log) == out.excerpt()


def test_a_secret_cut_by_chunks_or_in_an_endless_line_is_masked(tmp_path):
    from octoboot.runlog import LINE_CHARS

    secret = "API-S3CRETS3CRETS3CRET"
    log, out = command_output(tmp_path, [secret])
    line = ("abc " + secret + " ") * (3 * LINE_CHARS // 25)  # no newline for a long time
    data = (line + "\n").encode()
    for start in range(0, len(data), 7):  # chunks that cut the secret everywhere
        out.feed(data[start : start + 7])
    out.close()
    text = logged(log)
    assert secret not in text and secret not in out.excerpt()
    assert text.replace("\n", "") == line.replace(secret, MASK)


def test_safe_cut_never_cuts_a_secret_in_two():
    mask = Masker(["SECRET", "CRETIN"])
    assert mask.safe_cut("aaaaaaaaaaaaaaaa") == 11  # the last 5 could begin a secret
    assert mask.safe_cut("aaaaSECRETbb") == 4  # not inside one
    assert mask.safe_cut("xxxxxxSECRETIN") == 6  # nor inside either of two that overlap
    assert Masker([]).safe_cut("abc") == 3


def test_a_machine_log_holds_a_descriptor_only_while_it_is_written(tmp_path):
    import os

    def open_files() -> int:
        return len(os.listdir("/proc/self/fd"))

    before = open_files()
    logs = [MachineLog(tmp_path / f"web{n}.log", Masker([])) for n in range(20)]
    assert open_files() == before and not any(log.path.exists() for log in logs)
    logs[0].write("one")
    assert open_files() == before + 1
    logs[0].close()
    logs[0].write("two")  # a machine cut loose may still write: the log opens again
    logs[0].close()
    assert open_files() == before
    assert logs[0].path.read_text().split()[1::2] == ["one", "two"]
