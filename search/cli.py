"""``cas search`` and ``cas search sweep``: thin commands over :func:`search.run.run_search` and
:func:`search.sweep.run_sweep`.

Both commands take the same options (the ``Annotated`` aliases below); they parse them into a
:class:`search.settings.SearchSettings`, show a rich progress bar on stderr and print a short
summary on stdout. Under ``torchrun`` every rank searches and only rank 0 draws and writes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from rich.text import Text

from casprof.cli._app import err_console, make_app
from casprof.cli._options import SeedOpt
from casprof.config import parse_size
from casprof.errors import UserInputError
from casprof.profile import Metric
from search.settings import DEFAULT_ARCH_LR, DEFAULT_LAMBDA, ArchOrder, CostSupport, SearchSettings, Stage

if TYPE_CHECKING:
    from rich.progress import Progress

    from search.run import SearchProgress, SearchResult
    from search.sweep import SweepResult

app = make_app("search", "Cost-constrained architecture search (CAS): one search, or a lambda sweep.")

_DEFAULTS = SearchSettings(profile=Path("profile.json"))

# --- options shared by `cas search` and `cas search sweep` --------------------------------
OptionalProfileOpt = Annotated[
    Optional[Path], typer.Option("--profile", "-p", help="A cost profile (JSON); it decides the network.", show_default=False)
]
MetricOpt = Annotated[Metric, typer.Option("--metric", "-m", help="The cost the search penalises.")]
TargetOpt = Annotated[
    Optional[str],
    typer.Option(
        "--target",
        help="A budget that adapts lambda: 8ms (or 8) for latency_ms, 1.2M for params, 3.5G for macs.",
        show_default=False,
    ),
]
StageOpt = Annotated[Stage, typer.Option("--stage", help="Cells to search: backbone (normal+reduce), ms, or joint.")]
BackboneOpt = Annotated[
    Optional[Path],
    typer.Option("--backbone", help="A genotype.json whose normal/reduce cells are kept fixed (--stage ms).", show_default=False),
]
DatasetOpt = Annotated[str, typer.Option("--dataset", help="synthetic (built in), cityscapes or camvid.")]
DataRootOpt = Annotated[
    Optional[Path], typer.Option("--data-root", help="The data set's folder (cityscapes, camvid).", show_default=False)
]
ItersOpt = Annotated[int, typer.Option("--iters", help="Search iterations (paper: 15000).")]
BatchOpt = Annotated[int, typer.Option("--batch-size", help="Images per batch, over all torchrun ranks (paper: 16).")]
CropOpt = Annotated[str, typer.Option("--crop", help="Training crop HxW, divisible by the network's total stride.")]
OrderOpt = Annotated[ArchOrder, typer.Option("--order", help="Architecture gradient: first order, or second (unrolled, Eq. 7).")]
CostSupportOpt = Annotated[
    CostSupport,
    typer.Option("--cost-over", help="Expected cost of the edges the derivation keeps (default), of every edge over the derivable operations, or over all incl. none (Eq. 5 literally)."),
]
ArchLrOpt = Annotated[float, typer.Option("--arch-lr", help="Adam learning rate of the architecture weights.")]
LrOpt = Annotated[float, typer.Option("--lr", help="SGD learning rate of the weights (poly decay, power 0.9).")]
CheckpointOpt = Annotated[int, typer.Option("--checkpoint-every", help="Iterations between checkpoints.")]
LogEveryOpt = Annotated[int, typer.Option("--log-every", help="Iterations between log.jsonl lines (alpha snapshots are written with each checkpoint).")]
RunDeviceOpt = Annotated[str, typer.Option("--device", help="cpu or cuda[:N] (under torchrun: each rank's local GPU).")]
ResumeFlag = Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its checkpoint.")]

_LATENCY_UNITS = {"ms": 1.0, "s": 1000.0, "us": 1e-3}
_COUNT_UNITS = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}
_TARGET_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([a-z]*)\s*$", re.IGNORECASE)


def parse_target(text: str, metric: Metric | str) -> float:
    """Parse a budget in the metric's unit: ``8ms``/``8`` (latency_ms), ``1.2M`` (params), ``3.5G`` (macs).

    Latency takes ``ms``, ``s`` or ``us`` (no suffix: ms); counts take ``K``, ``M``, ``G``, ``T`` (no
    suffix: the plain count). A latency unit for a count metric, or the other way round, is refused.
    """
    metric = Metric(metric)
    match = _TARGET_RE.match(str(text))
    if match is None:
        raise UserInputError(f"The target {text!r} is not a number with an optional unit, e.g. 8ms, 1.2M or 3.5G.")
    value, suffix = float(match.group(1)), match.group(2).lower()
    if metric is Metric.LATENCY_MS:
        if suffix in _COUNT_UNITS and suffix:
            raise UserInputError(f"The target {text!r} is a count, but --metric latency_ms needs a time such as 8ms.")
        if suffix and suffix not in _LATENCY_UNITS:
            raise UserInputError(f"The target {text!r} has an unknown time unit; use ms, s or us.")
        result = value * _LATENCY_UNITS[suffix or "ms"]
    else:
        if suffix in _LATENCY_UNITS:
            raise UserInputError(
                f"The target {text!r} is a time, but --metric {metric.value} counts {metric.unit}; write e.g. 1.2M or 3.5G."
            )
        if suffix not in _COUNT_UNITS:
            raise UserInputError(f"The target {text!r} has an unknown unit; use K, M, G or T (or none).")
        result = value * _COUNT_UNITS[suffix]
    if not math.isfinite(result) or result <= 0:
        raise UserInputError(f"The target {text!r} must be a positive number.")
    return result


def parse_lambda(text: str) -> float:
    """Parse one cost weight (a finite number >= 0)."""
    from search.sweep import parse_lambdas

    values = parse_lambdas(text)
    if len(values) != 1:
        raise UserInputError("--lambda takes one number; run `cas search sweep --lambdas ...` for several.")
    return values[0]


def parse_crop(text: str) -> tuple[int, int]:
    """Parse ``HxW`` (the network's stride is checked by the search, which knows the network)."""
    h, w = parse_size(text, "crop", "128x256")
    if h <= 0 or w <= 0:
        raise UserInputError(f"The crop {text!r} must have a positive height and width.")
    return h, w


def settings_from_options(params: Mapping[str, Any], lambda_: float) -> SearchSettings:
    """Build the settings from the shared options of the two commands (typer's parsed parameters)."""
    if params["profile"] is None:
        raise UserInputError("Say which cost profile to search with: --profile PROFILE.json.")
    metric = Metric(params["metric"])
    return SearchSettings(
        profile=params["profile"],
        metric=metric.value,
        lambda_=lambda_,
        target=None if params["target"] is None else parse_target(params["target"], metric),
        stage=params["stage"],
        backbone=params["backbone"],
        dataset=params["dataset"],
        data_root=params["data_root"],
        iters=params["iters"],
        batch_size=params["batch_size"],
        crop=parse_crop(params["crop"]),
        seed=params["seed"],
        order=params["order"],
        cost_support=params["cost_over"],
        arch_lr=params["arch_lr"],
        lr=params["lr"],
        checkpoint_every=params["checkpoint_every"],
        log_every=params["log_every"],
        device=params["device"],
    )


def default_out_dir(settings: SearchSettings, *, sweep: bool = False) -> Path:
    """``runs/<profile stem>-<metric>-<lam L | target T | sweep>-s<seed>`` under the working folder."""
    if sweep:
        tag = "sweep"
    elif settings.target is not None:
        tag = f"target{settings.target:g}"
    else:
        tag = f"lam{settings.lambda_:g}"
    return Path("runs") / f"{settings.profile.stem}-{settings.metric}-{tag}-s{settings.seed}"


# --- progress and summary -------------------------------------------------------------------
def _progress_bar() -> Progress:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[stats]}"),
        TimeRemainingColumn(),
        console=err_console,
        transient=False,
    )


