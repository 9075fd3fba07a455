"""Fidelity of a profile: predicted against measured latency of real derived networks.

Draws random valid genotypes for the profile's network plus two extremes (every edge the
cheapest operation of its cell type, every edge the most expensive, by the profile's latency
c_o), builds each derived network (eval mode) and times it on the profile's own device, backend,
precision, resolution and thread count. The timing reuses the profile protocol's runners: every
network has two independent instances (two ONNX Runtime sessions, two PyTorch module copies), and
in every round all networks run once in a freshly shuffled order, round r on instance r % 2, so
drift of the machine hits all networks alike. The medians of the two instances are two
independent measurements m1, m2 of a network (their disagreement is the test-retest error);
the median of all its samples is the measured latency the prediction is compared with.

MACs and parameter counts are compared beside the profile, each fitted linearly to the
measurements (see :mod:`casprof.fidelity_metrics`).
"""

from __future__ import annotations

import dataclasses
import random
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from casprof.backends.base import Runner, RunnerSpec
from casprof.complexity import count_macs, count_params
from casprof.devices import resolve_device
from casprof.errors import UserInputError
from casprof.fidelity_metrics import Agreement, LinearFit, agreement, proxy_agreement, retest_error
from casprof.genotype import Genotype, random_genotype, uniform_genotype
from casprof.hardware import HardwareFingerprint
from casprof.measure import MeasureSettings, Progress, ProgressCallback, make_runner_spec, open_instances
from casprof.network import CASNetwork
from casprof.ops import CELL_TYPES, candidate_ops
from casprof.predict import predict
from casprof.profile import Method, Metric, Profile

#: The fewest random genotypes a fidelity check accepts (rank correlations need a few points).
MIN_SAMPLES = 5

#: Two instances per network: two independent measurements (test-retest).
INSTANCES = 2


@dataclass(frozen=True)
class FidelitySettings:
    """What a fidelity check draws and how long it measures.

    Args:
        samples: random genotypes (the two extremes come on top).
        seed: random genotype ``k`` uses seed ``seed * 1000 + k``; also seeds the round order.
        rounds: timed runs of every network; round r uses instance r % 2, so each instance
            gives ``rounds / 2`` samples.
        extremes: add the all-cheapest and all-most-expensive genotypes.
        block_size: networks prepared and timed together (their rounds interleave); the blocks
            run one after another, so only ``2 * block_size`` sessions or module copies are in
            memory at once (64 ONNX Runtime sessions at 768x1536 do not fit in 24 GiB).
    """

    samples: int = 30
    seed: int = 0
    rounds: int = 6
    extremes: bool = True
    block_size: int = 8

    def __post_init__(self) -> None:
        if self.samples < MIN_SAMPLES:
            raise UserInputError(f"A fidelity check needs at least {MIN_SAMPLES} random genotypes, got {self.samples}.")
        if self.rounds < 2 or self.rounds % 2:
            raise UserInputError(f"The rounds must be an even number of at least 2 (two instances), got {self.rounds}.")
        if self.block_size < 2:
            raise UserInputError(f"A block must hold at least 2 networks, got {self.block_size}.")

    def to_dict(self) -> dict[str, Any]:
        return {"samples": self.samples, "seed": self.seed, "rounds": self.rounds, "extremes": self.extremes,
                "instances": INSTANCES, "block_size": self.block_size}


@dataclass(frozen=True)
class Candidate:
    """One derived network of the check: a name and its genotype."""

    name: str
    genotype: Genotype


def _extreme_ops(profile: Profile, cheapest: bool) -> dict[str, str]:
    metric = Metric.LATENCY_MS.value
    pick = min if cheapest else max
    return {t: pick(candidate_ops(t), key=lambda op: profile.cost(t, op, metric).value) for t in CELL_TYPES}


def draw_candidates(profile: Profile, settings: FidelitySettings) -> list[Candidate]:
    """The random genotypes (seeds derived from ``settings.seed``) and the two extremes."""
    out = [
        Candidate(f"random-{k}", random_genotype(settings.seed * 1000 + k, profile.network))
        for k in range(settings.samples)
    ]
    if settings.extremes:
        out.append(Candidate("all-cheapest", uniform_genotype(_extreme_ops(profile, True), profile.network)))
        out.append(Candidate("all-most-expensive", uniform_genotype(_extreme_ops(profile, False), profile.network)))
    return out


