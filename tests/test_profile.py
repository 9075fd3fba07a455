"""Profiles: what a measurement writes, the loader's refusals, prediction, comparison."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from casprof.complexity import count_params
from casprof.compare import check_profile, condition_differences, diff_profiles
from casprof.config import NetworkConfig
from casprof.errors import UserInputError
from casprof.genotype import Genotype, random_genotype, uniform_genotype
from casprof.network import CASNetwork
from casprof.ops import CELL_TYPES, candidate_ops
from casprof.predict import predict
from casprof.probes import BASELINE, Probe, build_probe
from casprof.profile import PROFILE_SCHEMA_VERSION, Method, Profile
from tests.conftest import TINY, as_schema_1


def test_measured_profile_contents(tiny_profile_path: Path) -> None:
    raw = json.loads(tiny_profile_path.read_text())
    assert raw["schema_version"] == PROFILE_SCHEMA_VERSION
    assert raw["method"] == "measured" and raw["device"] == "cpu"
    assert raw["backend"]["name"] == "torch" and raw["backend"]["precision"] == "fp32"
    assert raw["backend"]["threads"] == 1
    assert raw["network"]["input_size"] == [32, 64]
    assert raw["network"]["fingerprint"] == TINY.fingerprint()
    assert raw["hardware"]["cpu"]["model"] and raw["hardware"]["digest"]
    assert raw["settings"]["rounds"] == 3 and raw["settings"]["seed"] == 0
    assert raw["created"].endswith("Z")
    base = raw["baseline"]["latency_ms"]
    # three rounds per block (10, 10 and 9 probes), each with one baseline run more than it has pairs of probes
    assert base["value"] > 0 and len(base["samples"]) == 3 * (6 + 6 + 6)
    assert set(raw["settings"]["phase_seconds"]) == {"count_params_macs", "prepare_and_warmup", "timed_rounds"}
    assert not tiny_profile_path.with_name(tiny_profile_path.name + ".partial.json").exists()
    for t in CELL_TYPES:
        assert set(raw["costs"][t]) == set(candidate_ops(t))
        for op, entry in raw["costs"][t].items():
            lat = entry["latency_ms"]
            if op == "identity":
                assert lat == {"value": 0.0, "source": "definition"}
                continue
            assert len(lat["samples"]) == 3 and len(lat["absolute"]["samples"]) == 3
            lo, hi = lat["ci95"]
            assert lo <= lat["value"] <= hi
            assert lat["interval_includes_zero"] == (lo <= 0 <= hi)


def test_exact_metrics_are_probe_minus_baseline(tiny_profile_path: Path) -> None:
    p = Profile.load(tiny_profile_path)
    base = count_params(build_probe(TINY, BASELINE))
    assert p.baseline["params"].value == base
    for t, op in (("normal", "conv_3x3"), ("reduce", "sep_conv_3x3_x4"), ("ms", "conv_25x1_1x25")):
        assert p.cost(t, op, "params").value == count_params(build_probe(TINY, Probe(t, op))) - base
        assert p.cost(t, op, "macs").value > 0
    assert p.cost("normal", "max_pool_3x3", "params").value == 0
    assert p.cost("normal", "max_pool_3x3", "macs").value > 0


def test_round_trip(tiny_profile_path: Path, tmp_path: Path) -> None:
    p = Profile.load(tiny_profile_path)
    copy = tmp_path / "copy.json"
    p.save(copy)
    assert json.loads(copy.read_text()) == json.loads(tiny_profile_path.read_text())


def _edited(src: Path, dst: Path, edit) -> Path:
    raw = json.loads(src.read_text())
    edit(raw)
    dst.write_text(json.dumps(raw))
    return dst


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d.__setitem__("schema_version", PROFILE_SCHEMA_VERSION + 1), "newer than this toolkit reads"),
        (lambda d: d.pop("schema_version"), "no integer schema_version"),
        (lambda d: d.__setitem__("schema_version", 0), "invalid schema_version"),
        (lambda d: d.pop("costs"), "missing the field"),
        (lambda d: d["network"].__setitem__("channels", 8), "fingerprint .* does not match"),
        (lambda d: d["costs"]["ms"].pop("spp_8x8"), "no cost for the 'ms' operation 'spp_8x8'"),
        (lambda d: d["costs"]["normal"].__setitem__("conv_7x7", {}), "unknown operation"),
        (lambda d: d["costs"]["normal"]["conv_3x3"]["latency_ms"].__setitem__("value", "fast"), "non-numeric"),
        (lambda d: d["costs"]["normal"]["conv_3x3"]["latency_ms"].__setitem__("value", 123.0), "not the median"),
        (lambda d: d.__setitem__("method", "guessed"), "neither 'measured' nor 'estimated'"),
        (lambda d: d["baseline"].__setitem__("joules", {"value": 1}), "unknown metric"),
        (lambda d: d["hardware"]["cpu"].__setitem__("model", "Intel Core i7-8700"), "hardware digest .* does not match"),
        # wrong types where the loader has no check by name: one sentence all the same
        (lambda d: d.__setitem__("settings", [1, 2]), "tool and settings blocks must be objects"),
        (lambda d: d.__setitem__("tool", "x"), "tool and settings blocks must be objects"),
        (lambda d: d.__setitem__("warnings", 5), "warnings must be a list"),
        (lambda d: d["baseline"]["latency_ms"].__setitem__("value", 10 ** 400), "is malformed .*OverflowError"),
        (lambda d: d["backend"].__setitem__("details", [1]), "is malformed"),
        (lambda d: d["hardware"].__setitem__("cpu", "x"), "hardware.cpu"),
        (lambda d: (d["hardware"].pop("digest"), d["hardware"].__setitem__("gpus", ["x"])), r"hardware.gpus\[0\]"),
        (lambda d: d["network"].__setitem__("input_size", [100, 100]), "input_size 100x100 does not fit its network"),
        (lambda d: d["settings"].__setitem__("pooled_from", 3), "pooled_from must be a list of objects"),
        (lambda d: d["backend"]["details"].__setitem__("roofline", {"peak_tflops": "x"}), "peak_tflops, bandwidth_gbs and launch_overhead_us are numbers"),
        # a measured profile's backend block must name what fidelity and calibrate would time again
        (lambda d: d["backend"].__setitem__("name", "foo"), "backend 'foo' is none of onnxruntime, tensorrt, torch"),
        (lambda d: d["backend"].__setitem__("precision", "fp64"), "precision 'fp64' is neither fp32 nor fp16"),
        (lambda d: d["backend"].__setitem__("threads", 0), "threads 0 is not a positive whole number"),
        (lambda d: d["settings"].__setitem__("backend", "tensorrt"), r"settings.backend 'tensorrt' disagrees with its backend block \('torch'\)"),
        (lambda d: d["settings"].__setitem__("precision", "fp16"), "settings.precision 'fp16' disagrees"),
    ],
)
def test_bad_profiles_are_refused(tiny_profile_path: Path, tmp_path: Path, edit, message: str) -> None:
    bad = _edited(tiny_profile_path, tmp_path / "bad.json", edit)
    with pytest.raises(UserInputError, match=message):
        Profile.load(bad)


def test_unreadable_profiles(tiny_profile_path: Path, tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="does not exist"):
        Profile.load(tmp_path / "nope.json")
    truncated = tmp_path / "t.json"
    truncated.write_text(tiny_profile_path.read_text()[:200])
    with pytest.raises(UserInputError, match="not valid JSON"):
        Profile.load(truncated)
    not_profile = tmp_path / "n.json"
    not_profile.write_text('"hello"')
    with pytest.raises(UserInputError, match="JSON object"):
        Profile.load(not_profile)


def test_prediction_is_baseline_plus_edge_shares(tiny_profile_path: Path, tmp_path: Path) -> None:
    """A version-1 profile (no edge model) predicts c'_id plus the uniform shares c_o / E."""
    p = Profile.load(as_schema_1(tiny_profile_path, tmp_path))
    ident = uniform_genotype({"normal": "identity", "reduce": "identity", "ms": "identity"}, TINY)
    conv = uniform_genotype({"normal": "conv_3x3", "reduce": "identity", "ms": "identity"}, TINY)
    pi, pc = predict(p, ident), predict(p, conv)
    for m in p.metrics:
        assert pi[m].value == pytest.approx(p.baseline[m].value)
    lat = p.cost("normal", "conv_3x3", "latency_ms").value
    assert pc["latency_ms"].value == pytest.approx(p.baseline["latency_ms"].value + 6 / 9 * lat)
    assert pc["latency_ms"].by_cell_type["normal"] == pytest.approx(6 / 9 * lat)
    # The params model is exact for backbone edges: compare with the real derived networks.
    real = count_params(CASNetwork.from_genotype(conv)) - count_params(CASNetwork.from_genotype(ident))
    assert pc["params"].value - pi["params"].value == pytest.approx(real)


