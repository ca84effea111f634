"""Registration names from the inventory to Octopus Ids, from data alone."""

from collections import Counter

import pytest

from octoboot.drift import RegistrationIds
from octoboot.errors import ConfigError
from octoboot.inventory import PollingProxy, Registration, load_environment
from octoboot.registration import Catalog, resolve, resolve_all

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
PROXIES = ({"Id": "Proxies-1", "Name": "DMZ proxy"},)
CATALOG = Catalog(machine_policies=POLICIES, tenants=TENANTS, tag_sets=TAG_SETS, proxies=PROXIES)


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
    assert ids(tenants=("acme-corp",)).tenant_ids == ("Tenants-1",)  # by a slug that is no name
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


def test_a_listening_machines_proxy_by_name_or_id():
    assert ids().proxy_id is None
    assert ids(proxy="dmz PROXY").proxy_id == "Proxies-1"
    assert ids(proxy="Proxies-1").proxy_id == "Proxies-1"
    assert missing(proxy="Squid") == ['no proxy "Squid"']


class CatalogOctopus:
    """An Octopus as resolve_all asks it: its catalog, each list's reads counted."""

    url = "https://octopus.example.com"

    def __init__(self) -> None:
        self.reads: Counter[str] = Counter()

    def catalog(self, route: str) -> list[dict]:
        self.reads[route] += 1
        lists = {"machinepolicies": POLICIES, "tenants": TENANTS, "tagsets": TAG_SETS,
                 "proxies": PROXIES}  # fmt: skip
        return list(lists[route])


def test_every_missing_name_of_a_run_is_named_once_in_one_line(tmp_path):
    path = tmp_path / "qa.toml"
    path.write_text(
        'roles = ["web"]\nmachine_policy = "Windows pets"\n'
        '[[machines]]\nname = "web01"\ntenants = ["Initech"]\n'
        '[[machines]]\nname = "web02"\ntenants = ["Initech", "Acme Corp"]\n'
        '[[machines]]\nname = "web03"\nmachine_policy = "Linux cattle"\nproxy = "Squid"\n'
    )
    machines = load_environment(path).machines
    octopus = CatalogOctopus()
    with pytest.raises(ConfigError) as caught:
        resolve_all(machines, clients={"qa": octopus})  # type: ignore[dict-item]
    assert str(caught.value) == (
        f'{path}: Octopus at {octopus.url} has no machine policy "Windows pets"; '
        f'{path}: Octopus at {octopus.url} has no tenant "Initech"; '
        f'{path}: Octopus at {octopus.url} has no proxy "Squid": '
        "create what is missing in Octopus, or fix the inventory"
    )
    # each list read once for the run, whatever number of machines name something in it
    assert octopus.reads == {"machinepolicies": 1, "tenants": 1, "proxies": 1}


def test_a_files_polling_proxy_is_each_machines(tmp_path):
    path = tmp_path / "qa.toml"
    path.write_text('roles = ["web"]\ncommunication = "polling"\n[polling_proxy]\n'
                    'host = "proxy.corp"\nport = 3128\n[[machines]]\nname = "web01"\n')  # fmt: skip
    (machine,) = load_environment(path).machines
    assert machine.registration.polling_proxy == PollingProxy("proxy.corp", 3128)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            '[polling_proxy]\nhost = "proxy.corp"\nport = 3128\n',
            "polling_proxy is the proxy a polling Tentacle reaches Octopus through; this machine "
            "listens, so Octopus reaches it, through the Octopus proxy that `proxy` names if any",
        ),
        (
            'proxy = "DMZ proxy"\ncommunication = "polling"\n',
            "proxy is the Octopus-side proxy Octopus reaches a listening Tentacle through; this "
            "machine polls, so it reaches Octopus itself, through the proxy that "
            "`polling_proxy` names if any",
        ),
    ],
    ids=["polling_proxy on a listening machine", "proxy on a polling machine"],
)
def test_the_other_styles_proxy_is_refused_before_octopus_is_asked(tmp_path, settings, message):
    path = tmp_path / "qa.toml"
    path.write_text(f'roles = ["web"]\n{settings}[[machines]]\nname = "web01"\n')
    (machine,) = load_environment(path).machines
    with pytest.raises(ConfigError) as caught:
        resolve_all([machine], clients={})  # no Octopus to ask: refused first
    assert str(caught.value) == f"{path}: machine 'web01': {message}"


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('host = "proxy.corp"\npassword = "hunter2"',
         "polling_proxy: password: refused: the Tentacle takes a proxy password only on its "
         "command line (polling-proxy --proxyPassword), where any user of the host can read it"),
        ("port = 3128", 'polling_proxy: missing host = "..."'),
        ('host = "proxy$(id)"', "polling_proxy: host: 'proxy$(id)' is not a host name"),
        ('host = "p"\nprot = 1', "polling_proxy: unknown key 'prot' (did you mean 'port'?)"),
    ],
)  # fmt: skip
def test_polling_proxy_keys_are_checked_and_a_password_refused(tmp_path, table, message):
    path = tmp_path / "qa.toml"
    path.write_text(f'roles = ["web"]\n[polling_proxy]\n{table}\n[[machines]]\nname = "w"\n')
    with pytest.raises(ConfigError) as caught:
        load_environment(path)
    assert str(caught.value).startswith(f"{path}: {message}")
    assert "hunter2" not in str(caught.value)


def test_only_the_lists_a_run_needs_are_read():
    assert Catalog.routes([Registration()]) == {"machinepolicies"}
    assert Catalog.routes([Registration(), Registration(tenants=("Acme",))]) == {
        "machinepolicies", "tenants",
    }  # fmt: skip
    assert Catalog.routes([Registration(tenant_tags=("Region/EU",))]) == {
        "machinepolicies", "tagsets",
    }  # fmt: skip
    assert Catalog.routes([Registration(proxy="DMZ")]) == {"machinepolicies", "proxies"}


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
