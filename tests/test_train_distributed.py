"""``cas train`` under ``torchrun --standalone --nproc_per_node 2`` (gloo on the CPU, DistributedDataParallel)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from casprof.genotype import Genotype
from casprof.network import CASNetwork
from casprof.weights import load_weights
from tests._dist_support import one_rank_env
from tests._train_support import MINI19, genotype_file

#: One rank of a DistributedDataParallel run inside ``search.distributed.distributed``, in a fresh interpreter
#: (pytest's own has imported torch._dynamo long ago); prints the names of the process's threads after the command.
_ONE_RANK_DDP = """
import json, os, torch
from torch.nn.parallel import DistributedDataParallel
from search.distributed import distributed
with distributed("cpu") as ctx:
    assert ctx is not None and ctx.backend == "gloo"
    model = DistributedDataParallel(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)))
    model(torch.randn(2, 3, 8, 8)).sum().backward()
    del model
names = sorted(open(f"/proc/self/task/{t}/comm").read().strip() for t in os.listdir("/proc/self/task"))
print(json.dumps(names))
"""


def test_two_ranks_train_and_only_rank_0_writes(tmp_path: Path) -> None:
    g = genotype_file(tmp_path, MINI19)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200", "PYTHONFAULTHANDLER": "1"}  # an abort shows where
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


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts threads through Linux's /proc")
def test_a_ddp_command_ends_its_gloo_threads(tmp_path: Path) -> None:
    """After a command that built DistributedDataParallel, no gloo thread is left for the interpreter's exit.

    A group still alive at exit made `cas train` under torchrun abort now and then after it had
    finished (SIGABRT, "terminate called without an active exception"); see
    ``search.distributed._import_group_capturing_modules``.
    """
    env = {**os.environ, **one_rank_env(), "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-c", _ONE_RANK_DDP], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    threads = json.loads(done.stdout.strip().splitlines()[-1])
    assert threads, "no thread listed"
    assert [name for name in threads if "gloo" in name] == [], threads