def _stats(p: SearchProgress) -> str:
    return (
        f"loss {p.train_loss:.3f}/{p.val_loss:.3f}  cost {p.predicted_cost:.4g} {p.unit}  "
        f"λ {p.lambda_:.3g}  {p.iters_per_second:.2f} it/s"
    )


def _warn(text: str) -> None:
    err_console.print(Text.assemble(("Warning:", "bold yellow"), " ", text), highlight=False)


def _warnings(result: SearchResult) -> tuple[str, ...]:
    return tuple(getattr(result, "warnings", ()) or ())


def _summary(result: SearchResult) -> str:
    lines = [f"Derived genotype: {result.genotype_path}"]
    cost = f"Predicted {result.unit}: {result.predicted_cost:.6g}"
    if result.target is not None:
        verdict = "within" if result.predicted_cost <= result.target else "OVER"
        cost += f" (budget {result.target:.6g}: {verdict} budget, {100 * result.predicted_cost / result.target:.1f} %)"
    lines.append(cost)
    lines.append(f"Final validation loss (supernet, search_val): {result.final_val_loss:.4f}")
    if result.val_miou is not None:
        lines.append(f"Validation mIoU (supernet, search_val): {100 * result.val_miou:.1f} %")
    lines.append(f"Cell pictures: {Path(result.out_dir) / 'cells'}")
    return "\n".join(lines)


