"""The wanted record and drift, from data alone: what register, --dry-run and status share."""

from pathlib import Path

from octoboot.drift import (
    LISTENING,
    POLLING,
    PollingServer,
    RegistrationIds,
    WantedRecord,
    differences,
    duplicates_of,
    find_drift,
    listed,
    polling_server,
    unlisted,
    wanted_record,
)
from octoboot.inventory import (
    Environment,
    Inventory,
    Machine,
    OctopusOverride,
    PollingProxy,
    SshOptions,
    TentacleOptions,
)
from octoboot.tentacle import PollingProxySettings, Probe

HOST = "A" * 40
OTHER = "B" * 40
URI = "https://10.0.0.5:10933/"
POLICY = "MachinePolicies-1"
REGISTRATION = RegistrationIds(machine_policy_id=POLICY)


def machine(name="web01", environment="QA", **kw) -> Machine:
    values = dict(name=name, env_key=environment.lower(), environment=environment,
                  roles=("web",), address=name, public_hostname=None, ssh=SshOptions(),
                  tentacle=TentacleOptions(), octopus=None,
                  source_file=Path(f"machines/{environment.lower()}.toml"))  # fmt: skip
    return Machine(**{**values, **kw})


def wanted(**kw) -> WantedRecord:
    values = dict(environment_id="Environments-1", roles=("web",), communication_style=LISTENING,
                  uri=URI, thumbprint=HOST, registration=REGISTRATION)  # fmt: skip
    return WantedRecord(**{**values, **kw})


def probe(**kw) -> Probe:
    values = dict(installed=True, version="8.1.0", instance_exists=True, thumbprint=HOST,
                  service_enabled=True, service_active=True)  # fmt: skip
    return Probe(**{**values, **kw})


def record(**kw) -> dict:
    values = {
        "Id": "Machines-1",
        "Name": "web01",
        "EnvironmentIds": ["Environments-1"],
        "Roles": ["web"],
        "MachinePolicyId": POLICY,
        "Endpoint": {"CommunicationStyle": LISTENING, "Uri": URI, "Thumbprint": HOST},
        "HealthStatus": "Healthy",
    }
    return {**values, **kw}


def endpoint(**kw) -> dict:
    return {"CommunicationStyle": LISTENING, "Uri": URI, "Thumbprint": HOST, **kw}


def drift(want=None, **kw) -> list[str]:
    values = dict(probe=probe(), store_thumbprint=HOST, record=record(), health="Healthy")
    return [str(d) for d in find_drift(want or wanted(), **{**values, **kw})]


# --- the wanted record ----------------------------------------------------------------------


def test_the_wanted_record_comes_from_the_inventory_and_the_ssh_address():
    want = wanted_record(
        machine(roles=("web", "api"), tentacle=TentacleOptions(port=10934)),
        environment_id="Environments-1",
        ssh_host="Web01.Example.COM",
        thumbprint=HOST,
        registration=REGISTRATION,
    )
    assert want == WantedRecord(
        environment_id="Environments-1",
        roles=("api", "web"),
        communication_style="TentaclePassive",
        uri="https://web01.example.com:10934/",
        thumbprint=HOST,
        registration=REGISTRATION,
    )
    # public_hostname: how Octopus reaches the machine, when SSH reaches it another way
    public = wanted_record(machine(public_hostname="web01.dmz"), environment_id="Environments-1",
                           ssh_host="10.0.0.5", thumbprint=HOST,
                           registration=REGISTRATION)  # fmt: skip
    assert public.uri == "https://web01.dmz:10933/"


def test_the_record_octoboot_creates_and_the_one_it_puts_back():
    assert wanted().new("web01") == {
        "Name": "web01",
        "EnvironmentIds": ["Environments-1"],
        "Roles": ["web"],
        "MachinePolicyId": POLICY,
        "TenantIds": [],
        "TenantTags": [],
        "TenantedDeploymentParticipation": "Untenanted",
        "Endpoint": {
            "CommunicationStyle": LISTENING,
            "Uri": URI,
            "Thumbprint": HOST,
            "ProxyId": None,
        },
        "IsDisabled": False,
    }
    current = record(
        Roles=["db"],
        Slug="web01",
        Endpoint={**endpoint(Uri="https://old:10933/"), "TentacleVersion": {"Current": "8"}},
    )
    updated = wanted().applied_to(current)
    # the same record (Id, fields octoboot does not manage) with the wanted fields
    assert updated == {
        **current,
        "Roles": ["web"],
        "TenantIds": [],
        "TenantTags": [],
        "TenantedDeploymentParticipation": "Untenanted",
        "Endpoint": {**current["Endpoint"], "Uri": URI, "ProxyId": None},
    }
    assert differences(wanted(), updated) == []
    assert current["Roles"] == ["db"]  # not changed in place


