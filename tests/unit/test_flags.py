"""The shared flags, parsed and checked by the library (tasks.py only hands them over)."""

import pytest

from octoboot.errors import ConfigError
from octoboot.run import RunOptions, Selection, report_format


def test_a_selection_from_flags_as_invoke_gives_them():
    assert Selection.from_flags("qa", ["web01", "web02"], ["db*"], True) == Selection(
        env="qa", hosts=("web01", "web02"), limits=("db*",), retry_failed=True
    )
    assert Selection.from_flags() == Selection()
    assert Selection.from_flags("qa", None, []) == Selection(env="qa")


def test_run_options_from_flags_parse_numbers_given_as_text():
    options = RunOptions.from_flags(
        parallel=True, workers="8", deadline="1.5", connect_timeout="3", batch="25%",
        max_fail="1", verbose=True, accept_new_host_key=True, dry_run=True,
    )  # fmt: skip
    assert (options.workers, options.deadline, options.connect_timeout) == (8, 1.5, 3.0)
    assert isinstance(options.workers, int)
    assert (options.batch, options.max_fail) == ("25%", "1")
    assert options.parallel and options.verbose and options.accept_new_host_key
    assert options.dry_run
    unset = RunOptions.from_flags()
    assert (unset.workers, unset.deadline, unset.connect_timeout) == (None, None, None)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"workers": "4"}, "--workers applies only with --parallel"),
        ({"parallel": True, "workers": "four"}, "--workers takes a number, not 'four'"),
        ({"parallel": True, "workers": "2.5"}, "--workers takes a number, not '2.5'"),
        ({"parallel": True, "workers": "0"}, "--workers must be more than 0, not 0"),
        ({"deadline": "-5"}, "--deadline must be more than 0, not -5"),
        ({"deadline": "inf"}, "--deadline takes a finite number, not 'inf'"),
        ({"deadline": "nan"}, "--deadline takes a finite number, not 'nan'"),
        ({"connect_timeout": "soon"}, "--connect-timeout takes a number, not 'soon'"),
    ],
)
def test_a_wrong_flag_is_one_config_error_naming_it(flags, message):
    with pytest.raises(ConfigError) as caught:
        RunOptions.from_flags(**flags)
    assert str(caught.value) == message


def test_report_format():
    assert report_format("table") == "table" and report_format("json") == "json"
    with pytest.raises(ConfigError, match="--format must be table or json, not 'xml'"):
        report_format("xml")
