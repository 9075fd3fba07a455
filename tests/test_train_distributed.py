"""``cas train`` under ``torchrun --standalone --nproc_per_node 2`` (gloo on the CPU, DistributedDataParallel)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from casprof.genotype import Genotype
from casprof.network import CASNetwork
from casprof.weights import load_weights
from tests._train_support import MINI19, genotype_file


def test_two_ranks_train_and_only_rank_0_writes(tmp_path: Path) -> None:
    g = genotype_file(tmp_path, MINI19)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "cas",
               "train", "-g", str(g), "--out", "run", "--iters", "2", "--batch-size", "4", "--crop", "32x64",
               "--eval-every", "1", "--eval-limit", "3", "--log-every", "1"]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("best validation mIoU") == 1  # only rank 0 reports
    run = tmp_path / "run"
    assert sorted(p.name for p in run.iterdir()) == [
        "best.pt", "checkpoint.pt", "genotype.json", "last.pt", "log.jsonl", "result.json", "settings.json"]
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records if "loss" in r] == [1, 2]  # written once, not once per rank
    assert [r["iteration"] for r in records if "val_miou" in r] == [1, 2]
    net = CASNetwork.from_genotype(Genotype.load(g))
    load_weights(net, run / "last.pt")  # plain state_dict, no "module." prefix
    assert torch.load(run / "checkpoint.pt", weights_only=True)["iteration"] == 2