# --- commands --------------------------------------------------------------------------------
@app.callback(invoke_without_command=True)
def search(
    ctx: typer.Context,
    profile: OptionalProfileOpt = None,
    lambda_: Annotated[str, typer.Option("--lambda", "-l", help="Cost weight λ >= 0 (normalised cost units, see search.cost).")] = f"{DEFAULT_LAMBDA:g}",
    metric: MetricOpt = Metric.LATENCY_MS,
    target: TargetOpt = None,
    stage: StageOpt = _DEFAULTS.stage,
    backbone: BackboneOpt = None,
    dataset: DatasetOpt = _DEFAULTS.dataset,
    data_root: DataRootOpt = None,
    iters: ItersOpt = _DEFAULTS.iters,
    batch_size: BatchOpt = _DEFAULTS.batch_size,
    crop: CropOpt = f"{_DEFAULTS.crop[0]}x{_DEFAULTS.crop[1]}",
    seed: SeedOpt = _DEFAULTS.seed,
    order: OrderOpt = _DEFAULTS.order,
    cost_over: CostSupportOpt = _DEFAULTS.cost_support,
    arch_lr: ArchLrOpt = DEFAULT_ARCH_LR,
    lr: LrOpt = _DEFAULTS.lr,
    checkpoint_every: CheckpointOpt = _DEFAULTS.checkpoint_every,
    log_every: LogEveryOpt = _DEFAULTS.log_every,
    device: RunDeviceOpt = _DEFAULTS.device,
    out: Annotated[
        Optional[Path],
        typer.Option("--out", "-o", help="Run folder (default: runs/<profile stem>-<metric>-lam<λ>-s<seed>).", show_default=False),
    ] = None,
    resume: ResumeFlag = False,
) -> None:
    """Search a network for the profile's device: writes genotype.json and the run folder.

    Run `cas search sweep --help` for a lambda sweep (the paper's Figure 5).
    """
    if ctx.invoked_subcommand is not None:
        return
    settings = settings_from_options(ctx.params, parse_lambda(lambda_))
    run_one(settings, out or default_out_dir(settings), resume=resume)


def run_one(settings: SearchSettings, out_dir: Path, *, resume: bool) -> SearchResult:
    """Run one search with a progress bar on stderr; print the summary on stdout (rank 0 only)."""
    from search.distributed import distributed
    from search.run import held_run_files, prepare, run_search

    with distributed(settings.device) as dist:
        if dist is not None and not dist.is_main:
            return run_search(settings, out_dir, resume=resume, dist=dist)
        if resume and not out_dir.is_file() and not held_run_files(out_dir):
            err_console.print(f"No search run in {out_dir} to resume: starting afresh.", highlight=False, markup=False)
        for warning in prepare(settings, dist).warnings:  # say it before the search starts, and again at the end
            _warn(warning)
        with _progress_bar() as bar:
            task = bar.add_task("search", total=settings.iters, stats="")

            def report(p: SearchProgress) -> None:
                bar.update(task, completed=p.iteration, total=p.total, stats=_stats(p))

            result = run_search(settings, out_dir, resume=resume, progress=report, dist=dist)
    for warning in _warnings(result):
        _warn(warning)
    typer.echo(_summary(result))
    return result