@dataclass(frozen=True)
class NetworkResult:
    """One derived network: prediction, the two instances' medians, proxies."""

    name: str
    genotype: dict[str, Any]
    predicted_ms: float
    first_ms: float
    second_ms: float
    measured_ms: float
    samples_ms: tuple[tuple[float, ...], tuple[float, ...]]
    macs: float
    params: float
    uniform_ms: float | None = None

    @property
    def error_pct(self) -> float:
        return 100.0 * (self.predicted_ms - self.measured_ms) / self.measured_ms

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "predicted_ms": self.predicted_ms,
            "measured_ms": self.measured_ms,
            "error_pct": self.error_pct,
            "first_ms": self.first_ms,
            "second_ms": self.second_ms,
            "macs": self.macs,
            "params": self.params,
            "uniform_share_predicted_ms": self.uniform_ms,
            "samples_ms": [list(s) for s in self.samples_ms],
            "genotype": self.genotype,
        }


@dataclass(frozen=True)
class FidelityReport:
    """The outcome of a fidelity check, ready to write as JSON, Markdown and a scatter plot."""

    profile_path: str
    profile: dict[str, Any]
    settings: dict[str, Any]
    networks: tuple[NetworkResult, ...]
    profile_agreement: Agreement
    macs_agreement: Agreement
    macs_fit: LinearFit
    params_agreement: Agreement
    params_fit: LinearFit
    retest_pct: float
    seconds: float
    uniform_agreement: Agreement | None = None
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))

    @property
    def mape_to_retest(self) -> float | None:
        """MAPE of the profile divided by the test-retest error (``None`` if the latter is 0)."""
        return self.profile_agreement.mape / self.retest_pct if self.retest_pct > 0 else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "report": "casprof fidelity",
            "created": self.created,
            "profile_path": self.profile_path,
            "profile": self.profile,
            "settings": self.settings,
            "seconds": round(self.seconds, 1),
            "summary": {
                "profile": self.profile_agreement.to_dict(),
                "macs_linear_fit": {**self.macs_agreement.to_dict(), "fit": self.macs_fit.to_dict()},
                "params_linear_fit": {**self.params_agreement.to_dict(), "fit": self.params_fit.to_dict()},
                "uniform_share": None if self.uniform_agreement is None else self.uniform_agreement.to_dict(),
                "test_retest_pct": self.retest_pct,
                "mape_to_test_retest": self.mape_to_retest,
            },
            "networks": [n.to_dict() for n in self.networks],
        }


def check_can_measure(profile: Profile, hardware: HardwareFingerprint) -> None:
    """Refuse an estimated profile and a profile made on other hardware than the present one."""
    if profile.method is Method.ESTIMATED:
        raise UserInputError(
            f"The profile for {profile.device} is an estimate, so there is no measurement on its device to check it against."
        )
    if Metric.LATENCY_MS.value not in profile.metrics:
        raise UserInputError("The profile has no latency_ms metric to check.")
    recorded = profile.hardware.get("digest")
    if recorded != hardware.digest():
        cpu = (profile.hardware.get("cpu") or {}).get("model", "unknown CPU")
        gpus = profile.hardware.get("gpus") or []
        theirs = f"GPU '{gpus[0].get('name')}'" if gpus else f"CPU '{cpu}'"
        raise UserInputError(
            f"The profile was made on {theirs} (hardware {recorded}), not on this machine's {hardware.describe()} "
            f"(hardware {hardware.digest()}), so its latencies cannot be checked here."
        )


def measure_settings_of(profile: Profile) -> MeasureSettings:
    """The profile's own backend, precision, resolution, threads, exporter and seed."""
    s = profile.settings
    return MeasureSettings(
        backend=s.get("backend", profile.backend.name),
        precision=s.get("precision", profile.backend.precision),
        resolution=profile.input_size,
        threads=int(profile.backend.threads or s.get("threads") or 1),
        rounds=3,  # unused here: the fidelity settings say how many rounds
        warmup_iters=int(s.get("warmup_iters", 2)),
        warmup_seconds=float(s.get("warmup_seconds", 0.0)),
        seed=int(s.get("seed", 0)),
        exporter=str(s.get("exporter", "torchscript")),
        instances=INSTANCES,
    )


def time_networks(
    runners: dict[str, list[Runner]], rounds: int, seed: int, progress: ProgressCallback
) -> dict[str, tuple[list[float], ...]]:
    """Interleaved rounds: every network once per round in a seeded shuffled order, instance r % n."""
    samples: dict[str, tuple[list[float], ...]] = {k: tuple([] for _ in v) for k, v in runners.items()}
    names = list(runners)
    for r in range(rounds):
        progress(Progress("measuring", r, rounds, f"round {r + 1}"))
        order = list(names)
        random.Random(f"fidelity/{seed}/{r}").shuffle(order)
        for name in order:
            instances = runners[name]
            i = r % len(instances)
            samples[name][i].append(instances[i].time_once())
    progress(Progress("measuring", rounds, rounds))
    return samples


