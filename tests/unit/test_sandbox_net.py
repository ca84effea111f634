"""The sandbox's addresses and names, derived from its slot (octoboot.sandbox.net)."""

import pytest

from octoboot.errors import SandboxError
from octoboot.sandbox import net


def test_a_slot_holds_240_hosts_in_its_own_24():
    slot = net.Slot(7)
    assert (slot.controller_address, slot.octopus_address) == ("10.77.7.1", "10.77.7.2")
    assert [slot.host_address(i) for i in (1, 240)] == ["10.77.7.11", "10.77.7.250"]
    assert slot.prefix_length == 24 and slot.reserved_bridge is None
    with pytest.raises(SandboxError, match="1 to 240 hosts"):
        slot.host_address(241)


def test_a_wide_slot_holds_480_hosts_in_its_two_slots_subnets_as_one_23():
    slot = net.Slot(8, wide=True)
    assert slot.prefix_length == 23 and slot.reserved_bridge == "ob9br"
    addresses = [slot.host_address(i) for i in range(1, 481)]
    assert addresses[:2] == ["10.77.8.11", "10.77.8.12"] and addresses[239] == "10.77.8.250"
    assert addresses[240:242] == ["10.77.9.11", "10.77.9.12"] and addresses[-1] == "10.77.9.250"
    assert len(set(addresses)) == 480
    # every one is in 10.77.8.0/23, with the controller and the Octopus stand-in
    assert all(a.startswith(("10.77.8.", "10.77.9.")) for a in addresses)
    assert slot.veth(480) == "ob8h480" and len(net.Slot(250).veth(480)) <= 15  # IFNAMSIZ
    with pytest.raises(SandboxError, match="1 to 480 hosts"):
        slot.host_address(481)