@app.command("sweep")
def sweep(
    ctx: typer.Context,
    lambdas: Annotated[str, typer.Option("--lambdas", help="Comma-separated cost weights, e.g. 0,0.01,0.1,1.")],
    profile: OptionalProfileOpt = None,
    metric: MetricOpt = Metric.LATENCY_MS,
    target: TargetOpt = None,
    stage: StageOpt = _DEFAULTS.stage,
    backbone: BackboneOpt = None,
    dataset: DatasetOpt = _DEFAULTS.dataset,
    data_root: DataRootOpt = None,
    iters: ItersOpt = _DEFAULTS.iters,
    batch_size: BatchOpt = _DEFAULTS.batch_size,
    crop: CropOpt = f"{_DEFAULTS.crop[0]}x{_DEFAULTS.crop[1]}",
    seed: SeedOpt = _DEFAULTS.seed,
    order: OrderOpt = _DEFAULTS.order,
    cost_over: CostSupportOpt = _DEFAULTS.cost_support,
    arch_lr: ArchLrOpt = DEFAULT_ARCH_LR,
    lr: LrOpt = _DEFAULTS.lr,
    checkpoint_every: CheckpointOpt = _DEFAULTS.checkpoint_every,
    log_every: LogEveryOpt = _DEFAULTS.log_every,
    device: RunDeviceOpt = _DEFAULTS.device,
    out: Annotated[
        Optional[Path],
        typer.Option("--out", "-o", help="Sweep folder (default: runs/<profile stem>-<metric>-sweep-s<seed>).", show_default=False),
    ] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the sweep in --out; finished lambdas are skipped.")] = False,
) -> None:
    """One search per lambda (sub-folders lam<λ>), then sweep.json, sweep.md and sweep.png (Figure 5).

    The mIoU reported is the supernet's on search_val at the end of each search.
    """
    from search.sweep import parse_lambdas

    values = parse_lambdas(lambdas)
    if target is not None:
        raise UserInputError("A lambda sweep cannot take --target (a budget adapts lambda itself); drop one of them.")
    settings = settings_from_options(ctx.params, values[0])
    result = sweep_all(settings, values, out or default_out_dir(settings, sweep=True), resume=resume)
    if result is not None:
        typer.echo(result.md_path.read_text(encoding="utf-8"), nl=False)
        typer.echo(f"Wrote {result.json_path}, {result.md_path.name} and {result.png_path.name}")


def sweep_all(settings: SearchSettings, lambdas: tuple[float, ...], out_dir: Path, *, resume: bool) -> SweepResult | None:
    """Run the sweep with one progress bar per lambda (rank 0); returns None on the other ranks."""
    from search.distributed import distributed
    from search.sweep import run_sweep

    with distributed(settings.device) as dist:
        if dist is not None and not dist.is_main:
            run_sweep(settings, lambdas, out_dir, resume=resume, dist=dist)
            return None
        with _progress_bar() as bar:
            tasks: dict[float, Any] = {}

            def report(lam: float, p: SearchProgress) -> None:
                if lam not in tasks:
                    tasks[lam] = bar.add_task(f"λ={lam:g}", total=p.total, stats="")
                bar.update(tasks[lam], completed=p.iteration, total=p.total, stats=_stats(p))

            announce = lambda m: bar.console.print(Text(m), highlight=False)  # noqa: E731
            return run_sweep(settings, lambdas, out_dir, resume=resume, progress=report, announce=announce, dist=dist)


def main() -> None:
    """Entry point for ``python -m search.cli`` (e.g. under torchrun)."""
    app()


if __name__ == "__main__":
    main()
