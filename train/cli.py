"""``cas train`` and ``cas eval``: thin commands over :func:`train.loop.run_train` and :func:`train.evaluate.run_eval`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from casprof.cli._app import err_console
from casprof.cli._options import GenotypeOpt, SeedOpt
from casprof.config import parse_resolution
from casprof.errors import UserInputError
from casprof.genotype import Genotype
from search.data.info import DatasetName
from train.settings import DEFAULT_CROPS, Augmentation, Cadence, EvalSettings, EvalSplit, OptimizerSettings, TrainSettings

if TYPE_CHECKING:
    from train.evaluate import EvalResult
    from train.loop import TrainProgress

DatasetOpt = Annotated[DatasetName, typer.Option("--dataset", help="synthetic (built in), cityscapes or camvid.")]
DataRootOpt = Annotated[
    Optional[Path], typer.Option("--data-root", help="The data set's folder (cityscapes, camvid).", show_default=False)
]
DeviceOpt = Annotated[str, typer.Option("--device", help="cpu, cuda or cuda:N (under torchrun: each rank's own GPU).")]


def _size(text: str | None, genotype: Genotype) -> tuple[int, int] | None:
    return None if text is None else parse_resolution(text, genotype.network)


def _scale(text: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise UserInputError(f"The scale range {text!r} is not of the form LOW,HIGH, e.g. 0.5,2.0.") from None
    return low, high


def train(
    genotype: GenotypeOpt,
    dataset: DatasetOpt = DatasetName.SYNTHETIC,
    data_root: DataRootOpt = None,
    iters: Annotated[int, typer.Option("--iters", help="Training iterations (paper: 90000).")] = 90_000,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per iteration, over all ranks (paper: 16).")] = 16,
    crop: Annotated[
        Optional[str],
        typer.Option("--crop", help="Random crop HxW (default per dataset: synthetic 64x128, cityscapes 512x1024, camvid 352x480).", show_default=False),
    ] = None,
    scale: Annotated[str, typer.Option("--scale", help="Random scale range LOW,HIGH.")] = "0.5,2.0",
    flip: Annotated[bool, typer.Option("--flip/--no-flip", help="Random horizontal flip.")] = True,
    lr: Annotated[float, typer.Option("--lr", help="Initial learning rate of SGD with the poly policy, power 0.9 (paper: 0.005).")] = 0.005,
    init_backbone: Annotated[
        Optional[Path],
        typer.Option("--init-backbone", help="A state_dict whose stem and cells initialise the backbone (e.g. ImageNet-pretrained).", show_default=False),
    ] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="The run folder.")] = Path("runs/train"),
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its checkpoint.")] = False,
    seed: SeedOpt = 0,
    eval_every: Annotated[int, typer.Option("--eval-every", help="Validation mIoU every N iterations (0: at the end only); best.pt keeps the best.")] = 1000,
    eval_limit: Annotated[
        Optional[int], typer.Option("--eval-limit", help="Validate on the first N validation images only.", show_default=False)
    ] = None,
    eval_resolution: Annotated[
        Optional[str], typer.Option("--eval-resolution", help="Validation input size HxW (default: full size).", show_default=False)
    ] = None,
    checkpoint_every: Annotated[int, typer.Option("--checkpoint-every", help="Checkpoint every N iterations.")] = 500,
    log_every: Annotated[int, typer.Option("--log-every", help="A log.jsonl record every N iterations.")] = 20,
    workers: Annotated[int, typer.Option("--workers", help="Data loading processes per rank.")] = 0,
    device: DeviceOpt = "cpu",
) -> None:
    """Train a genotype's network on a segmentation dataset (SGD, poly policy; defaults from the paper, §4.3).

    The run folder gets settings.json, genotype.json, log.jsonl, checkpoint.pt, last.pt and best.pt
    (plain state_dicts for `cas deploy export --weights` and `cas eval --weights`) and result.json.
    Under torchrun every rank trains (DistributedDataParallel) and rank 0 writes.
    """
    from search.distributed import distributed
    from train.checkpoint import RunFolder
    from train.loop import run_train

    net = Genotype.load(genotype)
    crop_size = _size(crop, net)
    settings = TrainSettings(
        genotype=genotype, dataset=dataset.value, data_root=data_root, iters=iters, batch_size=batch_size,
        augmentation=Augmentation(crop=crop_size or DEFAULT_CROPS[dataset.value], scale=_scale(scale), flip=flip),
        optimizer=OptimizerSettings(lr=lr), seed=seed, init_backbone=init_backbone,
        eval_resolution=_size(eval_resolution, net),
        cadence=Cadence(log_every=log_every, eval_every=eval_every, checkpoint_every=checkpoint_every, eval_limit=eval_limit),
        num_workers=workers, device=device,
    )
    with distributed(device) as ctx:
        is_main = ctx is None or ctx.is_main
        if is_main and resume and not out.is_file() and not RunFolder(out).holds_run():
            err_console.print(f"No training run in {out} to resume: starting afresh.", highlight=False, markup=False)
        with _Bar("training", enabled=is_main) as bar:
            result = run_train(settings, out, resume=resume, progress=bar.train_report, dist=ctx)
    if is_main:
        typer.echo(
            f"Trained {result.iterations} iterations in {result.out_dir}: best validation mIoU "
            f"{100 * result.best_miou:.2f} % at iteration {result.best_iteration}.\n"
            f"Weights: {result.best_weights} (best), {result.last_weights} (last)."
        )


class _Bar:
    """A rich progress bar on stderr, started by the first report (so bad input shows no empty bar)."""

    def __init__(self, label: str, enabled: bool = True) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
            TextColumn("{task.fields[status]}"), console=err_console, disable=not enabled,
        )
        self.task = self.progress.add_task(label, total=None, status="")
        self.started = False

    def __enter__(self) -> _Bar:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.started:
            self.progress.stop()

    def update(self, completed: int, total: int, status: str = "") -> None:
        if not self.started:
            self.progress.start()
            self.started = True
        self.progress.update(self.task, completed=completed, total=total, status=status)

    def train_report(self, p: TrainProgress) -> None:
        best = "" if p.best_miou is None else f" best mIoU {100 * p.best_miou:.1f}%"
        self.update(p.iteration, p.total, f"loss {p.loss:.3f} lr {p.lr:.2e} {p.iters_per_second:.2f} it/s{best}")


def evaluate(
    genotype: GenotypeOpt,
    weights: Annotated[Path, typer.Option("--weights", "-w", help="A state_dict file (e.g. best.pt of `cas train`).", show_default=False)],
    dataset: DatasetOpt = DatasetName.SYNTHETIC,
    data_root: DataRootOpt = None,
    split: Annotated[EvalSplit, typer.Option("--split", help="The split to evaluate.")] = EvalSplit.VAL,
    resolution: Annotated[
        Optional[str],
        typer.Option("--resolution", "-r", help="Network input HxW, e.g. 768x1536 for Cityscapes (default: full size); labels stay full size.", show_default=False),
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per forward pass.")] = 1,
    limit: Annotated[Optional[int], typer.Option("--limit", help="Evaluate the first N images only.", show_default=False)] = None,
    examples: Annotated[int, typer.Option("--examples", help="Images shown in the report's PNG.")] = 4,
    report: Annotated[
        Optional[Path], typer.Option("--report", help="Write PATH (JSON, ending in .json) and the same name with .md and .png.", show_default=False)
    ] = None,
    device: DeviceOpt = "cpu",
) -> None:
    """mIoU and per-class IoU (ignore label 255) of trained weights; logits are upsampled to the labels' full size."""
    from train.evaluate import run_eval
    from train.report import eval_markdown

    net = Genotype.load(genotype)
    settings = EvalSettings(
        genotype=genotype, weights=weights, dataset=dataset.value, data_root=data_root, split=split,
        resolution=_size(resolution, net), batch_size=batch_size, limit=limit, examples=examples, device=device,
    )
    with _Bar("evaluating") as bar:
        result: EvalResult = run_eval(settings, report=report, progress=bar.update)
    typer.echo(eval_markdown(result), nl=False)
    if report is not None:
        err_console.print(f"Wrote {report} and its .md and .png views", highlight=False, markup=False)


def register(app: typer.Typer) -> None:
    """Add ``train`` and ``eval`` to the ``cas`` app."""
    app.command("train")(train)
    app.command("eval")(evaluate)
