"""Pictures of a search: derived cells (paper Figure 4 style) and the lambda sweep (Figure 5).

Everything is drawn on a :class:`matplotlib.figure.Figure` rendered by the Agg canvas, never
through ``pyplot``'s global state, so importing this module selects no backend and opens no
window. Every PNG is written atomically.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from casprof._io import atomic_write_bytes
from casprof.genotype import Genotype
from casprof.ops import CELL_TYPES

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from search.sweep import SweepRow

#: Resolution of every PNG written here.
DPI = 110

_INPUT_LABELS = {
    "normal": ("c_{k-2}", "c_{k-1}"),
    "reduce": ("c_{k-2}", "c_{k-1}"),
    "ms": ("low\n(2nd normal cell)", "high\n(last cell)"),
}
_OUTPUT_LABELS = {"normal": "c_{k}\n(concat)", "reduce": "c_{k}\n(concat)", "ms": "concat\n→ classifier"}
_COLOURS = {"input": "#9ecae1", "node": "#fdd49e", "output": "#a1d99b"}
_DX = 2.6  # horizontal distance between node columns (data units)
_INCH = 0.75  # inches per data unit


@dataclass(frozen=True)
class _Placed:
    """A node of the drawing: its label, kind and position."""

    label: str
    kind: str
    x: float
    y: float


def _layout(genotype: Genotype, cell_type: str) -> list[_Placed]:
    """Inputs stacked on the left, intermediate nodes left to right in a zig-zag, output on the right."""
    n = len(genotype.cell(cell_type))
    placed = [
        _Placed(_INPUT_LABELS[cell_type][0], "input", 0.0, 1.6),
        _Placed(_INPUT_LABELS[cell_type][1], "input", 0.0, -1.6),
    ]
    placed += [_Placed(str(j), "node", _DX * (j + 1), 0.9 if j % 2 == 0 else -0.9) for j in range(n)]
    placed.append(_Placed(_OUTPUT_LABELS[cell_type], "output", _DX * (n + 1) + 0.4, 0.0))
    return placed


def _box(ax: Axes, p: _Placed) -> None:
    ax.text(
        p.x, p.y, p.label, ha="center", va="center", fontsize=9, zorder=3,
        bbox={"boxstyle": "round,pad=0.4", "facecolor": _COLOURS[p.kind], "edgecolor": "#444444"},
    )


def _arrow(ax: Axes, a: _Placed, b: _Placed, rad: float, label: str | None) -> None:
    ax.annotate(
        "", xy=(b.x, b.y), xytext=(a.x, a.y), zorder=1,
        arrowprops={"arrowstyle": "-|>", "color": "#555555" if label else "#bbbbbb", "lw": 1.1,
                    "shrinkA": 14, "shrinkB": 14, "connectionstyle": f"arc3,rad={rad}"},
    )
    if label:
        # midpoint of matplotlib's arc3 quadratic Bezier; its tangent there is parallel to the chord
        # (the axes have equal aspect, so data directions are display directions)
        dx, dy = b.x - a.x, b.y - a.y
        mx, my = (a.x + b.x) / 2 + rad * dy / 2, (a.y + b.y) / 2 - rad * dx / 2
        angle = math.degrees(math.atan2(dy, dx))
        angle = angle - 180 if angle > 90 else angle + 180 if angle < -90 else angle
        ax.text(mx, my, label, ha="center", va="center", fontsize=7, zorder=2, rotation=angle,
                rotation_mode="anchor",
                bbox={"boxstyle": "round,pad=0.1", "facecolor": "white", "edgecolor": "none", "alpha": 0.85})


def _rad(a: _Placed, b: _Placed) -> float:
    """Bow an edge that skips columns so it does not run through the nodes between."""
    columns = round((b.x - a.x) / _DX)
    if columns <= 1:
        return 0.0
    return (0.12 + 0.04 * columns) * (1 if a.y >= b.y else -1)


def _cell_figure(genotype: Genotype, cell_type: str) -> Figure:
    from matplotlib.figure import Figure

    placed = _layout(genotype, cell_type)
    xs = [p.x for p in placed]
    x0, x1, y0, y1 = min(xs) - 1.3, max(xs) + 1.3, -3.2, 3.2
    fig = Figure(figsize=((x1 - x0) * _INCH, (y1 - y0) * _INCH + 0.4))
    ax = fig.add_axes((0.0, 0.0, 1.0, (y1 - y0) * _INCH / ((y1 - y0) * _INCH + 0.4)))
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_aspect("equal")
    ax.axis("off")
    cell = genotype.cell(cell_type)
    for j, node in enumerate(cell):
        for op, i in node:
            a, b = placed[i], placed[2 + j]
            _arrow(ax, a, b, _rad(a, b), op)
    for j in range(len(cell)):
        _arrow(ax, placed[2 + j], placed[-1], _rad(placed[2 + j], placed[-1]) / 2, None)
    for p in placed:
        _box(ax, p)
    title = f"{cell_type} cell"
    record = genotype.search
    if record.method == "cas" and record.metric is not None and record.lambda_ is not None:
        title += f"  (CAS search: {record.metric}, λ={record.lambda_:g})"
    fig.suptitle(title, fontsize=10)
    return fig


def _write_png(fig: Figure, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    atomic_write_bytes(Path(path), buf.getvalue())


def draw_cell(genotype: Genotype, cell_type: str, path: Path) -> None:
    """Draw ``genotype``'s derived ``cell_type`` cell as a PNG: inputs, nodes, labelled edges, output.

    Raises:
        ValueError: ``cell_type`` is not one of ``normal``, ``reduce``, ``ms``.
    """
    if cell_type not in CELL_TYPES:
        raise ValueError(f"unknown cell type {cell_type!r}; expected one of {', '.join(CELL_TYPES)}")
    _write_png(_cell_figure(genotype, cell_type), path)


def draw_cells(genotype: Genotype, folder: Path) -> dict[str, Path]:
    """Draw every cell type into ``folder/<cell_type>.png`` (the folder is created); returns the paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for cell_type in CELL_TYPES:
        path = folder / f"{cell_type}.png"
        draw_cell(genotype, cell_type, path)
        paths[cell_type] = path
    return paths


