"""Segmentation accuracy of a network: mIoU and per-class IoU with the ignore label (``cas eval``).

Resolution and labels follow the usual practice of real-time segmentation papers (ICNet,
BiSeNet, and CAS, which evaluates Cityscapes at 768x1536): the image is resized bilinearly to the
evaluation resolution, the network's logits are upsampled bilinearly back to the label's full
size, and the argmax is compared with the untouched full-resolution label. Pixels labelled
255 (ignore) are not counted. Without a resolution the network sees each image at full size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from casprof.config import NetworkConfig
from casprof.errors import UserInputError
from casprof.genotype import Genotype
from casprof.network import CASNetwork
from casprof.weights import WeightsInfo, load_weights
from casprof.devices import torch_device
from train.settings import EvalSettings

LABEL_TREATMENT = (
    "images resized bilinearly to the evaluation resolution; logits upsampled bilinearly to the label's full size; "
    "labels untouched; ignore label 255 not counted"
)


@dataclass(frozen=True)
class Example:
    """One image with its label and prediction, for the report's picture (CPU tensors)."""

    image: torch.Tensor  # float [3, H, W], normalized as the dataset gives it
    label: torch.Tensor  # int64 [H, W]
    prediction: torch.Tensor  # int64 [H, W]


@dataclass
class Evaluation:
    """The confusion matrix of a pass over a split, and a few examples."""

    confusion: Any  # search.metrics.ConfusionMatrix
    num_images: int
    examples: list[Example] = field(default_factory=list)


