"""A lambda sweep (paper Figure 5): one search per cost weight, then a table and a plot.

Layout of a sweep folder::

    <out>/sweep_settings.json   the shared settings (lambda aside) and the lambdas; written first
    <out>/lam<L>/               one ordinary, resumable search run per lambda (see search.run)
    <out>/sweep.json            one row per finished lambda; rewritten after each one
    <out>/sweep.md, sweep.png   the same table in Markdown, and the Figure-5 plot

An interrupted sweep continues with ``resume=True``: lambdas already in ``sweep.json`` are
skipped, a lambda whose run was cut short resumes from its checkpoint, the others start. The
mIoU in the table is what :func:`search.run.run_search` reports: the supernet's mIoU on a few
``search_val`` batches at the end of the search, not the mIoU of a trained derived network.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from casprof._io import atomic_write_json, atomic_write_text, check_output_folder, make_output_folder, read_json_file
from casprof.errors import UserInputError
from search.settings import SearchSettings

if TYPE_CHECKING:
    from search.distributed import DistContext
    from search.run import SearchProgress, SearchResult

SWEEP_SCHEMA_VERSION = 1
SETTINGS_FILE = "sweep_settings.json"
TABLE_FILE = "sweep.json"

#: Called with (lambda, progress) for every progress report of every search of the sweep.
SweepProgress = Callable[[float, "SearchProgress"], None]


@dataclass(frozen=True)
class SweepRow:
    """The outcome of one search of a sweep."""

    lambda_: float
    predicted_cost: float
    unit: str
    val_miou: float | None
    final_val_loss: float
    run_dir: str  # relative to the sweep folder
    target: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "lambda": self.lambda_,
            "predicted_cost": self.predicted_cost,
            "unit": self.unit,
            "val_miou": self.val_miou,
            "final_val_loss": self.final_val_loss,
            "run_dir": self.run_dir,
            "target": self.target,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: Path | None = None) -> SweepRow:
        where = f" {source}" if source is not None else ""
        try:
            return cls(
                lambda_=float(d["lambda"]),
                predicted_cost=float(d["predicted_cost"]),
                unit=str(d["unit"]),
                val_miou=None if d.get("val_miou") is None else float(d["val_miou"]),
                final_val_loss=float(d["final_val_loss"]),
                run_dir=str(d["run_dir"]),
                target=None if d.get("target") is None else float(d["target"]),
            )
        except (KeyError, TypeError, ValueError):
            raise UserInputError(f"A row of the sweep table{where} is malformed: {d!r}.") from None

    @classmethod
    def from_result(cls, lambda_: float, result: SearchResult, sweep_dir: Path) -> SweepRow:
        return cls(
            lambda_=lambda_,
            predicted_cost=result.predicted_cost,
            unit=result.unit,
            val_miou=result.val_miou,
            final_val_loss=result.final_val_loss,
            run_dir=str(Path(result.out_dir).relative_to(sweep_dir)),
            target=result.target,
        )


@dataclass(frozen=True)
class SweepResult:
    """A finished sweep: its rows (sorted by lambda) and the files written."""

    rows: tuple[SweepRow, ...]
    out_dir: Path
    skipped: tuple[float, ...]

    @property
    def json_path(self) -> Path:
        return self.out_dir / TABLE_FILE

    @property
    def md_path(self) -> Path:
        return self.out_dir / "sweep.md"

    @property
    def png_path(self) -> Path:
        return self.out_dir / "sweep.png"


def parse_lambdas(text: str) -> tuple[float, ...]:
    """Parse ``0,0.001,0.01`` into distinct, finite, non-negative lambdas (in the given order)."""
    values = []
    for part in str(text).split(","):
        part = part.strip()
        try:
            value = float(part)
        except ValueError:
            raise UserInputError(f"The lambda {part!r} is not a number; write the lambdas as e.g. 0,0.01,0.1.") from None
        if not math.isfinite(value) or value < 0:
            raise UserInputError(f"Every lambda must be a finite number >= 0, got {part}.")
        if value in values:
            raise UserInputError(f"The lambda {part} is listed twice.")
        values.append(value)
    return tuple(values)


def run_folder_name(lambda_: float) -> str:
    """The sub-folder of one lambda, e.g. ``lam0.01``."""
    return f"lam{lambda_:g}"


def _settings_record(base: SearchSettings, lambdas: Sequence[float]) -> dict[str, Any]:
    return {"schema_version": SWEEP_SCHEMA_VERSION, "lambdas": list(lambdas), "base": base.replace(lambda_=0.0).to_dict()}


def _check_folder(base: SearchSettings, out_dir: Path, resume: bool) -> dict[float, SweepRow]:
    """Refuse a folder that holds something else; on resume, return the rows already finished."""
    check_output_folder(out_dir)
    if not out_dir.exists() or not any(out_dir.iterdir()):
        if resume:
            raise UserInputError(f"There is no sweep to resume in {out_dir}.")
        return {}
    if not resume:
        raise UserInputError(f"The folder {out_dir} is not empty; pass --resume to continue its sweep or choose another --out.")
    record = read_json_file(out_dir / SETTINGS_FILE, "sweep settings")
    if not isinstance(record, dict) or not isinstance(record.get("base"), dict):
        raise UserInputError(f"The sweep settings in {out_dir} are malformed.")
    recorded = SearchSettings.from_dict(record["base"], out_dir / SETTINGS_FILE)
    difference = base.replace(lambda_=0.0).first_difference(recorded)
    if difference is not None:
        raise UserInputError(f"The sweep in {out_dir} was run with other settings ({difference}); choose another --out.")
    table = out_dir / TABLE_FILE
    if not table.exists():
        return {}
    raw = read_json_file(table, "sweep table")
    rows = raw.get("rows", []) if isinstance(raw, dict) else None
    if not isinstance(rows, list):
        raise UserInputError(f"The sweep table {table} is malformed: its rows must be a list.")
    return {r.lambda_: r for r in (SweepRow.from_dict(row, table) for row in rows)}


def sweep_markdown(rows: Sequence[SweepRow], base: SearchSettings) -> str:
    """The sweep table in Markdown, saying what each figure is."""
    unit = rows[0].unit if rows else ""
    lines = [
        f"# CAS lambda sweep ({base.metric}, profile `{base.profile}`)",
        "",
        f"Stage {base.stage.value}, dataset {base.dataset}, {base.iters} iterations per lambda, batch {base.batch_size}, "
        f"crop {base.crop[0]}x{base.crop[1]}, seed {base.seed}.",
        "Predicted cost: the derived network's cost from the profile (`casprof predict`), not a new measurement.",
        "Val mIoU: the supernet's mIoU on a few `search_val` batches at the end of the search "
        "(not a trained derived network).",
        "",
        f"| lambda | predicted cost ({unit}) | val mIoU (supernet) | final val loss | run |",
        "| ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        miou = "-" if r.val_miou is None else f"{100 * r.val_miou:.1f} %"
        lines.append(f"| {r.lambda_:g} | {r.predicted_cost:.6g} | {miou} | {r.final_val_loss:.4f} | `{r.run_dir}` |")
    return "\n".join(lines) + "\n"


def _write_outputs(rows: Sequence[SweepRow], base: SearchSettings, out_dir: Path) -> None:
    from search.plot import plot_sweep

    atomic_write_json(out_dir / TABLE_FILE, {
        "schema_version": SWEEP_SCHEMA_VERSION,
        "metric": base.metric,
        "profile": str(base.profile),
        "miou_source": "supernet on search_val at the end of each search",
        "rows": [r.to_dict() for r in rows],
    })
    atomic_write_text(out_dir / "sweep.md", sweep_markdown(rows, base))
    plot_sweep(list(rows), out_dir / "sweep.png")


def _validate(settings: SearchSettings, dist: DistContext | None) -> None:
    """Refuse bad settings (profile, metric, crop, data set and its folder) before the sweep writes anything."""
    from search.data import Split, Transform, build_dataset
    from search.run import prepare

    prepare(settings, dist)
    for split in (Split.SEARCH_TRAIN, Split.SEARCH_VAL):
        build_dataset(settings.dataset, split, root=settings.data_root, transform=Transform(crop=settings.crop), seed=settings.seed)


def run_sweep(
    base: SearchSettings,
    lambdas: Sequence[float],
    out_dir: Path,
    *,
    resume: bool = False,
    progress: SweepProgress | None = None,
    announce: Callable[[str], None] | None = None,
    dist: DistContext | None = None,
) -> SweepResult:
    """Run one search per lambda in ``out_dir/lam<L>`` and write the sweep table and plot.

    Args:
        base: the shared settings; its ``lambda_`` is replaced per run; ``target`` must be None
            (a budget adapts lambda, which would defeat the sweep).
        lambdas: distinct non-negative cost weights.
        resume: continue an interrupted sweep in ``out_dir`` (finished lambdas are skipped).
        progress: called with (lambda, progress) during each search.
        announce: called with a one-line message when a lambda starts, resumes or is skipped.
        dist: the torchrun context; every rank searches, only the main rank writes.

    Raises:
        UserInputError: no lambdas, a target, a folder holding something else, or a sweep
            folder made with other settings.
    """
    from search.distributed import barrier
    from search.run import run_search

    if not lambdas:
        raise UserInputError("Give at least one lambda.")
    if base.target is not None:
        raise UserInputError("A lambda sweep cannot take --target (a budget adapts lambda itself); drop one of them.")
    out_dir = Path(out_dir)
    is_main = dist is None or dist.is_main
    done = _check_folder(base, out_dir, resume)
    _validate(base.replace(lambda_=lambdas[0]), dist)
    started = {lam: (out_dir / run_folder_name(lam)).exists() for lam in lambdas}  # cut short earlier
    barrier(dist)  # every rank has looked at the folder before rank 0 writes into it
    say = announce or (lambda _msg: None)
    if is_main:
        make_output_folder(out_dir)
        atomic_write_json(out_dir / SETTINGS_FILE, _settings_record(base, lambdas))
    rows: dict[float, SweepRow] = {lam: done[lam] for lam in lambdas if lam in done}
    skipped = tuple(rows)
    for lam in lambdas:
        if lam in rows:
            say(f"lambda {lam:g}: finished earlier, skipped")
            continue
        run_dir = out_dir / run_folder_name(lam)
        # a run cut short resumes from its checkpoint (or from the start if it had none yet)
        say(f"lambda {lam:g}: {'resuming' if started[lam] else 'searching'} in {run_dir}")
        callback = None if progress is None else (lambda p, lam=lam: progress(lam, p))
        result = run_search(base.replace(lambda_=lam), run_dir, resume=started[lam], progress=callback, dist=dist)
        rows[lam] = SweepRow.from_result(lam, result, out_dir)
        if is_main:
            _write_outputs(sorted(rows.values(), key=lambda r: r.lambda_), base, out_dir)
    ordered = tuple(sorted((rows[lam] for lam in lambdas), key=lambda r: r.lambda_))
    if is_main:
        _write_outputs(ordered, base, out_dir)
    return SweepResult(ordered, out_dir, skipped)
