"""Parameters and MACs of the default CAS network at 768x1536 (the figures in the README).

Counts the all-identity baseline, the heaviest and lightest uniform networks and 20 random
genotypes (seeds 0-19), with ``casprof.complexity`` (fvcore with handles for every operator).

Run: ``python benchmarks/network_size.py``; writes ``benchmarks/results/network_size.{json,md}``.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from casprof._io import atomic_write_json, atomic_write_text
from casprof.complexity import count_macs, count_params
from casprof.config import DEFAULT_CONFIG, DEFAULT_RESOLUTION
from casprof.genotype import random_genotype, uniform_genotype
from casprof.network import CASNetwork

RESULTS = Path(__file__).resolve().parent / "results"


def size(genotype) -> dict:
    net = CASNetwork.from_genotype(genotype).eval()
    h, w = DEFAULT_RESOLUTION
    macs = count_macs(net, (1, 3, h, w))
    return {"params": count_params(net), "conv_macs": macs.conv_macs, "total_macs": macs.total}


def main() -> None:
    named = {
        "all identity": uniform_genotype({"normal": "identity", "reduce": "identity", "ms": "identity"}),
        "all conv_3x3 / conv_3x3_d1": uniform_genotype({"normal": "conv_3x3", "reduce": "conv_3x3", "ms": "conv_3x3_d1"}),
        "heaviest (conv_3x3_x2 / conv_25x1_1x25)": uniform_genotype(
            {"normal": "conv_3x3_x2", "reduce": "conv_3x3_x2", "ms": "conv_25x1_1x25"}),
    }
    rows = {name: size(g) for name, g in named.items()}
    randoms = [size(random_genotype(seed)) for seed in range(20)]
    report = {
        "resolution": list(DEFAULT_RESOLUTION),
        "config": DEFAULT_CONFIG.to_dict(),
        "fingerprint": DEFAULT_CONFIG.fingerprint(),
        "named": rows,
        "random_seed0": randoms[0],
        "random_20": {k: {"min": min(r[k] for r in randoms), "median": statistics.median(r[k] for r in randoms),
                          "max": max(r[k] for r in randoms)} for k in ("params", "conv_macs", "total_macs")},
    }
    lines = [
        f"| network at {DEFAULT_RESOLUTION[0]}x{DEFAULT_RESOLUTION[1]} | parameters | conv MACs | all operations (MACs + element-wise) |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['params'] / 1e6:.2f} M | {r['conv_macs'] / 1e9:.2f} G | {r['total_macs'] / 1e9:.2f} G |")
    lines.append(f"| random genotype, seed 0 (`casprof genotype --random --seed 0`) | {randoms[0]['params'] / 1e6:.2f} M | "
                 f"{randoms[0]['conv_macs'] / 1e9:.2f} G | {randoms[0]['total_macs'] / 1e9:.2f} G |")
    r20 = report["random_20"]
    lines.append(f"| 20 random genotypes, min – median – max | "
                 f"{r20['params']['min'] / 1e6:.2f} – {r20['params']['median'] / 1e6:.2f} – {r20['params']['max'] / 1e6:.2f} M | "
                 f"{r20['conv_macs']['min'] / 1e9:.2f} – {r20['conv_macs']['median'] / 1e9:.2f} – {r20['conv_macs']['max'] / 1e9:.2f} G | "
                 f"{r20['total_macs']['min'] / 1e9:.2f} – {r20['total_macs']['median'] / 1e9:.2f} – {r20['total_macs']['max'] / 1e9:.2f} G |")
    md = "\n".join(lines) + "\n"
    RESULTS.mkdir(exist_ok=True)
    atomic_write_json(RESULTS / "network_size.json", report)
    atomic_write_text(RESULTS / "network_size.md", md)
    print(md)


if __name__ == "__main__":
    main()
