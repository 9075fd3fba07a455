"""ConfusionMatrix against hand-computed values, and its sum across real gloo ranks."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from search.metrics import ConfusionMatrix
from tests._dist_support import free_port

# Ground truth and prediction of a 2x6 image with 4 classes; 255 is ignored, class 3 appears nowhere.
TARGET = torch.tensor([[0, 0, 1, 1, 2, 255], [0, 1, 1, 2, 255, 255]])
PRED = torch.tensor([[0, 1, 1, 1, 2, 3], [0, 0, 1, 1, 0, 2]])
# Counted pixels (gt, pred): (0,0) x2, (0,1), (1,1) x3, (1,0), (2,2), (2,1) -> 9 pixels.
EXPECTED = torch.tensor([[2, 1, 0, 0], [1, 3, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0]])


def test_hand_computed_matrix() -> None:
    cm = ConfusionMatrix(4)
    cm.update(PRED, TARGET)
    assert cm.matrix.dtype == torch.int64
    assert torch.equal(cm.matrix, EXPECTED)
    # IoU = TP / (GT + pred - TP): class 0: 2/(3+3-2), class 1: 3/(4+5-3), class 2: 1/(2+1-1), class 3 undefined.
    iou = cm.iou()
    assert iou[:3] == pytest.approx([0.5, 0.5, 0.5]) and iou[3] is None
    assert cm.miou() == pytest.approx(0.5)
    assert cm.pixel_accuracy() == pytest.approx(6 / 9)
    assert cm.per_class(("a", "b", "c", "d")) == {"a": 0.5, "b": 0.5, "c": 0.5, "d": None}


def test_accumulates_batches_and_resets() -> None:
    cm = ConfusionMatrix(4)
    cm.update(PRED.unsqueeze(0), TARGET.unsqueeze(0))
    cm.update(torch.stack([PRED, PRED]), torch.stack([TARGET, TARGET]))
    assert torch.equal(cm.matrix, 3 * EXPECTED)
    cm.reset()
    assert int(cm.matrix.sum()) == 0 and math.isnan(cm.miou()) and math.isnan(cm.pixel_accuracy())


def test_predicted_but_absent_class_has_zero_iou() -> None:
    cm = ConfusionMatrix(3, ignore_index=9)
    cm.update(torch.tensor([2, 2, 0, 1]), torch.tensor([0, 9, 0, 1]))
    assert torch.equal(cm.matrix, torch.tensor([[1, 0, 1], [0, 1, 0], [0, 0, 0]]))
    assert cm.iou() == [0.5, 1.0, 0.0]  # class 2 was predicted once (on a counted pixel), never true
    assert cm.miou() == pytest.approx(0.5)


def test_bad_updates() -> None:
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match="shape"):
        cm.update(torch.zeros(2, 2), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="class ids"):
        cm.update(torch.tensor([0, 3]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="class ids"):
        cm.update(torch.tensor([0, 1]), torch.tensor([7, 1]))
    cm.update(torch.tensor([0, 1]), torch.tensor([255, 255]))  # all ignored: nothing counted
    assert int(cm.matrix.sum()) == 0
    cm.all_reduce_()  # outside torch.distributed: nothing happens
    assert int(cm.matrix.sum()) == 0


def _rank_main(rank: int, port: int, out: Path) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        cm = ConfusionMatrix(4)
        half = slice(0, 1) if rank == 0 else slice(1, 2)
        cm.update(PRED[half], TARGET[half])
        cm.all_reduce_()
        (out / f"rank{rank}.json").write_text(json.dumps(cm.matrix.tolist()))
    finally:
        dist.destroy_process_group()


def test_all_reduce_sums_the_ranks(tmp_path: Path) -> None:
    """Two real gloo ranks (forked: spawning would re-import torch for seconds) each count half the image."""
    mp.start_processes(_rank_main, args=(free_port(), tmp_path), nprocs=2, join=True, start_method="fork")
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert results[0] == results[1] == EXPECTED.tolist()