# --- differences: what register updates and status calls drift -----------------------------


def test_a_record_as_wanted_has_no_differences():
    assert differences(wanted(), record()) == []
    # roles without case or order, addresses without case, thumbprints without case
    assert (
        differences(
            wanted(roles=("API", "web")),
            record(
                Roles=["web", "api"], Endpoint=endpoint(Uri=URI.upper(), Thumbprint=HOST.lower())
            ),
        )
        == []
    )


def test_a_port_that_differs_from_the_inventory_is_a_difference():
    moved = record(Endpoint=endpoint(Uri="https://10.0.0.5:10999/"))
    found = differences(wanted(), moved)
    assert [d.what for d in found] == ["address"]
    assert str(found[0]) == f"address (Octopus https://10.0.0.5:10999/, inventory {URI})"
    # and status calls it drift: the disagreement this module exists to end
    assert drift(record=moved) == [str(found[0])]


def test_each_field_that_differs_is_named():
    assert [str(d) for d in differences(wanted(), record(EnvironmentIds=["Environments-2"]))] == [
        "environment (Octopus Environments-2, inventory Environments-1)"
    ]
    assert [str(d) for d in differences(wanted(), record(Roles=[]))] == [
        "roles (Octopus none, inventory web)"
    ]
    polling = record(Endpoint=endpoint(CommunicationStyle="TentacleActive"))
    assert [str(d) for d in differences(wanted(), polling)] == [
        "communication style (Octopus TentacleActive, inventory TentaclePassive)"
    ]
    assert [str(d) for d in differences(wanted(), record(Endpoint=endpoint(Thumbprint=OTHER)))] == [
        f"Octopus thumbprint (Octopus {OTHER}, expected {HOST})"
    ]
    assert [str(d) for d in differences(wanted(), record(MachinePolicyId="MachinePolicies-2"))] == [
        "machine policy (Octopus MachinePolicies-2, inventory MachinePolicies-1)"
    ]
    assert differences(wanted(), record(MachinePolicyId="machinepolicies-1")) == []
    everything = record(EnvironmentIds=[], Roles=["db"], MachinePolicyId=None, Endpoint={})
    assert [d.what for d in differences(wanted(), everything)] == [
        "environment", "roles", "machine policy", "communication style", "address",
        "Octopus thumbprint",
    ]  # fmt: skip


def test_tenants_tags_and_participation_are_compared_as_sets_without_case():
    tenanted = wanted(
        registration=RegistrationIds(
            POLICY, ("Tenants-1", "Tenants-2"), ("Region/EU",), "TenantedOrUntenanted"
        )
    )
    same = record(TenantIds=["tenants-2", "Tenants-1"], TenantTags=["region/eu"],
                  TenantedDeploymentParticipation="TenantedOrUntenanted")  # fmt: skip
    assert differences(tenanted, same) == []
    assert [str(d) for d in differences(tenanted, record())] == [
        "tenants (Octopus none, inventory Tenants-1 Tenants-2)",
        "tenant tags (Octopus none, inventory Region/EU)",
        "tenanted (Octopus Untenanted, inventory TenantedOrUntenanted)",
    ]
    # a record that does not say how it takes part is Tenanted when it has tenants or tags
    assert [str(d) for d in differences(wanted(), record(TenantTags=["Region/EU"]))] == [
        "tenant tags (Octopus Region/EU, inventory none)",
        "tenanted (Octopus Tenanted, inventory Untenanted)",
    ]


