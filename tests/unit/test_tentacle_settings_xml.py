"""The Tentacle stand-in's configuration file is read by expat and written by hand; both
must stay byte for byte what xml.etree.ElementTree read and wrote."""

from __future__ import annotations

import random
import xml.etree.ElementTree as ET
from xml.parsers import expat

import pytest

from octoboot.sandbox.tentacle_standin import settings

AWKWARD = ["", "plain", "a&b<c>d", 'say "hi"', "tab\there", "line\nbreak\r\n", "é ü 日本", "  "]


def element_tree(values: dict[str, str]) -> bytes:
    root = ET.Element("octopus-settings")
    for key in sorted(values):
        ET.SubElement(root, "set", key=key).text = values[key]
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


@pytest.mark.parametrize("seed", range(20))
def test_written_as_element_tree_wrote_it_and_read_back(seed: int) -> None:
    rng = random.Random(seed)
    values = {
        rng.choice(AWKWARD) + str(i): rng.choice(AWKWARD) + rng.choice(AWKWARD)
        for i in range(rng.randrange(0, 6))
    }
    written = settings._document(values)
    assert written == element_tree(values)
    read_back = [(e.get("key", ""), e.text or "") for e in ET.fromstring(written).iter("set")]
    assert settings._read_sets(written) == read_back
    # XML turns a value's \r\n into \n, in ElementTree's file as in ours.
    assert dict(read_back) == {k: v.replace("\r\n", "\n") for k, v in values.items()}


@pytest.mark.parametrize(
    "document",
    [
        b"<octopus-settings><set key='a'>1</set><set>no key</set><set key='a'>2</set>"
        b"</octopus-settings>",
        b"<r><set key='p'>before<x>in</x>after<set key='q'>inner</set>tail</set></r>",
        b"<?xml version='1.0' encoding='utf-8'?>"
        b"<r><set key='e'>&amp;&lt;&#65;</set><set key='n'/></r>",
        b"<r xmlns='urn:x'><set key='namespaced'>v</set></r>",
        b"<r><n:set xmlns:n='urn:y' key='k'>v</n:set><set n:key='k' xmlns:n='urn:y'>w</set></r>",
    ],
)
def test_read_as_element_tree_read_it(document: bytes) -> None:
    expected = [(e.get("key", ""), e.text or "") for e in ET.fromstring(document).iter("set")]
    assert settings._read_sets(document) == expected


@pytest.mark.parametrize("document", [b"<r><set key='a'>", b"<r></x>", b"not xml", b"<r/><r/>"])
def test_errors_have_element_trees_code_and_position(document: bytes) -> None:
    with pytest.raises(ET.ParseError) as tree:
        ET.fromstring(document)
    with pytest.raises(expat.ExpatError) as ours:
        settings._read_sets(document)
    assert (ours.value.code, (ours.value.lineno, ours.value.offset)) == (
        tree.value.code,
        tree.value.position,
    )
    assert str(ours.value) == str(tree.value)