def test_schema_2_prediction_counts_derived_networks_exactly(tiny_profile_path: Path) -> None:
    """With the edge model, the predicted parameters are the derived network's own count."""
    p = Profile.load(tiny_profile_path)
    for genotype in (random_genotype(1, TINY), uniform_genotype({"normal": "identity", "reduce": "identity", "ms": "identity"}, TINY)):
        assert predict(p, genotype)["params"].value == pytest.approx(count_params(CASNetwork.from_genotype(genotype)))


def test_prediction_refuses_another_network(tiny_profile_path: Path) -> None:
    p = Profile.load(tiny_profile_path)
    with pytest.raises(UserInputError, match="channels 4 vs 16"):
        predict(p, random_genotype(0, NetworkConfig()))


def test_condition_differences_name_what_differs() -> None:
    """On committed profiles: the keep-allocator torch profile differs from the shipped one only in
    that setting (the shipped one predates it: read as system); ORT vs torch in backend and rounds."""
    root = Path(__file__).resolve().parents[1]
    torch_p = Profile.load(root / "profiles" / "cpu-6d78dc83-torch-fp32-768x1536.json")
    keep = Profile.load(root / "benchmarks" / "results" / "fidelity_cpu_torch-keep_6d78dc8361ef86df.profile.json")
    ort = Profile.load(root / "profiles" / "cpu-6d78dc83-onnxruntime-fp32-768x1536.json")
    assert condition_differences(torch_p, torch_p) == []
    assert condition_differences(torch_p, keep) == ["cpu_allocator: system → keep"]
    paired = dataclasses.replace(torch_p, settings={**torch_p.settings, "probes_per_bracket": 2})
    assert condition_differences(torch_p, paired) == ["probes_per_bracket: 1 → 2"]  # older profiles bracketed one probe
    arena = dataclasses.replace(ort, settings={**ort.settings, "ort_shared_arena": True})
    assert condition_differences(ort, arena) == ["ort_shared_arena: False → True"]  # older: an arena per session
    differences = condition_differences(torch_p, ort)
    assert "backend: torch → onnxruntime" in differences and "rounds: 18 → 36" in differences
    assert not any(d.startswith(("hardware", "device", "threads", "input size", "cpu_allocator")) for d in differences)


def test_diff_and_check(tiny_profile_path: Path) -> None:
    p = Profile.load(tiny_profile_path)
    changes = diff_profiles(p, p)
    assert len(changes) == sum(len(candidate_ops(t)) for t in CELL_TYPES)
    assert not any(c.significant for c in changes)  # a profile is never significantly different from itself
    assert all(c.change == 0 for c in changes)
    findings = check_profile(p)
    assert all(f.level in ("info", "warning") for f in findings)
    assert p.method is Method.MEASURED


def test_genotype_from_other_network_is_refused(tmp_path: Path) -> None:
    g = random_genotype(0, TINY)
    path = tmp_path / "g.json"
    g.save(path)
    assert Genotype.load(path).network == TINY
