"""Benchmark helper: what bracketing two probes at a time costs, from a profile's raw baseline runs.

A probe's sample is its time minus the mean of the baseline runs before and after its bracket.
With one probe per bracket both runs are adjacent to it; with two, one of them is a run further
away. Nothing is timed here: the profile's baseline runs, in the order they ran, stand in for the
probe. Predicting run k from runs k-1 and k+1 (the adjacent bracket) and from k-1 and k+2 or k-2
and k+1 (a run one place further, as in ``B p1 p2 B``) leaves residuals whose spread (SD) is
compared; the ratio is the per-sample price of the wider bracket. Run boundaries between blocks
and pooled sources are ignored (a handful of the hundreds of pairs).

    python benchmarks/bracket_spacing.py profiles/cpu-e6c8ed69-onnxruntime-fp32-768x1536.json \\
        profiles/cpu-e6c8ed69-torch-fp32-768x1536.json

Writes ``benchmarks/results/bracket_spacing.{json,md}`` (or ``--results DIR``) and prints the Markdown.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from casprof._io import atomic_write_json, atomic_write_text
from casprof.errors import UserInputError
from casprof.profile import Metric, Profile

RESULTS = Path(__file__).resolve().parent / "results"


def spacing(runs: np.ndarray) -> dict[str, float]:
    """Residual SDs of predicting each run from its neighbours, and the autocorrelations."""
    if len(runs) < 8:
        raise ValueError(f"at least 8 baseline runs are needed, got {len(runs)}")
    k = np.arange(2, len(runs) - 2)
    adjacent = runs[k] - (runs[k - 1] + runs[k + 1]) / 2
    wider = np.concatenate([runs[k] - (runs[k - 1] + runs[k + 2]) / 2, runs[k] - (runs[k - 2] + runs[k + 1]) / 2])
    centred = runs - np.median(runs)
    out = {"runs": int(len(runs)), "median_ms": float(np.median(runs)),
           "sd_adjacent_ms": float(adjacent.std()), "sd_one_further_ms": float(wider.std()),
           "sd_no_bracket_ms": float(centred[k].std())}
    out["price"] = out["sd_one_further_ms"] / out["sd_adjacent_ms"]
    for lag in (1, 2, 5, 10):
        out[f"autocorrelation_lag{lag}"] = float(np.corrcoef(centred[:-lag], centred[lag:])[0, 1])
    return out


def markdown(rows: list[dict]) -> str:
    lines = [
        "# Bracket spacing: the per-sample price of two probes per bracket",
        "",
        "Baseline runs of each profile, in the order they ran, predicted from the two adjacent runs (one probe per "
        "bracket) and from a run one place further on one side (two probes per bracket); SD of the residuals. "
        "In a profile measured with two probes per bracket its consecutive baseline runs are already two probes apart, "
        "so its row says what spacing them further would cost.",
        "",
        "| profile | backend | probes per bracket when measured | runs | median ms | SD adjacent ms | SD one further ms | price | SD without brackets ms | autocorrelation lag 1 / 2 / 5 / 10 |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        ac = " / ".join(f"{r[f'autocorrelation_lag{lag}']:.2f}" for lag in (1, 2, 5, 10))
        lines.append(f"| `{r['profile']}` | {r['backend']} | {r['probes_per_bracket']} | {r['runs']} | {r['median_ms']:.1f} | "
                     f"{r['sd_adjacent_ms']:.2f} | {r['sd_one_further_ms']:.2f} | **{r['price']:.3f}** | "
                     f"{r['sd_no_bracket_ms']:.2f} | {ac} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profiles", type=Path, nargs="+", help="measured profiles (their baseline runs are used)")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    rows = []
    for path in args.profiles:
        try:
            profile = Profile.load(path)
        except UserInputError as exc:
            parser.error(str(exc))
        m = profile.baseline[Metric.LATENCY_MS.value].measurement
        if m is None:
            parser.error(f"{path} has no measured baseline (an estimate?)")
        try:
            found = spacing(np.asarray(m.samples, dtype=float))
        except ValueError as exc:
            parser.error(f"{path}: {exc}")
        rows.append({"profile": path.name, "backend": profile.backend.name,
                     "probes_per_bracket": profile.settings.get("probes_per_bracket", 1), **found})
    args.results.mkdir(parents=True, exist_ok=True)
    report = {"benchmark": "bracket_spacing",
              "command": "python benchmarks/bracket_spacing.py " + " ".join(str(p) for p in args.profiles), "rows": rows}
    atomic_write_json(args.results / "bracket_spacing.json", report)
    md = markdown(rows) + f"\n- command: `{report['command']}`\n"
    atomic_write_text(args.results / "bracket_spacing.md", md)
    print(md)


if __name__ == "__main__":
    main()