def _items(dataset: Any, indices: list[int], batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches of consecutive items; items of different sizes go in separate batches."""
    pending: list[tuple[torch.Tensor, torch.Tensor]] = []
    for index in indices:
        image, label = dataset[index]
        if pending and (len(pending) == batch_size or pending[0][1].shape != label.shape):
            yield torch.stack([p[0] for p in pending]), torch.stack([p[1] for p in pending])
            pending = []
        pending.append((image, label))
    if pending:
        yield torch.stack([p[0] for p in pending]), torch.stack([p[1] for p in pending])


@torch.no_grad()
def predict(model: torch.nn.Module, images: torch.Tensor, resolution: tuple[int, int] | None) -> torch.Tensor:
    """Class ids ``[B, H, W]`` at the images' size, the network run at ``resolution`` (or full size)."""
    size = images.shape[-2:]
    x = images if resolution is None else F.interpolate(images, size=resolution, mode="bilinear", align_corners=False)
    logits = model(x)
    if logits.shape[-2:] != size:
        logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
    return logits.argmax(1)


def evaluate_model(
    model: torch.nn.Module,
    dataset: Any,
    config: NetworkConfig,
    *,
    resolution: tuple[int, int] | None = None,
    device: torch.device = torch.device("cpu"),
    batch_size: int = 1,
    limit: int | None = None,
    keep_examples: int = 0,
    dist: Any = None,
    progress: Callable[[int, int], None] | None = None,
) -> Evaluation:
    """Run ``model`` (put in eval mode) over ``dataset``; under torchrun each rank takes every world_size-th image.

    The confusion matrix is summed across ranks; examples come from this rank's first images.
    """
    from search.data import IGNORE_INDEX
    from search.metrics import ConfusionMatrix

    if resolution is not None:
        config.check_resolution(*resolution)
    total = len(dataset) if limit is None else min(limit, len(dataset))
    rank, world = (0, 1) if dist is None else (dist.rank, dist.world_size)
    indices = list(range(rank, total, world))
    confusion = ConfusionMatrix(config.num_classes, ignore_index=IGNORE_INDEX)
    examples: list[Example] = []
    model.eval()
    done = 0
    for images, labels in _items(dataset, indices, batch_size):
        if resolution is None and done == 0:
            try:
                config.check_resolution(*images.shape[-2:])
            except UserInputError as exc:
                raise UserInputError(f"{str(exc)[:-1]} at full size; pass an evaluation resolution.") from None
        pred = predict(model, images.to(device), resolution).cpu()
        confusion.update(pred, labels)
        for i in range(min(keep_examples - len(examples), len(images))):
            examples.append(Example(images[i].cpu(), labels[i].cpu(), pred[i]))
        done += len(images)
        if progress is not None:
            progress(done, len(indices))
    if dist is not None:
        confusion.all_reduce_(dist)
    return Evaluation(confusion=confusion, num_images=total, examples=examples)


@dataclass(frozen=True)
class EvalResult:
    """mIoU, per-class IoU and pixel accuracy of weights on a split, with how they were measured."""

    settings: EvalSettings
    class_names: tuple[str, ...]
    miou: float
    per_class_iou: dict[str, float | None]
    pixel_accuracy: float
    num_images: int
    labelled_pixels: int
    weights: WeightsInfo
    network_fingerprint: str
    confusion_matrix: list[list[int]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "miou": self.miou,
            "per_class_iou": self.per_class_iou,
            "pixel_accuracy": self.pixel_accuracy,
            "dataset": self.settings.dataset,
            "split": self.settings.split.value,
            "resolution": "full" if self.settings.resolution is None else list(self.settings.resolution),
            "label_treatment": LABEL_TREATMENT,
            "num_images": self.num_images,
            "labelled_pixels": self.labelled_pixels,
            "weights": self.weights.to_dict(),
            "genotype": str(self.settings.genotype),
            "network_fingerprint": self.network_fingerprint,
            "settings": self.settings.to_dict(),
            "confusion_matrix": self.confusion_matrix,
        }


def build_model(genotype: Genotype, weights: Path, device: torch.device) -> tuple[CASNetwork, WeightsInfo]:
    """The derived network of ``genotype`` with ``weights`` loaded (a mismatch names the first bad tensor)."""
    model = CASNetwork.from_genotype(genotype)
    info = load_weights(model, weights)
    return model.to(device).eval(), info


def check_classes(genotype: Genotype, dataset: str, num_classes: int) -> None:
    if num_classes != genotype.network.num_classes:
        raise UserInputError(
            f"The dataset {dataset} has {num_classes} classes but the genotype's network predicts "
            f"{genotype.network.num_classes}."
        )


def run_eval(
    settings: EvalSettings,
    *,
    report: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> EvalResult:
    """Evaluate ``settings.weights`` on a split; with ``report``, write its JSON, Markdown and PNG.

    Everything is checked (genotype, dataset, classes, weights, resolution) before anything runs
    or is written.
    """
    from search.data import build_dataset, dataset_info

    from train.report import write_eval_report

    genotype = Genotype.load(settings.genotype)
    info = dataset_info(settings.dataset)
    check_classes(genotype, settings.dataset, info.num_classes)
    if report is not None:
        from casprof._io import ensure_parent_exists

        if Path(report).suffix != ".json":
            raise UserInputError(f"The report path {report} must end in .json (the .md and .png are written beside it).")
        ensure_parent_exists(Path(report))
    dataset = build_dataset(settings.dataset, settings.split.value, root=settings.data_root)
    device = torch_device(settings.device)
    model, weights = build_model(genotype, settings.weights, device)
    evaluation = evaluate_model(
        model, dataset, genotype.network, resolution=settings.resolution, device=device,
        batch_size=settings.batch_size, limit=settings.limit, keep_examples=settings.examples, progress=progress,
    )
    confusion = evaluation.confusion
    labelled = int(confusion.matrix.sum())
    if labelled == 0:
        raise UserInputError(
            f"The {settings.split.value} split of {settings.dataset} has no labelled pixels (its labels may be withheld)."
        )
    iou = confusion.iou()
    result = EvalResult(
        settings=settings,
        class_names=tuple(info.class_names),
        miou=float(confusion.miou()),
        per_class_iou={name: (None if v is None else float(v)) for name, v in zip(info.class_names, iou)},
        pixel_accuracy=float(confusion.pixel_accuracy()),
        num_images=evaluation.num_images,
        labelled_pixels=labelled,
        weights=weights,
        network_fingerprint=genotype.network.fingerprint(),
        confusion_matrix=confusion.matrix.tolist(),
    )
    if report is not None:
        write_eval_report(result, Path(report), evaluation.examples, info)
    return result
