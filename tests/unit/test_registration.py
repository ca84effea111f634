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
TENANTS = (
    {"Id": "Tenants-1", "Name": "Acme Corp", "Slug": "acme-corp"},
    {"Id": "Tenants-2", "Name": "Globex", "Slug": "globex"},
)
TAG_SETS = (
    {"Name": "Region", "Scopes": ["Tenant"],
     "Tags": [{"CanonicalTagName": "Region/EU"}, {"CanonicalTagName": "Region/US"}]},
    {"Name": "Team", "Scopes": ["Project"], "Tags": [{"CanonicalTagName": "Team/Ops"}]},
    {"Name": "Tier", "Tags": [{"CanonicalTagName": "Tier/Gold"}]},  # from before scopes
)  # fmt: skip
CATALOG = Catalog(machine_policies=POLICIES, tenants=TENANTS, tag_sets=TAG_SETS)


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


def test_tenants_by_name_slug_or_id_and_tags_by_canonical_name():
    found = ids(
        tenants=("Acme Corp", "globex", "TENANTS-1"), tenant_tags=("region/eu", "Tier/Gold")
    )
    assert (found.tenant_ids, found.tenant_tags) == (
        ("Tenants-1", "Tenants-2"), ("Region/EU", "Tier/Gold"),
    )  # fmt: skip
    assert found.tenanted == "Tenanted"  # tenants or tags, and nothing said: Tenanted
    assert ids().tenanted == "Untenanted" and ids().tenant_ids == ()
    either = ids(tenants=("Acme Corp",), tenanted="TenantedOrUntenanted")
    assert either.tenanted == "TenantedOrUntenanted"
    assert ids(tenanted="Tenanted").tenanted == "Tenanted"
    assert missing(tenants=("Initech",), tenant_tags=("Team/Ops", "Region/Mars")) == [
        'no tenant "Initech"',
        'no tenant tag "Team/Ops"',  # Team applies to projects, not tenants
        'no tenant tag "Region/Mars"',
    ]


def test_only_the_lists_a_run_needs_are_read():
    assert Catalog.routes([Registration()]) == {"machinepolicies"}
    assert Catalog.routes([Registration(), Registration(tenants=("Acme",))]) == {
        "machinepolicies", "tenants",
    }  # fmt: skip
    assert Catalog.routes([Registration(tenant_tags=("Region/EU",))]) == {
        "machinepolicies", "tagsets",
    }  # fmt: skip


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


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('tenants = ["Acme", ""]', "tenants: must not be empty"),
        ('tenants = "Acme"', "tenants: expected a list of strings, got a string"),
        ('tenant_tags = ["EU"]',
         "tenant_tags: 'EU' is not a tag's canonical name: write the tag set's name, '/' and "
         'the tag\'s name, e.g. "Region/EU"'),
        ('tenant_tags = ["Region/"]', "'Region/' is not a tag's canonical name"),
        ('tenanted = "Sometimes"',
         "tenanted: must be one of Untenanted, TenantedOrUntenanted, Tenanted, not 'Sometimes'"),
        ('tenanted = "untenanted"\ntenants = ["Acme"]',
         'tenanted = "Untenanted" with tenants or tenant_tags: an untenanted machine takes no '
         "tenants"),
    ],
)  # fmt: skip
def test_tenant_keys_are_checked(tmp_path, text, message):
    path = tmp_path / "qa.toml"
    path.write_text(f'roles = ["web"]\n{text}\n[[machines]]\nname = "web01"\n')
    with pytest.raises(ConfigError) as caught:
        load_environment(path)
    assert message in str(caught.value) and str(caught.value).startswith(f"{path}: ")


def test_tenanted_is_spelt_as_octopus_spells_it(tmp_path):
    path = tmp_path / "qa.toml"
    path.write_text('roles = ["web"]\ntenanted = "tenantedoruntenanted"\n'
                    '[[machines]]\nname = "web01"\ntenants = ["Acme", "Acme"]\n')  # fmt: skip
    (machine,) = load_environment(path).machines
    assert machine.registration == Registration(tenants=("Acme",), tenanted="TenantedOrUntenanted")
