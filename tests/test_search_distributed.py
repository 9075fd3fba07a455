"""A data-parallel search under torchrun (2 CPU processes, gloo): the alphas stay identical across ranks.

The test launches this very file as the torchrun entry (``python -m torch.distributed.run
--standalone --nproc_per_node 2 -m tests.test_search_distributed PROFILE OUT``). Each rank runs
:func:`search.run.run_search` on a tiny network and dumps its own architecture weights, weights
checksum and training losses; the test then compares the ranks with each other and with rank 0's
checkpoint.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests._dist_support import one_rank_env

ITERS = 3


def _entry(profile: Path, out: Path) -> None:
    """One rank: a 3-iteration search; record the supernet it built, then dump its state."""
    import torch

    import search.run as run_module
    from search.distributed import init_distributed
    from search.settings import SearchSettings
    from search.supernet import Supernet

    built: list[Supernet] = []
    initial: dict[str, list] = {}

    class RecordingSupernet(Supernet):  # the real supernet; it only remembers itself and its initial alphas
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            built.append(self)
            initial.update({n: p.detach().double().tolist() for n, p in self.named_parameters() if n.startswith("alpha_")})

    run_module.Supernet = RecordingSupernet  # type: ignore[misc]
    ctx = init_distributed("cpu")
    assert ctx is not None and ctx.world_size == 2
    settings = SearchSettings(profile=profile, iters=ITERS, batch_size=4, crop=(32, 64), log_every=1, checkpoint_every=ITERS,
                              lambda_=0.5)
    losses: list[float] = []
    result = run_module.run_search(settings, out / "run", progress=lambda p: losses.append(p.train_loss), dist=ctx)
    model = built[-1]
    alphas = {name: p.detach().double().tolist() for name, p in model.named_parameters() if name.startswith("alpha_")}
    weights = [p.detach().double() for p in model.weight_parameters()]
    dump = {
        "rank": ctx.rank,
        "alphas": alphas,
        "initial_alphas": initial,
        "weights_checksum": float(sum(w.sum() for w in weights)),
        "weights_abs_checksum": float(sum(w.abs().sum() for w in weights)),
        "train_losses": losses,
        "genotype": result.genotype.to_dict(),
    }
    (out / f"rank{ctx.rank}.json").write_text(json.dumps(dump))
    torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_alphas_identical_across_ranks(tmp_path: Path) -> None:
    import torch

    from tests._search_support import write_profile

    profile = write_profile(tmp_path / "mini19.json")
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "tests.test_search_distributed", str(profile), str(out)]
    done = subprocess.run(cmd, cwd=Path(__file__).resolve().parents[1], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]

    # the ranks trained on different data (disjoint samples) ...
    assert len(ranks[0]["train_losses"]) == ITERS
    assert ranks[0]["train_losses"] != ranks[1]["train_losses"]
    # ... yet their architecture weights and network weights are identical, and the alphas moved
    assert set(ranks[0]["alphas"]) == {"alpha_normal", "alpha_reduce", "alpha_ms"}
    assert ranks[0]["alphas"] == ranks[1]["alphas"]
    assert ranks[0]["alphas"] != ranks[0]["initial_alphas"]
    assert ranks[0]["weights_checksum"] == ranks[1]["weights_checksum"]
    assert ranks[0]["weights_abs_checksum"] == ranks[1]["weights_abs_checksum"]
    assert ranks[0]["genotype"] == ranks[1]["genotype"]

    # only rank 0 wrote the run folder, and its checkpoint holds the same alphas
    run = out / "run"
    checkpoint = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)
    for name, value in ranks[0]["alphas"].items():
        assert torch.equal(checkpoint["model"][name].double(), torch.tensor(value, dtype=torch.float64))
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [row["iteration"] for row in log] == list(range(1, ITERS + 1))  # one line per iteration, not one per rank
    assert json.loads((run / "genotype.json").read_text())["normal"] == ranks[0]["genotype"]["normal"]


if __name__ == "__main__":
    _entry(Path(sys.argv[1]), Path(sys.argv[2]))


def _one_rank_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in one_rank_env().items():
        monkeypatch.setenv(key, value)


def test_distributed_leaves_the_group_after_a_command(monkeypatch: pytest.MonkeyPatch) -> None:
    """`cas train`/`cas search` hold the process group for the command only: destroyed at its end, and after an error."""
    import torch
    import torch.distributed as dist

    from search.distributed import distributed

    _one_rank_env(monkeypatch)
    with distributed("cpu") as ctx:
        assert ctx is not None and ctx.backend == "gloo" and dist.is_initialized()
        t = torch.ones(3)
        dist.all_reduce(t)
        assert t.tolist() == [1.0, 1.0, 1.0]
    assert not dist.is_initialized()

    _one_rank_env(monkeypatch)
    with pytest.raises(RuntimeError, match="boom"):
        with distributed("cpu"):
            raise RuntimeError("boom")
    assert not dist.is_initialized()


def test_distributed_outside_torchrun_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch.distributed as dist

    from search.distributed import distributed

    for key in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(key, raising=False)
    with distributed("cpu") as ctx:
        assert ctx is None
    assert not dist.is_initialized()