def test_a_listening_endpoints_proxy():
    through = wanted(registration=RegistrationIds(POLICY, proxy_id="Proxies-1"))
    assert differences(through, record(Endpoint=endpoint(ProxyId="proxies-1"))) == []
    assert [str(d) for d in differences(through, record())] == [
        "proxy (Octopus none, inventory Proxies-1)"
    ]
    # none wanted: null and a missing ProxyId are both "direct"
    assert differences(wanted(), record(Endpoint=endpoint(ProxyId=None))) == []
    assert [
        str(d) for d in differences(wanted(), record(Endpoint=endpoint(ProxyId="Proxies-2")))
    ] == ["proxy (Octopus Proxies-2, inventory none)"]


def test_thumbprints_a_dry_run_would_mint_or_nobody_has():
    # "": a dry run's identity, not minted yet, differs from any registered one
    assert [str(d) for d in differences(wanted(thumbprint=""), record())] == [
        f"Octopus thumbprint (Octopus {HOST}, expected a new identity)"
    ]
    # None: neither the store nor the host has one, so there is nothing to compare
    assert differences(wanted(thumbprint=None), record(Endpoint=endpoint(Thumbprint=OTHER))) == []


# --- drift: the host, the store, the record, health ----------------------------------------


def test_a_machine_in_the_wanted_state_has_no_drift():
    assert drift() == []


def test_host_side_drift():
    assert drift(probe=Probe(installed=False)) == ["not installed"]
    assert drift(probe=probe(service_active=False)) == ["service not active"]
    assert drift(probe=probe(thumbprint=None, instance_exists=False)) == ["no host certificate"]
    unreadable = "There is an error in XML document (0, 0)."
    damaged = probe(thumbprint=None, instance_exists=False, configuration_error=unreadable)
    assert drift(probe=damaged) == [f"configuration damaged ({unreadable})"]
    assert drift(probe=probe(thumbprint=OTHER)) == [f"host thumbprint (host {OTHER}, store {HOST})"]
    assert drift(probe=probe(problems=("unreadable show-configuration output",))) == [
        "probe (unreadable show-configuration output)"
    ]


def test_an_unreached_host_is_judged_on_the_store_and_octopus_only():
    assert drift(probe=None) == []
    assert drift(probe=None, record=record(Roles=["db"])) == ["roles (Octopus db, inventory web)"]


def test_octopus_side_drift():
    assert drift(record=None) == ["missing from Octopus"]
    assert drift(record=None, thumbprint_registered_as=["old01 (Machines-7)"]) == [
        "missing from Octopus (its thumbprint is registered as old01 (Machines-7))"
    ]
    assert drift(record=record(Endpoint=endpoint(Thumbprint=OTHER.lower()))) == [
        f"Octopus thumbprint (Octopus {OTHER}, expected {HOST})"
    ]
    assert drift(record=record(EnvironmentIds=["Environments-1", "Environments-2"])) == [
        "environment (Octopus Environments-1 Environments-2, inventory Environments-1)"
    ]
    assert drift(health="Unavailable") == ["health (Unavailable)"]
    assert drift(record=record(HealthStatus=None), health=None) == ["health (Unknown)"]


def test_one_certificate_under_several_names_is_drift():
    mine = record()
    others = [
        record(Name="web01-old", Id="Machines-7", Endpoint=endpoint(Thumbprint=HOST.lower())),
        record(Name="WEB01", Id="Machines-1"),  # itself, by name
        record(Name="db01", Id="Machines-8", Endpoint=endpoint(Thumbprint=OTHER)),
        record(Name="clone", Id="Machines-9"),
    ]
    assert [m["Id"] for m in duplicates_of(mine, others)] == ["Machines-9", "Machines-7"]
    # a record without a certificate has no duplicates
    assert duplicates_of(record(Endpoint={}), [record(Name="x", Endpoint={})]) == []
    assert drift(duplicates=["web01-old (Machines-7)"]) == [
        "duplicate records (its thumbprint is also registered as web01-old (Machines-7))"
    ]


def test_without_a_stored_identity_octopus_is_compared_with_the_host():
    # status builds the wanted record with the host's thumbprint then
    assert drift(store_thumbprint=None) == ["no stored identity"]
    assert drift(store_thumbprint=None, record=record(Endpoint=endpoint(Thumbprint=OTHER))) == [
        "no stored identity",
        f"Octopus thumbprint (Octopus {OTHER}, expected {HOST})",
    ]


