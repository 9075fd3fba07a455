"""The report of ``cas eval``: JSON (``miou``, ``per_class_iou``, ...), Markdown, and a PNG of predictions."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from casprof._io import atomic_write_bytes, atomic_write_text
from train.evaluate import EvalResult, Example
from train.palette import colourize, palette


def eval_markdown(result: EvalResult) -> str:
    """The report as Markdown: what was measured and how, mIoU, pixel accuracy, per-class IoU."""
    d = result.to_dict()
    res = "full size" if d["resolution"] == "full" else "x".join(map(str, d["resolution"]))
    lines = [
        f"# Segmentation accuracy: {d['dataset']} {d['split']}",
        "",
        f"- weights: {result.weights.describe()}",
        f"- genotype: `{d['genotype']}` (network fingerprint `{d['network_fingerprint']}`)",
        f"- images: {d['num_images']} ({d['labelled_pixels']} labelled pixels), network input: {res}",
        f"- how: {d['label_treatment']}",
        "",
        f"**mIoU {100 * result.miou:.2f} %**, pixel accuracy {100 * result.pixel_accuracy:.2f} %",
        "",
        "| class | IoU % |",
        "| --- | ---: |",
    ]
    for name, iou in result.per_class_iou.items():
        lines.append(f"| {name} | {'n/a (absent)' if iou is None else f'{100 * iou:.2f}'} |")
    return "\n".join(lines) + "\n"


def _denormalize(image: Any, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    x = image.numpy().transpose(1, 2, 0) * np.array(std) + np.array(mean)
    if x.max() > 1.5:  # mean/std given in 0..255 units
        x = x / 255.0
    return np.clip(x, 0.0, 1.0)


def predictions_png(examples: list[Example], dataset: str, info: Any) -> bytes:
    """A PNG with one row per example: image, label, prediction (the dataset's palette; ignore is black)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    table = palette(dataset, info.num_classes)
    rows = max(1, len(examples))
    fig = Figure(figsize=(9, 1.7 * rows + 0.4))
    axes = fig.subplots(rows, 3, squeeze=False)
    for r, ex in enumerate(examples):
        pictures = (_denormalize(ex.image, info.mean, info.std), colourize(ex.label.numpy(), table),
                    colourize(ex.prediction.numpy(), table))
        for c, (pic, title) in enumerate(zip(pictures, ("image", "label", "prediction"))):
            axes[r][c].imshow(pic, interpolation="nearest")
            axes[r][c].set_axis_off()
            if r == 0:
                axes[r][c].set_title(title)
    if not examples:
        for ax in axes[0]:
            ax.set_axis_off()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def report_paths(path: Path) -> tuple[Path, Path, Path]:
    """The JSON, Markdown and PNG files of a report written to ``path``."""
    path = Path(path)
    return path, path.with_suffix(".md"), path.with_suffix(".png")


def write_eval_report(result: EvalResult, path: Path, examples: list[Example], info: Any) -> None:
    """Write the JSON report to ``path`` and the Markdown and PNG beside it (atomically; the PNG first)."""
    json_path, md_path, png_path = report_paths(path)
    png = predictions_png(examples, result.settings.dataset, info)
    atomic_write_bytes(png_path, png)
    atomic_write_text(md_path, eval_markdown(result))
    atomic_write_text(json_path, json.dumps(result.to_dict(), indent=2) + "\n")
