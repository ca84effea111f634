"""Registration names from the inventory to Octopus Ids, from data alone."""

import pytest

from octoboot.drift import RegistrationIds
from octoboot.errors import ConfigError
from octoboot.inventory import Registration, load_environment
from octoboot.registration import Catalog, resolve

POLICIES = (
    {"Id": "MachinePolicies-1", "Name": "Default Machine Policy", "IsDefault": True},
    {"Id": "MachinePolicies-2", "Name": "Linux cattle", "IsDefault": False},
)
CATALOG = Catalog(machine_policies=POLICIES)


def ids(**names) -> RegistrationIds:
    found, missing = resolve(Registration(**names), CATALOG)
    assert missing == [] and found is not None
    return found


def missing(**names) -> list[str]:
    found, gaps = resolve(Registration(**names), CATALOG)
    assert found is None
    return [str(gap) for gap in gaps]


def test_the_machine_policy_by_name_or_id_and_the_default_when_none_is_named():
    assert ids().machine_policy_id == "MachinePolicies-1"
    assert ids(machine_policy="Linux cattle").machine_policy_id == "MachinePolicies-2"
    assert ids(machine_policy=" linux CATTLE ").machine_policy_id == "MachinePolicies-2"
    assert ids(machine_policy="machinepolicies-2").machine_policy_id == "MachinePolicies-2"
    assert missing(machine_policy="Windows pets") == ['no machine policy "Windows pets"']


def test_the_inventory_names_them_for_the_file_and_a_machine_overrides(tmp_path):
    path = tmp_path / "qa.toml"
    path.write_text(
        'roles = ["web"]\nmachine_policy = "Linux cattle"\n'
        '[[machines]]\nname = "web01"\n'
        '[[machines]]\nname = "web02"\nmachine_policy = "Linux pets"\n'
    )
    web01, web02 = load_environment(path).machines
    assert web01.registration == Registration(machine_policy="Linux cattle")
    assert web02.registration == Registration(machine_policy="Linux pets")
    path.write_text('roles = ["web"]\n[[machines]]\nname = "web01"\nmachine_policy = ""\n')
    with pytest.raises(ConfigError, match="machine 'web01': machine_policy: must not be empty"):
        load_environment(path)