# --- machines no inventory lists ------------------------------------------------------------


def test_unlisted_keeps_the_environments_machines_no_inventory_names():
    records = [
        record(Name="web02", Id="Machines-2"),
        record(Name="Web01"),
        record(Name="rogue", Id="Machines-3"),
        record(Name="db01", Id="Machines-4", EnvironmentIds=["Environments-2"]),
    ]
    found = unlisted(records, "Environments-1", ["web01"])
    assert [r["Name"] for r in found] == ["rogue", "web02"]
    assert [r["Name"] for r in unlisted(records, "Environments-1", ["web01"], ["web*"])] == [
        "web02"
    ]


def test_a_machine_any_file_lists_is_listed():
    def environment(key, name, *machines):
        return Environment(key, name, Path(f"machines/{key}.toml"), tuple(machines))

    inventory = Inventory(
        Path("machines"),
        {
            "qa": environment("qa", "QA", machine("web01")),
            "qa-db": environment("qa-db", " qa ", machine("db01", environment=" qa ")),
            "prod": environment("prod", "Production", machine("web09", environment="Production")),
        },
    )
    # web09 registered in QA by mistake is prod's machine, not a stray of QA's
    assert listed(inventory) == ["web01", "db01", "web09"]


# --- polling and workers -------------------------------------------------------------------

SUBSCRIPTION = "poll://abcdefghij0123456789/"
SERVER = PollingServer("octopus.example", 10943)


def polling_wanted(**kw) -> WantedRecord:
    return wanted(**{"communication_style": POLLING, "uri": SUBSCRIPTION, **kw})


def polling_probe(**kw) -> Probe:
    values = {"no_listen": True, "polling_address": SERVER.address, "subscription": SUBSCRIPTION}
    return probe(**{**values, **kw})


def polling_record(uri=SUBSCRIPTION, **kw) -> dict:
    return record(Endpoint=endpoint(CommunicationStyle=POLLING, Uri=uri), **kw)


def test_the_polling_server_is_octopus_host_or_the_comms_address():
    assert polling_server("https://Octopus.Example/", None) == PollingServer(
        "octopus.example", 10943
    )
    assert polling_server("http://o:8080", OctopusOverride(polling_port=10944)).port == 10944
    lb = OctopusOverride(server_comms_address="https://lb.example:4443")
    assert polling_server("http://o", lb) == PollingServer("lb.example", 4443)
    no_port = OctopusOverride(server_comms_address="https://lb")
    assert polling_server("http://o", no_port).port == 443
    # as the Tentacle writes it down: .NET's Uri, lower-case, no :443
    assert PollingServer("LB.example", 443).address == "https://lb.example/"
    assert SERVER.address == "https://octopus.example:10943/"


def test_a_polling_record_carries_the_hosts_subscription():
    want = wanted_record(
        machine(communication="polling"),
        environment_id="Environments-1",
        ssh_host="10.0.0.5",
        thumbprint=HOST,
        registration=REGISTRATION,
        subscription=SUBSCRIPTION,
    )
    assert (want.communication_style, want.uri) == (POLLING, SUBSCRIPTION)
    assert want.new("web01")["Endpoint"] == {
        "CommunicationStyle": "TentacleActive", "Uri": SUBSCRIPTION, "Thumbprint": HOST,
    }  # fmt: skip
    assert differences(want, polling_record()) == []


def test_a_rebuilt_polling_host_has_a_new_subscription_to_write_in_place():
    found = differences(polling_wanted(uri="poll://newnewnewnewnewnew01/"), polling_record())
    assert [str(d) for d in found] == [
        f"subscription (Octopus {SUBSCRIPTION}, host poll://newnewnewnewnewnew01/)"
    ]
    # a dry run before server-comms: the host has none yet, so it will differ
    assert [str(d) for d in differences(polling_wanted(uri=""), polling_record())] == [
        f"subscription (Octopus {SUBSCRIPTION}, host a new one)"
    ]
    # the host not looked at: nothing to compare the record's id with
    assert differences(polling_wanted(uri=None), polling_record()) == []


def test_switching_styles_is_a_difference_in_both_directions():
    assert [d.what for d in differences(polling_wanted(), record())] == [
        "communication style", "subscription",
    ]  # fmt: skip
    assert [d.what for d in differences(wanted(), polling_record())] == [
        "communication style", "address",
    ]  # fmt: skip


