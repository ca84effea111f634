"""What `prune` removes, from data alone: unlisted records, duplicates, and the narrowing."""

import datetime as dt

import pytest

from octoboot.errors import ConfigError
from octoboot.prune import doomed_records, parse_age

NOW = dt.datetime(2026, 5, 1, 12, 0, tzinfo=dt.UTC)
QA, PROD = "Environments-1", "Environments-2"


def record(name, machine_id, thumbprint, environment=QA, health="Healthy", days_old=0.0):
    modified = NOW - dt.timedelta(days=days_old)
    return {
        "Id": machine_id,
        "Name": name,
        "EnvironmentIds": [environment],
        "Endpoint": {"Thumbprint": thumbprint},
        "HealthStatus": health,
        "LastModifiedOn": modified.isoformat(timespec="milliseconds"),
    }


def doomed(records, names=("web01",), kept=("web01",), **kw) -> dict[str, str]:
    found = doomed_records(records, environment_id=QA, names=names, kept=kept, now=NOW, **kw)
    return {d.record["Name"]: d.why for d in found}


def test_records_no_inventory_lists_go_and_listed_ones_stay():
    records = [
        record("web01", "Machines-1", "A" * 40),
        record("web02", "Machines-2", "B" * 40),  # gone from the inventory
        record("PROD01", "Machines-3", "C" * 40, environment=PROD),  # another environment
    ]
    assert doomed(records) == {"web02": "no inventory lists it"}
    # a record another inventory file lists is never touched, even in this environment
    assert doomed(records, names=("web01", "web02")) == {}
    # names compare as Octopus compares them
    assert doomed(records, names=("WEB01", " web02 ")) == {}


def test_a_duplicate_of_a_listed_machine_goes_and_the_listed_one_stays():
    records = [
        record("web01", "Machines-1", "A" * 40),
        record("web01-old", "Machines-4", "a" * 40, environment=PROD),  # same certificate
        record("db01", "Machines-5", "A" * 40),  # same certificate, but listed elsewhere
    ]
    found = doomed(records, names=("web01", "db01"))
    assert found == {"web01-old": "duplicate of web01 (Machines-1): the same certificate"}
    # a duplicate in the environment is named as a duplicate, not only as unlisted
    records[1]["EnvironmentIds"] = [QA]
    assert doomed(records, names=("web01", "db01"))["web01-old"].startswith("duplicate of")


def test_older_than_and_only_unavailable_narrow_it():
    records = [
        record("web01", "Machines-1", "A" * 40),
        record("old-down", "Machines-2", "B" * 40, health="Unavailable", days_old=10),
        record("old-up", "Machines-3", "C" * 40, days_old=10),
        record("new-down", "Machines-4", "D" * 40, health="Unavailable", days_old=0.5),
    ]
    assert set(doomed(records)) == {"old-down", "old-up", "new-down"}
    assert set(doomed(records, older_than=parse_age("7d"))) == {"old-down", "old-up"}
    assert set(doomed(records, only_unavailable=True)) == {"old-down", "new-down"}
    both = doomed(records, older_than=parse_age("7d"), only_unavailable=True)
    assert set(both) == {"old-down"}
    # a record whose age Octopus does not say is taken as young: kept
    del records[2]["LastModifiedOn"]
    assert set(doomed(records, older_than=1.0)) == {"old-down", "new-down"}


def test_limits_narrow_by_name():
    records = [
        record("web01", "Machines-1", "A" * 40),
        record("web09", "Machines-2", "B" * 40),
        record("api09", "Machines-3", "C" * 40),
        record("web01-old", "Machines-4", "A" * 40),
    ]
    assert set(doomed(records, limits=("web*",))) == {"web09", "web01-old"}
    assert set(doomed(records, limits=("api*",))) == {"api09"}


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("90s", 90), ("30m", 1800), ("12h", 43200), ("7d", 604800), ("2w", 1209600),
     ("1.5h", 5400), (" 7D ", 604800)],
)  # fmt: skip
def test_ages(text, seconds):
    assert parse_age(text) == seconds


@pytest.mark.parametrize("text", ["", "7 days", "-1d", "0", "d", "1y", "1d2h"])
def test_bad_ages_are_one_line(text):
    with pytest.raises(ConfigError, match="--older-than takes an age such as"):
        parse_age(text)


def test_workers_go_from_their_pools_as_targets_from_their_environment():
    def worker(name, worker_id, thumbprint, pools, **kw):
        found = record(name, worker_id, thumbprint, **kw)
        del found["EnvironmentIds"]
        return {**found, "WorkerPoolIds": pools}

    workers = [
        worker("build01", "Workers-1", "A" * 40, ["WorkerPools-1"]),
        worker("build02", "Workers-2", "B" * 40, ["WorkerPools-1", "WorkerPools-2"]),
        worker("build01-old", "Workers-3", "A" * 40, ["WorkerPools-2"], health="Unavailable"),
        worker("other", "Workers-4", "C" * 40, ["WorkerPools-2"]),  # another pool only
    ]
    found = doomed_records(
        workers,
        environment_id="WorkerPools-1",
        names=("build01",),
        kept=("build01",),
        now=NOW,
        field="WorkerPoolIds",
        collection="workers",
    )
    assert {d.record["Name"]: (d.why, d.collection) for d in found} == {
        "build02": ("no inventory lists it", "workers"),
        "build01-old": ("duplicate of build01 (Workers-1): the same certificate", "workers"),
    }
    only = doomed_records(workers, environment_id="WorkerPools-1", names=("build01",),
                          kept=("build01",), now=NOW, field="WorkerPoolIds",
                          only_unavailable=True)  # fmt: skip
    assert [d.record["Name"] for d in only] == ["build01-old"]
