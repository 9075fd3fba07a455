"""Genotype value: validation, JSON round trip, random draws, bad files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from casprof.config import NetworkConfig
from casprof.errors import UserInputError
from casprof.genotype import GENOTYPE_SCHEMA_VERSION, Genotype, random_genotype


def test_round_trip_is_exact(tmp_path: Path) -> None:
    g = random_genotype(7)
    assert Genotype.from_json(g.to_json()) == g
    path = tmp_path / "g.json"
    g.save(path)
    assert Genotype.load(path) == g
    raw = json.loads(path.read_text())
    assert raw["schema_version"] == GENOTYPE_SCHEMA_VERSION
    assert raw["network"]["fingerprint"] == NetworkConfig().fingerprint()
    assert raw["search"]["method"] == "random" and raw["search"]["seed"] == 7
    assert len(raw["normal"]) == 3 and len(raw["ms"]) == 6
    assert all(len(node) == 2 for node in raw["normal"])


def test_random_is_deterministic_and_varied() -> None:
    assert random_genotype(3) == random_genotype(3)
    assert len({random_genotype(s).to_json() for s in range(10)}) == 10


def _edit(mutate) -> dict:
    d = random_genotype(0).to_dict()
    mutate(d)
    return d


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d["normal"][0].__setitem__(0, ["conv_9x9", 0]), "unknown operation 'conv_9x9'"),
        (lambda d: d["normal"][0].__setitem__(0, ["none", 0]), "'none', which exists only during search"),
        (lambda d: d["reduce"][1].__setitem__(0, ["conv_3x3", 3]), "out of range 0..2"),
        (lambda d: d["ms"][2].__setitem__(1, ["conv_3x3_d2", -1]), "out of range"),
        (lambda d: d["normal"][2].__setitem__(1, [d["normal"][2][0][0], d["normal"][2][0][1]]), "twice"),
        (lambda d: d["ms"][0].__setitem__(0, ["max_pool_3x3", 0]), "unknown operation 'max_pool_3x3'"),
        (lambda d: d["normal"].pop(), "has 2 nodes but the network expects 3"),
        (lambda d: d["normal"][0].append(["conv_3x3", 1]), "keeps exactly 2"),
        (lambda d: d.__setitem__("schema_version", 99), "newer than this toolkit reads"),
        (lambda d: d.pop("schema_version"), "no integer schema_version"),
        (lambda d: d.pop("ms"), "missing the field"),
        (lambda d: d["network"].__setitem__("channels", 32), "fingerprint .* does not match"),
        (lambda d: d["normal"][0].__setitem__(0, "conv_3x3"), "malformed edge"),
    ],
)
def test_bad_genotypes_are_refused(mutate, message: str) -> None:
    with pytest.raises(UserInputError, match=message):
        Genotype.from_dict(_edit(mutate))


def test_a_profile_given_as_a_genotype_is_named_as_such(tiny_profile_path: Path) -> None:
    with pytest.raises(UserInputError, match=r"^This is not a genotype \(it looks like a cost profile\): it has none of the cells"):
        Genotype.load(tiny_profile_path)
    with pytest.raises(UserInputError, match=r"^This is not a genotype: it has none of the cells normal, reduce, ms\.$"):
        Genotype.from_dict({"schema_version": 7})


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="does not exist"):
        Genotype.load(tmp_path / "missing.json")
    truncated = tmp_path / "t.json"
    truncated.write_text(random_genotype(0).to_json()[:50])
    with pytest.raises(UserInputError, match="not valid JSON"):
        Genotype.load(truncated)
    empty = tmp_path / "e.json"
    empty.write_text("")
    with pytest.raises(UserInputError, match="empty"):
        Genotype.load(empty)
    listy = tmp_path / "l.json"
    listy.write_text("[1, 2]")
    with pytest.raises(UserInputError, match="JSON object"):
        Genotype.load(listy)
