"""Cell pictures and the sweep plot: real PNG files, of a sensible size, that depend on their input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from casprof.genotype import random_genotype
from casprof.ops import CELL_TYPES
from search.plot import draw_cell, draw_cells, plot_sweep
from search.sweep import SweepRow, parse_lambdas, run_folder_name, sweep_markdown
from search.settings import SearchSettings
from tests.conftest import TINY


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG"
        return np.asarray(im.convert("RGB"))


def test_draw_cells_writes_one_png_per_cell_type(tmp_path: Path) -> None:
    paths = draw_cells(random_genotype(0, TINY), tmp_path / "cells")
    assert set(paths) == set(CELL_TYPES)
    sizes = {}
    for cell_type, path in paths.items():
        assert path == tmp_path / "cells" / f"{cell_type}.png"
        pixels = _pixels(path)
        h, w, _ = pixels.shape
        assert 200 <= h <= 2000 and 400 <= w <= 4000, (cell_type, w, h)
        assert pixels.std() > 10  # not a blank canvas
        sizes[cell_type] = w
    assert sizes["ms"] > sizes["normal"]  # 6 intermediate nodes are drawn wider than 3
    assert [p.name for p in (tmp_path / "cells").iterdir() if p.name.startswith(".")] == []  # no temporary left


def test_different_genotypes_give_different_pictures(tmp_path: Path) -> None:
    a, b = random_genotype(1, TINY), random_genotype(2, TINY)
    assert a.normal != b.normal
    draw_cell(a, "normal", tmp_path / "a.png")
    draw_cell(b, "normal", tmp_path / "b.png")
    draw_cell(a, "normal", tmp_path / "a2.png")
    pa, pb, pa2 = _pixels(tmp_path / "a.png"), _pixels(tmp_path / "b.png"), _pixels(tmp_path / "a2.png")
    assert pa.shape != pb.shape or not np.array_equal(pa, pb)
    assert np.array_equal(pa, pa2)  # deterministic


def test_draw_cell_refuses_an_unknown_cell_type(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown cell type"):
        draw_cell(random_genotype(0, TINY), "stem", tmp_path / "x.png")
    assert list(tmp_path.iterdir()) == []


def _rows(miou: bool = True) -> list[SweepRow]:
    return [
        SweepRow(lam, cost, "ms", (0.3 - lam / 10) if miou else None, 1.0 + lam, run_folder_name(lam))
        for lam, cost in ((0.0, 12.0), (0.01, 11.0), (0.1, 9.5), (1.0, 7.0))
    ]


@pytest.mark.parametrize("miou", [True, False])
def test_plot_sweep(tmp_path: Path, miou: bool) -> None:
    plot_sweep(_rows(miou), tmp_path / "sweep.png")
    pixels = _pixels(tmp_path / "sweep.png")
    assert pixels.shape[0] >= 300 and pixels.shape[1] >= 500 and pixels.std() > 10


def test_plot_sweep_depends_on_the_rows(tmp_path: Path) -> None:
    rows = _rows()
    plot_sweep(rows, tmp_path / "a.png")
    plot_sweep([SweepRow(r.lambda_, r.predicted_cost * (2 if r.lambda_ else 1), r.unit, r.val_miou, r.final_val_loss, r.run_dir)
                for r in rows], tmp_path / "b.png")
    assert not np.array_equal(_pixels(tmp_path / "a.png"), _pixels(tmp_path / "b.png"))
    with pytest.raises(ValueError):
        plot_sweep([], tmp_path / "c.png")


def test_sweep_row_round_trip_and_markdown() -> None:
    rows = _rows()
    assert [SweepRow.from_dict(r.to_dict()) for r in rows] == rows
    md = sweep_markdown(rows, SearchSettings(profile=Path("p.json"), iters=7))
    assert md.count("\n| ") == 2 + len(rows) and "| 0.01 | 11 |" in md and "supernet" in md
    assert "7 iterations per lambda" in md


@pytest.mark.parametrize(
    "text, expected",
    [("0,0.001,0.01,0.1", (0.0, 0.001, 0.01, 0.1)), ("1", (1.0,)), (" 0.5 , 2 ", (0.5, 2.0)), ("1e-3,0", (0.001, 0.0))],
)
def test_parse_lambdas(text: str, expected: tuple[float, ...]) -> None:
    assert parse_lambdas(text) == expected


@pytest.mark.parametrize(
    "text, message",
    [("0,abc", "'abc' is not a number"), ("0,-1", ">= 0"), ("0,inf", ">= 0"), ("0.1,0.1", "listed twice"), ("", "not a number")],
)
def test_parse_lambdas_refuses(text: str, message: str) -> None:
    from casprof.errors import UserInputError

    with pytest.raises(UserInputError, match=message.replace("(", r"\(")):
        parse_lambdas(text)
