"""Benchmark: a short ``cas train`` on the synthetic scenes on this CPU — the validation mIoU curve vs chance.

The network is the default CAS skeleton (``casprof.config.NetworkConfig()``, 19 classes) with the
project's reference genotype ``casprof.genotype.random_genotype(0)``, or a genotype file given
with ``--genotype``. It is trained with ``train.loop.run_train`` (SGD, poly policy, lr 0.005,
momentum 0.9, weight decay 5e-4 as in the paper; random scale [0.5, 2], crop, flip) from a
random initialisation, at a small crop, with a small batch, for a few hundred iterations; every
``--eval-every`` iterations the mIoU on the first ``--eval-limit`` synthetic validation images
(full size 128x256, ignore label 255) is measured. Two chance levels are measured on the same
images: a uniformly random class per pixel (seeded) and the most frequent class everywhere.
Speed is training iterations per second (data, forward, backward, update; validation excluded),
the median over the logged windows, with ``--threads`` torch threads.

Run: ``python benchmarks/train_cpu.py`` (about 5-10 minutes on 2 quiet cores); writes
``benchmarks/results/train_cpu_<hardware digest>.{json,md}`` and prints the Markdown.
``python benchmarks/train_cpu.py --short`` (CI): 6 iterations, 4 validation images; writes nothing.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "2")  # before torch is imported

import argparse  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from casprof._io import atomic_write_json, atomic_write_text  # noqa: E402
from casprof.config import parse_resolution  # noqa: E402
from casprof.genotype import Genotype, random_genotype  # noqa: E402
from casprof.hardware import detect_hardware  # noqa: E402
from casprof.network import CASNetwork  # noqa: E402
from search.data import IGNORE_INDEX, build_dataset, dataset_info  # noqa: E402
from search.metrics import ConfusionMatrix  # noqa: E402
from train.loop import TrainProgress, run_train  # noqa: E402
from train.settings import Augmentation, Cadence, TrainSettings  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def chance_levels(limit: int, seed: int = 0) -> dict[str, float]:
    """mIoU of a uniformly random prediction and of the most frequent class, on the first ``limit`` val images."""
    val = build_dataset("synthetic", "val")
    num_classes = dataset_info("synthetic").num_classes
    labels = torch.stack([val[i][1] for i in range(min(limit, len(val)))])
    generator = torch.Generator().manual_seed(seed)
    uniform = ConfusionMatrix(num_classes, IGNORE_INDEX)
    uniform.update(torch.randint(0, num_classes, labels.shape, generator=generator), labels)
    counts = torch.bincount(labels[labels != IGNORE_INDEX].ravel(), minlength=num_classes)
    majority = ConfusionMatrix(num_classes, IGNORE_INDEX)
    majority.update(torch.full_like(labels, int(counts.argmax())), labels)
    return {"uniform_random": uniform.miou(), "most_frequent_class": majority.miou()}


def markdown(data: dict) -> str:
    s = data["settings"]
    lines = [
        "# Training on the synthetic scenes (CPU)",
        "",
        f"- machine: {data['hardware_description']}, fingerprint `{data['hardware_digest']}`, {data['threads']} torch threads",
        f"- network: {data['genotype']}, {data['parameters']:,} parameters",
        f"- training: {s['iters']} iterations, batch {s['batch_size']}, crop {s['crop'][0]}x{s['crop'][1]}, "
        f"SGD lr {s['lr']} poly 0.9, momentum 0.9, weight decay 5e-4, seed {s['seed']}",
        f"- validation: first {data['eval_images']} synthetic val images at 128x256, every {s['eval_every']} iterations",
        f"- speed: **{data['iters_per_second']:.2f} training iterations/s** (median over log windows; "
        f"validation excluded); whole run {data['wall_seconds']:.0f} s wall",
        f"- chance: uniform random {100 * data['chance']['uniform_random']:.2f} % mIoU, "
        f"most frequent class {100 * data['chance']['most_frequent_class']:.2f} % mIoU",
        "",
        "| iteration | val mIoU % | × uniform chance |",
        "| ---: | ---: | ---: |",
    ]
    for row in data["curve"]:
        ratio = row["val_miou"] / data["chance"]["uniform_random"]
        lines.append(f"| {row['iteration']} | {100 * row['val_miou']:.2f} | {ratio:.1f} |")
    lines += ["", f"Command: `{data['command']}`"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="CI mode: 6 iterations, 4 val images; writes nothing")
    parser.add_argument("--genotype", type=Path, default=None, help="a genotype file (default: random_genotype(0))")
    parser.add_argument("--iters", type=int, default=300)
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--eval-limit", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--crop", default="64x128")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if args.short:
        args.iters, args.eval_every, args.eval_limit = 6, 3, 4
    torch.set_num_threads(args.threads)
    crop = parse_resolution(args.crop)
    load = os.getloadavg()[0]
    if load > 0.5:
        print(f"Warning: the 1-minute load average is {load:.2f}; other work on this machine slows training "
              "and makes the speed figure noisy.", file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        genotype_path = args.genotype or Path(tmp) / "genotype.json"
        if args.genotype is None:
            random_genotype(0).save(genotype_path)
        genotype = Genotype.load(genotype_path)
        settings = TrainSettings(
            genotype=genotype_path, iters=args.iters, batch_size=args.batch_size, augmentation=Augmentation(crop=crop),
            cadence=Cadence(log_every=max(1, min(10, args.iters // 10)), eval_every=args.eval_every,
                            checkpoint_every=args.iters, eval_limit=args.eval_limit),
        )

        def report(p: TrainProgress) -> None:
            if p.val_miou is not None or p.iteration % 10 == 0:
                val = "" if p.val_miou is None else f", val mIoU {100 * p.val_miou:.2f} %"
                print(f"iteration {p.iteration}/{p.total}: loss {p.loss:.3f}, {p.iters_per_second:.2f} it/s{val}",
                      file=sys.stderr, flush=True)

        start = time.perf_counter()
        result = run_train(settings, Path(tmp) / "run", progress=report)
        wall = time.perf_counter() - start
    hardware = detect_hardware()
    speeds = [r["iters_per_second"] for r in result.history if "iters_per_second" in r]
    command = "python benchmarks/train_cpu.py" + (" --short" if args.short else "")
    data = {
        "benchmark": "train_cpu",
        "command": command,
        "genotype": str(args.genotype) if args.genotype else "casprof.genotype.random_genotype(0) on the default network",
        "parameters": sum(p.numel() for p in CASNetwork.from_genotype(genotype).parameters()),
        "settings": {"iters": args.iters, "batch_size": args.batch_size, "crop": list(crop), "lr": settings.optimizer.lr,
                     "seed": settings.seed, "eval_every": args.eval_every},
        "eval_images": args.eval_limit,
        "threads": args.threads,
        "hardware_digest": hardware.digest(),
        "hardware_description": hardware.describe(),
        "hardware": hardware.to_dict(),
        "iters_per_second": statistics.median(speeds),
        "wall_seconds": wall,
        "chance": chance_levels(args.eval_limit),
        "curve": result.to_dict()["val_miou_curve"],
        "best_val_miou": result.best_miou,
    }
    md = markdown(data)
    if not args.short:
        RESULTS.mkdir(exist_ok=True)
        stem = RESULTS / f"train_cpu_{data['hardware_digest']}"
        atomic_write_json(stem.with_suffix(".json"), data)
        atomic_write_text(stem.with_suffix(".md"), md)
    print(md)


if __name__ == "__main__":
    main()