def _symlog_threshold(lambdas: Sequence[float]) -> float | None:
    """The linear range of a symmetric-log lambda axis (lambda 0 must fit), or None for a linear axis."""
    positive = [x for x in lambdas if x > 0]
    if not positive:
        return None
    return 10 ** math.floor(math.log10(min(positive) / (2 if 0 in lambdas else 1)))


def plot_sweep(rows: Sequence[SweepRow], path: Path) -> None:
    """The paper's Figure 5: the derived network's predicted cost and the validation mIoU against lambda.

    The mIoU is whatever :class:`search.run.SearchResult` reports (the supernet's mIoU on
    ``search_val`` at the end of each search); rows without it are left out of that curve.
    """
    from matplotlib.figure import Figure

    if not rows:
        raise ValueError("plot_sweep needs at least one row")
    rows = sorted(rows, key=lambda r: r.lambda_)
    xs = [r.lambda_ for r in rows]
    linthresh = _symlog_threshold(xs)
    unit = rows[0].unit
    fig = Figure(figsize=(6.4, 4.0))
    ax = fig.add_subplot()
    if linthresh is not None:
        ax.set_xscale("symlog", linthresh=linthresh)
    ax.plot(xs, [r.predicted_cost for r in rows], "o-", color="#1f77b4", label=f"predicted cost ({unit})")
    targets = {r.target for r in rows if r.target is not None}
    for t in sorted(targets):
        ax.axhline(t, color="#1f77b4", ls=":", lw=1, label=f"target {t:g} {unit}")
    ax.set_xlabel("λ (cost weight)")
    ax.set_ylabel(f"predicted cost of the derived network ({unit})", color="#1f77b4")
    ax.grid(True, alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    with_miou = [(x, r.val_miou) for x, r in zip(xs, rows) if r.val_miou is not None]
    if with_miou:
        ax2 = ax.twinx()
        ax2.plot([x for x, _ in with_miou], [100 * m for _, m in with_miou], "s--", color="#d62728",
                 label="val mIoU % (supernet, search_val)")
        ax2.set_ylabel("validation mIoU (%)", color="#d62728")
        h2, l2 = ax2.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    ax.legend(handles, labels, loc="best", fontsize=8)
    ax.set_title("Cost/accuracy trade-off of the CAS search (cf. paper Figure 5)", fontsize=10)
    fig.tight_layout()
    _write_png(fig, path)