def test_status_sees_the_subscription_and_the_hosts_communication():
    def polled(**kw):
        values = dict(probe=polling_probe(), record=polling_record(), polling=SERVER)
        return drift(polling_wanted(), **{**values, **kw})

    assert polled() == []
    other = "poll://zzzzzzzzzzzzzzzzzzzz/"
    assert drift(polling_wanted(uri=other), probe=polling_probe(subscription=other),
                 record=polling_record(), polling=SERVER) == [
        f"subscription (Octopus {SUBSCRIPTION}, host {other})"
    ]  # fmt: skip
    assert polled(probe=polling_probe(subscription=None)) == ["no polling subscription on the host"]
    assert polled(probe=probe()) == [
        f"host communication (host listening, inventory polls {SERVER.address})"
    ]
    assert drift(probe=polling_probe()) == [
        f"host communication (host polls {SERVER.address}, inventory listening)"
    ]


def test_status_sees_a_polling_proxy_that_is_not_the_inventorys():
    through = PollingProxySettings("proxy.corp", 3128, "", use_default=False)
    polled = dict(record=polling_record(), polling=SERVER)
    assert drift(polling_wanted(), probe=polling_probe(polling_proxy=through), **polled,
                 polling_proxy=PollingProxy("proxy.corp", 3128)) == []  # fmt: skip
    assert drift(polling_wanted(), probe=polling_probe(polling_proxy=through), **polled,
                 polling_proxy=PollingProxy("other.corp", 3128)) == [
        "polling proxy (host proxy.corp:3128, inventory other.corp:3128)"
    ]  # fmt: skip
    assert drift(polling_wanted(), probe=polling_probe(polling_proxy=through), **polled) == [
        "polling proxy (host proxy.corp:3128, inventory none)"
    ]
    # A listening Tentacle polls nothing: its polling-proxy settings are not compared.
    assert drift(probe=probe(polling_proxy=through)) == []


def test_a_worker_record_has_pools_and_no_environment_or_roles():
    worker = machine(name="build01", kind="worker", roles=(), worker_pools=("Linux",))
    want = wanted_record(worker, environment_id=None, ssh_host="10.0.0.9", thumbprint=HOST,
                         registration=REGISTRATION,
                         worker_pool_ids=["WorkerPools-2", "WorkerPools-1"])  # fmt: skip
    assert want.new("build01") == {
        "Name": "build01",
        "WorkerPoolIds": ["WorkerPools-1", "WorkerPools-2"],
        "MachinePolicyId": POLICY,
        "Endpoint": {"CommunicationStyle": LISTENING, "Uri": "https://10.0.0.9:10933/",
                     "Thumbprint": HOST, "ProxyId": None},
        "IsDisabled": False,
    }  # fmt: skip
    current = {"Id": "Workers-1", "Name": "build01", "WorkerPoolIds": ["WorkerPools-1"],
               "MachinePolicyId": POLICY, "Endpoint": want.fields()["Endpoint"]}  # fmt: skip
    assert [str(d) for d in differences(want, current)] == [
        "worker pools (Octopus WorkerPools-1, inventory WorkerPools-1 WorkerPools-2)"
    ]
    assert differences(want, want.applied_to(current)) == []


def test_unlisted_workers_are_found_by_pool():
    records = [{"Name": "b1", "WorkerPoolIds": ["WorkerPools-1"]},
               {"Name": "b2", "WorkerPoolIds": ["WorkerPools-1"]},
               {"Name": "b3", "WorkerPoolIds": ["WorkerPools-2"]}]  # fmt: skip
    found = unlisted(records, "WorkerPools-1", ["B1"], field="WorkerPoolIds")
    assert [r["Name"] for r in found] == ["b2"]


def test_workers_are_listed_as_targets_are():
    file = Environment("qa", "QA", Path("machines/qa.toml"), (
        machine("web01"),
        machine("build01", kind="worker", roles=(), worker_pools=("Linux",)),
    ))  # fmt: skip
    inventory = Inventory(Path("machines"), {"qa": file})
    assert listed(inventory) == ["web01", "build01"]
