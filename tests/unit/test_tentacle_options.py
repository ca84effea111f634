"""The Tentacle stand-in's option grammar (Mono.Options, as the real Tentacle parses)."""

from __future__ import annotations

import pytest

from octoboot.sandbox.tentacle_standin.cli import COMMON_OPTIONS, HOST_OPTIONS
from octoboot.sandbox.tentacle_standin.options import Option, OptionError, describe, parse

OPTIONS = (
    Option("instance="),
    Option("port="),
    Option("noListen="),
    Option("listenIpAddress="),
    Option("server="),
    Option("trust="),
    Option("reset-trust"),
    Option("b|if-blank"),
    Option("f|from-file="),
    Option("pw|pfx-password="),
    Option("home=|homedir="),
    Option("env|environment="),
    Option("r|role="),
)


def test_names_are_case_insensitive() -> None:
    parsed = parse(OPTIONS, ["--LISTENIPADDRESS=127.0.0.1", "--NoListen", "False"])
    assert parsed.value("listenIpAddress") == "127.0.0.1"
    assert parsed.value("nolisten") == "False"
    assert parsed.unrecognized == []


@pytest.mark.parametrize("spelling", ["--port=10933", "-port=10933", "/port=10933", "--port:10933"])
def test_every_prefix_and_separator_gives_the_value(spelling: str) -> None:
    assert parse(OPTIONS, [spelling]).value("port") == "10933"


def test_a_value_may_be_the_next_argument_whatever_it_looks_like() -> None:
    parsed = parse(OPTIONS, ["--port", "--reset-trust", "--instance", "web 01"])
    assert parsed.value("port") == "--reset-trust"
    assert not parsed.flag("reset-trust")
    assert parsed.value("instance") == "web 01"


def test_only_the_first_separator_splits_name_from_value() -> None:
    parsed = parse(OPTIONS, ["--server=http://octopus:8080/x=y", "--server:https://o:1"])
    assert parsed.values("server") == ["http://octopus:8080/x=y", "https://o:1"]


def test_repeated_options_collect_in_order_and_the_last_one_wins_as_a_value() -> None:
    parsed = parse(OPTIONS, ["--trust", "AA", "--env=Dev", "--trust=BB", "-r", "web", "--role=db"])
    assert parsed.values("trust") == ["AA", "BB"]
    assert parsed.value("trust") == "BB"
    assert parsed.values("environment") == ["Dev"]
    assert parsed.values("role") == ["web", "db"]


def test_aliases_name_the_same_option() -> None:
    parsed = parse(OPTIONS, ["-f", "/tmp/a.pfx", "--pw=one", "--PFX-PASSWORD", "two"])
    assert parsed.value("from-file") == "/tmp/a.pfx"
    assert parsed.values("pw") == ["one", "two"]
    assert parse(OPTIONS, ["--homedir=/h"]).value("home") == "/h"


def test_switches_take_no_value_even_when_one_is_written() -> None:
    parsed = parse(OPTIONS, ["--reset-trust", "--if-blank=false", "leftover"])
    assert parsed.flag("reset-trust")
    assert parsed.flag("b")
    assert parsed.unrecognized == ["leftover"]


def test_a_switch_with_plus_or_minus_is_the_switch() -> None:
    assert parse(OPTIONS, ["--reset-trust+"]).flag("reset-trust")
    assert parse(OPTIONS, ["--reset-trust-"]).flag("reset-trust")


def test_single_letter_options_bundle_after_one_dash() -> None:
    parsed = parse(OPTIONS, ["-bf/tmp/x.pfx"])
    assert parsed.flag("if-blank")
    assert parsed.value("from-file") == "/tmp/x.pfx"
    with pytest.raises(OptionError, match="Cannot bundle unregistered option '-z'"):
        parse(OPTIONS, ["-bz"])


def test_unknown_options_and_stray_words_are_left_unrecognized() -> None:
    parsed = parse(OPTIONS, ["--bogus=1", "--port", "1", "-x", "/etc/x", "word"])
    assert parsed.unrecognized == ["--bogus=1", "-x", "/etc/x", "word"]
    assert parsed.value("port") == "1"


def test_double_dash_ends_option_processing() -> None:
    parsed = parse(OPTIONS, ["--port=1", "--", "--trust=AA"])
    assert parsed.value("port") == "1"
    assert parsed.values("trust") == []
    assert parsed.unrecognized == ["--trust=AA"]


def test_a_value_option_without_its_value_at_the_end_is_an_option_error() -> None:
    with pytest.raises(OptionError, match="Missing required value for option '--port'"):
        parse(OPTIONS, ["--reset-trust", "--port"])


def test_common_switches_come_out_before_the_command_parses() -> None:
    common = parse(COMMON_OPTIONS, ["configure", "--nologo", "--port", "1", "--NoConsoleLogging"])
    assert common.unrecognized == ["configure", "--port", "1"]
    assert not common.flag("help")
    assert parse(COMMON_OPTIONS, ["version", "--help"]).flag("help")


def test_host_switches_come_out_with_the_monitor_mutex_value() -> None:
    args = ["--instance=A", "--console", "--noninteractive", "--monitorMutex", "m", "--trust=B"]
    assert parse(HOST_OPTIONS, args).unrecognized == ["--instance=A", "--trust=B"]


def test_help_lists_aliases_and_values_like_mono_options() -> None:
    text = describe((Option("f|from-file=", "Import from a file"), Option("secret=", hidden=True)))
    assert text == "  -f, --from-file=VALUE      Import from a file"


def test_the_command_index_matches_the_modules():
    from octoboot.sandbox.tentacle_standin import cli

    for module, names in cli.MODULES.items():
        declared = {n for c in cli._module_commands(module) for n in (c.name, *c.aliases)}
        assert set(names) == declared, module
    assert cli.find("VERSION").name == "version" and cli.find("run").name == "agent"
    assert cli.find("help") is cli.HELP and cli.find("nope") is None
