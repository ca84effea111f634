"""The Octopus stand-in's catalog over real HTTP: machine policies, tenants, tag sets and
proxies with their shapes, paging and errors, and machines' references to them checked."""

from __future__ import annotations

import httpx

from tests.sandbox import test_octopus_api as api
from tests.sandbox.test_octopus_api import assert_error_body, machine_body

# The stand-in and an HTTP client for it, as the API tests make them.
state_dir, standin, client = api.state_dir, api.standin, api.client
S = "/api/Spaces-1"


def post(client: httpx.Client, route: str, body: dict) -> dict:
    response = client.post(f"{S}/{route}", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def test_the_default_machine_policy_and_new_ones(client: httpx.Client) -> None:
    (default,) = client.get(f"{S}/machinepolicies/all").json()
    assert (default["Id"], default["Name"], default["IsDefault"]) == (
        "MachinePolicies-1", "Default Machine Policy", True,
    )  # fmt: skip
    assert default["MachineCleanupPolicy"] == {
        "DeleteMachinesBehavior": "DoNotDelete",
        "DeleteMachinesElapsedTimeSpan": "1.00:00:00",
    }
    assert default["Links"]["Self"] == f"{S}/machinepolicies/MachinePolicies-1"
    cleanup = {"DeleteMachinesBehavior": "DeleteUnavailableMachines",
               "DeleteMachinesElapsedTimeSpan": "00:20:00"}  # fmt: skip
    cattle = post(
        client, "machinepolicies", {"Name": "Linux cattle", "MachineCleanupPolicy": cleanup}
    )
    assert (cattle["Id"], cattle["IsDefault"], cattle["MachineCleanupPolicy"]) == (
        "MachinePolicies-2", False, cleanup,
    )  # fmt: skip
    assert client.get(f"{S}/machinepolicies/{cattle['Id']}").json()["Name"] == "Linux cattle"
    page = client.get(f"{S}/machinepolicies", params={"take": 1}).json()
    assert (page["ItemType"], page["TotalResults"], len(page["Items"])) == ("MachinePolicy", 2, 1)
    assert page["Items"][0]["Name"] == "Default Machine Policy"  # by name
    assert "Page.Next" in page["Links"]
    taken = client.post(f"{S}/machinepolicies", json={"Name": "LINUX CATTLE"})
    body = assert_error_body(taken, 400)
    assert "already exists" in body["ErrorMessage"]
    assert_error_body(client.get(f"{S}/machinepolicies/MachinePolicies-9"), 404)
    root = client.get("/api").json()["Links"]
    assert {"MachinePolicies", "Tenants", "TagSets", "Proxies"} <= set(root)


def test_tag_sets_and_tenants(client: httpx.Client) -> None:
    tag_set = post(client, "tagsets", {"Name": "Region", "Tags": [{"Name": "EU"}, {"Name": "US"}]})
    assert [t["CanonicalTagName"] for t in tag_set["Tags"]] == ["Region/EU", "Region/US"]
    assert (tag_set["Scopes"], tag_set["Type"]) == (["Tenant"], "MultiSelect")
    post(client, "tagsets", {"Name": "Team", "Scopes": ["Project"], "Tags": [{"Name": "Ops"}]})
    acme = post(client, "tenants", {"Name": "Acme Corp", "TenantTags": ["region/eu"]})
    assert (acme["Id"], acme["Slug"]) == ("Tenants-1", "acme-corp")
    assert acme["TenantTags"] == ["Region/EU"]
    refused = client.post(f"{S}/tenants", json={"Name": "X", "TenantTags": ["Team/Ops"]})
    body = assert_error_body(refused, 400)
    assert body["ErrorMessage"] == (
        "The tag 'Team/Ops' does not exist in any tag set that applies to tenants."
    )
    assert [t["Name"] for t in client.get(f"{S}/tenants/all").json()] == ["Acme Corp"]
    found = client.get(f"{S}/tenants", params={"partialName": "acme"}).json()
    assert (found["ItemType"], [t["Id"] for t in found["Items"]]) == ("Tenant", ["Tenants-1"])


def test_proxies_keep_their_password_to_themselves(client: httpx.Client) -> None:
    body = {"Name": "DMZ proxy", "Host": "proxy.dmz", "Port": 3128, "Username": "oct",
            "Password": {"NewValue": "s3cret"}}  # fmt: skip
    proxy = post(client, "proxies", body)
    assert proxy["Password"] == {"HasValue": True, "NewValue": None, "Hint": None}
    assert (proxy["Id"], proxy["ProxyType"], proxy["Port"]) == ("Proxies-1", "HTTP", 3128)
    assert "s3cret" not in client.get(f"{S}/proxies/all").text
    for bad in ({"Name": "p", "Host": "h", "Port": 70000}, {"Name": "p", "Host": "", "Port": 1},
                {"Name": "p", "Host": "h", "Port": 1, "ProxyType": "SOCKS5"}):  # fmt: skip
        assert_error_body(client.post(f"{S}/proxies", json=bad), 400)


def test_a_machines_references_are_checked(client: httpx.Client) -> None:
    post(client, "tagsets", {"Name": "Region", "Tags": [{"Name": "EU"}]})
    tenant = post(client, "tenants", {"Name": "Acme"})
    proxy = post(client, "proxies", {"Name": "DMZ", "Host": "proxy.dmz", "Port": 3128})

    def create(**fields):
        return client.post(f"{S}/machines", json=machine_body("web01", **fields))

    unknown_proxy = {**machine_body("web01")["Endpoint"], "ProxyId": "Proxies-9"}
    for fields, error in [
        ({"MachinePolicyId": "MachinePolicies-9"},
         "The machine policy 'MachinePolicies-9' does not exist."),
        ({"TenantIds": ["Tenants-9"]}, "The tenant 'Tenants-9' does not exist."),
        ({"TenantTags": ["Region/US"]},
         "The tag 'Region/US' does not exist in any tag set that applies to tenants."),
        ({"Endpoint": unknown_proxy}, "The proxy 'Proxies-9' does not exist."),
    ]:  # fmt: skip
        assert assert_error_body(create(**fields), 400)["ErrorMessage"] == error
    # a null list: terraform-provider-octopusdeploy#162
    crashed = assert_error_body(create(TenantIds=None), 500)
    assert "Value cannot be null" in crashed["ErrorMessage"]
    assert client.get(f"{S}/machines/all").json() == []

    endpoint = {**machine_body("web01")["Endpoint"], "ProxyId": proxy["Id"]}
    made = create(TenantIds=[tenant["Id"]], TenantTags=["Region/EU"], Endpoint=endpoint,
                  TenantedDeploymentParticipation="Tenanted")  # fmt: skip
    assert made.status_code == 201, made.text
    machine = made.json()
    assert machine["MachinePolicyId"] == "MachinePolicies-1"  # none named: the default
    assert (machine["TenantIds"], machine["TenantTags"]) == ([tenant["Id"]], ["Region/EU"])
    assert machine["TenantedDeploymentParticipation"] == "Tenanted"
    assert machine["Endpoint"]["ProxyId"] == proxy["Id"]
