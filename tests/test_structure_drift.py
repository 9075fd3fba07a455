"""casprof.structure_drift: structure terms timed now, and predictions with them."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from casprof.genotype import random_genotype
from casprof.predict import predict
from casprof.probes import Probe, Variant
from casprof.profile import CostValue, Profile
from casprof.stats import Measurement
from casprof.structure_drift import StructureTerm, structure_probes, structure_terms, with_structure
from tests.conftest import as_schema_1

LAT = "latency_ms"


def _now(value: float) -> CostValue:
    return CostValue.measured(Measurement((value, value + 1.0, value - 1.0)))


def _predictions(profile: Profile) -> list[float]:
    return [predict(profile, random_genotype(k, profile.network))[LAT].value for k in range(6)]


def test_probes_are_the_identity_variants_of_every_modelled_cell(tiny_profile_path: Path, tmp_path: Path) -> None:
    p = Profile.load(tiny_profile_path)
    assert p.edge_model is not None and p.edge_model.cells
    probes = structure_probes(p)
    assert probes == [Probe(t, "identity", v) for t in p.edge_model.cells
                      for v in (Variant.INPUTS_ONLY, Variant.REST_ON_INPUT0, Variant.REST_ON_INPUT1, Variant.DERIVED_IDENTITY)]
    # a schema-5 profile (no derived_identity probe) retimes the three identity probes only
    raw = json.loads(tiny_profile_path.read_text())
    for cell in raw["edge_model"].values():
        del cell["derived_identity"]
    older = tmp_path / "schema5.json"
    older.write_text(json.dumps(raw))
    assert [q.variant for q in structure_probes(Profile.load(older))] == [
        Variant.INPUTS_ONLY, Variant.REST_ON_INPUT0, Variant.REST_ON_INPUT1] * len(p.edge_model.cells)
    assert structure_probes(Profile.load(as_schema_1(tiny_profile_path, tmp_path))) == []


def test_terms_are_paired_differences_against_the_profile(tiny_profile_path: Path) -> None:
    p = Profile.load(tiny_profile_path)
    keys = [q.key for q in structure_probes(p)]
    times = {k: [10.0 + i, 12.0 + i, 30.0 + i] for i, k in enumerate(keys)}
    brackets = {k: [9.0, 9.0, 9.0] for k in keys}
    terms = structure_terms(p, times, brackets)
    assert [t.probe.key for t in terms] == keys
    for i, t in enumerate(terms):
        assert t.now.value == statistics.median([1.0 + i, 3.0 + i, 21.0 + i])
        assert t.now.absolute is not None and t.now.absolute.samples == (10.0 + i, 12.0 + i, 30.0 + i)
        assert t.change_ms == pytest.approx(t.now.value - t.profile.value)
        d = t.to_dict()
        assert d["probe"] == keys[i] and d["now_samples_ms"] == [1.0 + i, 3.0 + i, 21.0 + i]
    with pytest.raises(KeyError):
        structure_terms(p, {}, {})


def test_unchanged_terms_predict_exactly_as_the_profile(tiny_profile_path: Path) -> None:
    p = Profile.load(tiny_profile_path)
    same = [StructureTerm(q, t := _term(p, q), t) for q in structure_probes(p)]
    assert _predictions(with_structure(p, same)) == _predictions(p)
    assert with_structure(p, []) is p


def _term(p: Profile, q: Probe) -> CostValue:
    assert p.edge_model is not None and q.cell_type is not None
    return getattr(p.edge_model.cells[q.cell_type], q.variant.value)[LAT]


@pytest.mark.parametrize("index", [0, 1, 2, -1])
def test_a_term_timed_now_predicts_as_a_profile_file_with_that_value(tiny_profile_path: Path, tmp_path: Path,
                                                                     index: int) -> None:
    """Replacing one term in memory gives the predictions of a profile file edited by hand."""
    p = Profile.load(tiny_profile_path)
    probe = structure_probes(p)[index]
    new = _term(p, probe).value + 7.5
    replaced = with_structure(p, [StructureTerm(probe, _term(p, probe), _now(new))])

    raw = json.loads(tiny_profile_path.read_text())
    entry = raw["edge_model"][probe.cell_type][probe.variant.value][LAT]
    entry.update(value=new, median=new, samples=[new, new + 1.0, new - 1.0], ci95=[new - 1.0, new + 1.0])
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(raw))

    assert _predictions(replaced) == pytest.approx(_predictions(Profile.load(edited)))
    assert _predictions(replaced) != pytest.approx(_predictions(p))  # the term does move predictions
    # the other metrics and every other term are untouched
    assert p.edge_model is not None and replaced.edge_model is not None
    cell, field_name = probe.cell_type, probe.variant.value
    assert getattr(replaced.edge_model.cells[cell], field_name)["macs"] == getattr(p.edge_model.cells[cell], field_name)["macs"]
    others = [q for q in structure_probes(p) if q != probe]
    assert all(_term(replaced, q) is _term(p, q) for q in others)
    assert replaced.costs == p.costs and replaced.baseline == p.baseline
