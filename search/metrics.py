"""Segmentation metrics from a confusion matrix: per-class IoU, mean IoU, pixel accuracy.

Rows of the matrix are ground truth, columns prediction; pixels labelled ``ignore_index`` are
left out. Under ``torch.distributed`` every rank accumulates its own pixels and
:meth:`ConfusionMatrix.all_reduce_` sums the matrices, so every rank then reports the same
numbers for the whole evaluation set.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # pragma: no cover
    from search.distributed import DistContext


class ConfusionMatrix:
    """Accumulates a [C, C] int64 confusion matrix (kept on the CPU) over batches."""

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, not {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self._matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    @property
    def matrix(self) -> torch.Tensor:
        """The int64 [C, C] counts: ``matrix[g, p]`` pixels of ground truth g predicted as p."""
        return self._matrix

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Count a batch: ``pred`` holds class ids (argmax already taken), same shape as ``target``."""
        if pred.shape != target.shape:
            raise ValueError(f"prediction shape {tuple(pred.shape)} differs from target shape {tuple(target.shape)}")
        c = self.num_classes
        target = target.reshape(-1).long()
        pred = pred.reshape(-1).long()
        keep = target != self.ignore_index
        target, pred = target[keep], pred[keep]
        if target.numel() == 0:
            return
        low = torch.minimum(target.min(), pred.min())
        high = torch.maximum(target.max(), pred.max())
        if int(low) < 0 or int(high) >= c:
            raise ValueError(f"class ids must lie in [0, {c}) or be the ignore index {self.ignore_index}")
        counts = torch.bincount(target * c + pred, minlength=c * c)
        self._matrix += counts.reshape(c, c).to(device="cpu", dtype=torch.int64)

    def reset(self) -> None:
        self._matrix.zero_()

    def all_reduce_(self, ctx: DistContext | None = None) -> None:
        """Sum the matrices of all ranks in place (nothing to do outside ``torch.distributed``)."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return
        if ctx is not None:
            device = ctx.device
        elif dist.get_backend() == "nccl":
            device = torch.device("cuda", torch.cuda.current_device())
        else:
            device = torch.device("cpu")
        total = self._matrix.to(device)
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        self._matrix = total.cpu()

    def iou(self) -> list[float | None]:
        """Intersection over union per class; ``None`` where a class is in neither GT nor prediction."""
        m = self._matrix.double()
        hits = m.diagonal()
        union = m.sum(0) + m.sum(1) - hits
        return [None if u == 0 else float(h / u) for h, u in zip(hits.tolist(), union.tolist())]

    def miou(self) -> float:
        """Mean IoU over the classes whose IoU is defined (NaN when nothing was counted)."""
        defined = [v for v in self.iou() if v is not None]
        return sum(defined) / len(defined) if defined else math.nan

    def pixel_accuracy(self) -> float:
        """Correctly labelled pixels over counted pixels (NaN when nothing was counted)."""
        total = int(self._matrix.sum())
        return int(self._matrix.diagonal().sum()) / total if total else math.nan

    def per_class(self, class_names: tuple[str, ...] | list[str]) -> dict[str, float | None]:
        """``iou()`` keyed by class name (for reports)."""
        if len(class_names) != self.num_classes:
            raise ValueError(f"{len(class_names)} class names for {self.num_classes} classes")
        return dict(zip(class_names, self.iou()))