def _measure_block(models: dict[str, torch.nn.Module], msettings: MeasureSettings, spec: RunnerSpec,
                   settings: FidelitySettings, index: int, count: int, progress: ProgressCallback) -> dict[str, tuple[list[float], ...]]:
    """Prepare, warm up and time one block of networks; its sessions are closed on return."""
    where = f"block {index + 1}/{count}"
    with ExitStack() as stack:
        runners: dict[str, list[Runner]] = {}
        for i, (name, model) in enumerate(models.items()):
            progress(Progress(f"preparing networks ({where})", i, len(models), name))
            runners[name] = open_instances(stack, model, msettings, spec)
        for i, (name, instances) in enumerate(runners.items()):
            progress(Progress(f"warming up ({where})", i, len(runners), name))
            for runner in instances:
                runner.warmup(msettings.warmup_iters, msettings.warmup_seconds)
        return time_networks(runners, settings.rounds, settings.seed * 1000 + index, progress)


def run_fidelity(
    profile: Profile,
    hardware: HardwareFingerprint,
    settings: FidelitySettings,
    *,
    profile_path: Path | str = "",
    progress: ProgressCallback = lambda p: None,
) -> FidelityReport:
    """Measure the derived networks of ``settings`` and compare them with the profile's predictions.

    Raises:
        UserInputError: an estimated profile, or one made on other hardware.
        BackendUnavailableError: the profile's backend cannot run here.
    """
    check_can_measure(profile, hardware)
    start = time.perf_counter()
    device = resolve_device(profile.device, hardware)
    msettings = measure_settings_of(profile)
    candidates = draw_candidates(profile, settings)
    shape = (1, profile.network.in_channels, *profile.input_size)
    models = {c.name: CASNetwork.from_genotype(c.genotype).eval() for c in candidates}
    exact: dict[str, tuple[float, float]] = {}
    for i, (name, model) in enumerate(models.items()):
        progress(Progress("counting parameters and MACs", i, len(models), name))
        exact[name] = (float(count_macs(model, shape).total), float(count_params(model)))
    progress(Progress("counting parameters and MACs", len(models), len(models)))
    names = list(models)
    blocks = [names[i:i + settings.block_size] for i in range(0, len(names), settings.block_size)]
    samples: dict[str, tuple[list[float], ...]] = {}
    with tempfile.TemporaryDirectory(prefix="casprof-fidelity-") as tmp:
        spec = make_runner_spec(profile.network, msettings, device, Path(tmp))
        for b, block in enumerate(blocks):
            samples.update(_measure_block({n: models[n] for n in block}, msettings, spec, settings, b, len(blocks), progress))
    uniform = dataclasses.replace(profile, edge_model=None) if profile.edge_model is not None else None
    lat = Metric.LATENCY_MS.value
    results = []
    for c in candidates:
        first, second = samples[c.name]
        results.append(NetworkResult(
            name=c.name,
            genotype=c.genotype.to_dict(),
            predicted_ms=predict(profile, c.genotype)[lat].value,
            uniform_ms=None if uniform is None else predict(uniform, c.genotype)[lat].value,
            first_ms=float(np.median(first)),
            second_ms=float(np.median(second)),
            measured_ms=float(np.median(first + second)),
            samples_ms=(tuple(first), tuple(second)),
            macs=exact[c.name][0],
            params=exact[c.name][1],
        ))
    return summarize(profile, results, settings, profile_path, time.perf_counter() - start)


def summarize(profile: Profile, results: Sequence[NetworkResult], settings: FidelitySettings,
              profile_path: Path | str, seconds: float) -> FidelityReport:
    """Turn per-network results into the report's figures."""
    measured = [r.measured_ms for r in results]
    macs_agreement, macs_fit = proxy_agreement([r.macs for r in results], measured)
    params_agreement, params_fit = proxy_agreement([r.params for r in results], measured)
    b = profile.backend
    return FidelityReport(
        profile_path=str(profile_path),
        profile={
            "device": profile.device,
            "backend": b.name,
            "backend_version": b.version,
            "precision": b.precision,
            "threads": b.threads,
            "resolution": list(profile.input_size),
            "network": profile.fingerprint,
            "hardware_digest": profile.hardware.get("digest"),
            "cpu": (profile.hardware.get("cpu") or {}).get("model"),
            "gpus": [g.get("name") for g in profile.hardware.get("gpus") or []],
            "schema_edge_model": "uniform share c_o / E (schema 1)" if profile.edge_model is None
            else "per edge class s_k + c_o^k / E_k (schema 2)",
        },
        settings=settings.to_dict(),
        networks=tuple(results),
        profile_agreement=agreement([r.predicted_ms for r in results], measured),
        macs_agreement=macs_agreement,
        macs_fit=macs_fit,
        params_agreement=params_agreement,
        params_fit=params_fit,
        retest_pct=retest_error([r.first_ms for r in results], [r.second_ms for r in results]),
        uniform_agreement=None if any(r.uniform_ms is None for r in results)
        else agreement([r.uniform_ms for r in results], measured),  # type: ignore[misc]
        seconds=seconds,
    )
