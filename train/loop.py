"""The training loop of ``cas train``: SGD with the poly policy, exact resume, best and last weights.

Under ``torchrun`` the network is wrapped in DistributedDataParallel (SyncBatchNorm on CUDA),
each rank takes ``batch_size / world_size`` images of every global batch (disjoint samples, see
``search.data.batches``), validation is sharded across ranks and the confusion matrices summed,
and only rank 0 writes. The batch at iteration ``k`` is a pure function of the seed and ``k``,
so a resumed run sees exactly the batches an uninterrupted one would have seen.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from casprof.errors import CasError, UserInputError
from casprof.genotype import Genotype
from casprof.network import CASNetwork
from train.backbone import load_backbone
from train.checkpoint import BEST, CHECKPOINT, LAST, RESULT, Checkpoint, RunFolder, rng_state, save_state_dict, set_rng_state
from train.evaluate import check_classes, evaluate_model
from casprof.devices import torch_device
from train.settings import TrainSettings


class TrainingError(CasError):
    """The training itself failed (a non-finite loss); exit 1."""


@dataclass(frozen=True)
class TrainProgress:
    """Reported after every iteration (and after each validation)."""

    iteration: int
    total: int
    loss: float
    lr: float
    iters_per_second: float
    val_miou: float | None
    best_miou: float | None


@dataclass(frozen=True)
class TrainResult:
    """Where the run's files are and how well its best weights did on validation."""

    out_dir: Path
    last_weights: Path
    best_weights: Path
    best_miou: float
    best_iteration: int
    iterations: int
    resumed_from: int
    history: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "out_dir": str(self.out_dir),
            "last_weights": str(self.last_weights),
            "best_weights": str(self.best_weights),
            "best_val_miou": self.best_miou,
            "best_iteration": self.best_iteration,
            "iterations": self.iterations,
            "resumed_from": self.resumed_from,
            "val_miou_curve": [
                {"iteration": r["iteration"], "val_miou": r["val_miou"]} for r in self.history if "val_miou" in r
            ],
        }


def _unwrap(model: torch.nn.Module) -> CASNetwork:
    return model.module if hasattr(model, "module") else model  # type: ignore[return-value]


def _segmentation_loss(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """Pixel-wise cross-entropy over labelled pixels; zero (with a graph) for a batch with none."""
    if not bool((labels != ignore_index).any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits, labels, ignore_index=ignore_index)


@dataclass
class _Tracker:
    """The run's mutable bookkeeping: best score and the log records."""

    best_miou: float | None
    best_iteration: int | None
    records: list[dict[str, Any]]


def _prepare(settings: TrainSettings, out_dir: Path, resume: bool) -> tuple[Genotype, Any, Checkpoint | None]:
    """Check every input before anything is written; the genotype, dataset info and checkpoint."""
    from search.data import dataset_info

    genotype = Genotype.load(settings.genotype)
    info = dataset_info(settings.dataset)
    check_classes(genotype, settings.dataset, info.num_classes)
    genotype.network.check_resolution(*settings.crop)
    if settings.eval_resolution is not None:
        genotype.network.check_resolution(*settings.eval_resolution)
    checkpoint = RunFolder(Path(out_dir)).check_new_or_resumable(settings, genotype, resume)
    return genotype, info, checkpoint


def run_train(
    settings: TrainSettings,
    out_dir: Path,
    *,
    resume: bool = False,
    progress: Callable[[TrainProgress], None] | None = None,
    dist: Any = None,
) -> TrainResult:
    """Train the derived network of ``settings.genotype``; see the module docstring.

    Args:
        settings: the run's settings (defaults: paper §4.3).
        out_dir: the run folder; refused if it holds a run and ``resume`` is False.
        resume: continue the run in ``out_dir`` from its checkpoint (settings must match).
        progress: called after every iteration on rank 0.
        dist: a ``search.distributed.DistContext`` under torchrun, else None.
    """
    from search.data import IGNORE_INDEX, Split, Transform, batches, build_dataset
    from search.distributed import barrier

    rank, world = (0, 1) if dist is None else (dist.rank, dist.world_size)
    is_main = rank == 0
    if settings.batch_size % world:
        raise UserInputError(f"The batch size {settings.batch_size} is not divisible by the {world} processes.")
    genotype, _info, checkpoint = _prepare(settings, out_dir, resume)
    aug = settings.augmentation
    assert aug is not None
    # the data sets themselves are fixed (seed 0: the synthetic scenes `cas eval` and `cas search` see);
    # settings.seed drives the initialisation, the sampling order and the augmentation (`batches`)
    train_set = build_dataset(
        settings.dataset, Split.TRAIN, root=settings.data_root,
        transform=Transform(scale=aug.scale, crop=aug.crop, flip=aug.flip),
    )
    val_set = build_dataset(settings.dataset, Split.VAL, root=settings.data_root)
    device = torch_device(settings.device) if dist is None else dist.device

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        net = CASNetwork.from_genotype(genotype)
    if settings.init_backbone is not None and checkpoint is None:
        load_backbone(net, settings.init_backbone)
    if checkpoint is not None:
        net.load_state_dict(checkpoint.model)
    if dist is not None and device.type == "cuda":
        net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(net)
    net = net.to(device)
    model: torch.nn.Module = net
    if dist is not None:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    opt = settings.optimizer
    optimizer = torch.optim.SGD(net.parameters(), lr=opt.lr, momentum=opt.momentum, weight_decay=opt.weight_decay)
    folder = RunFolder(Path(out_dir))
    start = 0
    tracker = _Tracker(best_miou=None, best_iteration=None, records=[])
    if checkpoint is not None:
        optimizer.load_state_dict(checkpoint.optimizer)
        set_rng_state(checkpoint.rng)
        start = checkpoint.iteration
        tracker = _Tracker(checkpoint.best_miou, checkpoint.best_iteration, folder.read_log(start) if is_main else [])
    barrier(dist)  # every rank has checked the folder before rank 0 writes
    if is_main and checkpoint is None:
        folder.start(settings, genotype)

    cadence = settings.cadence
    stream = batches(train_set, batch_size=settings.batch_size // world, seed=settings.seed,
                     start_iteration=start, rank=rank, world_size=world, num_workers=settings.num_workers)

    def save_checkpoint(done: int) -> None:
        if is_main:
            save_state_dict(folder / LAST, net.state_dict())
            Checkpoint(done, net.state_dict(), optimizer.state_dict(), tracker.best_miou, tracker.best_iteration,
                       rng_state()).save(folder / CHECKPOINT)
            folder.write_log(tracker.records)

    def validate(done: int) -> float:
        if dist is not None:
            for buffer in net.buffers():  # BN statistics drift apart per rank without SyncBatchNorm
                torch.distributed.broadcast(buffer, src=0)
        evaluation = evaluate_model(net, val_set, genotype.network, resolution=settings.eval_resolution,
                                    device=device, limit=cadence.eval_limit, dist=dist)
        miou = float(evaluation.confusion.miou())
        if tracker.best_miou is None or miou > tracker.best_miou:
            tracker.best_miou, tracker.best_iteration = miou, done
            if is_main:
                save_state_dict(folder / BEST, net.state_dict())
        tracker.records.append({"iteration": done, "val_miou": miou,
                                "val_pixel_accuracy": float(evaluation.confusion.pixel_accuracy())})
        return miou

    done, consistent = start, True
    window_seconds, window_iters = 0.0, 0  # time in training steps only (data, forward, backward, update)
    try:
        for it in range(start, settings.iters):
            step_start = time.perf_counter()
            images, labels = next(stream)
            lr = opt.lr_at(it, settings.iters)
            for group in optimizer.param_groups:
                group["lr"] = lr
            model.train()
            logits = model(images.to(device, non_blocking=True))
            loss = _segmentation_loss(logits, labels.to(device, non_blocking=True), IGNORE_INDEX)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            consistent = False  # an interruption inside the update leaves no checkpoint of it
            optimizer.step()
            done, consistent = it + 1, True
            loss_value = float(loss.detach())  # synchronizes a GPU, so the step's time is complete
            if not math.isfinite(loss_value):
                raise TrainingError(f"The training loss became {loss_value} at iteration {done}; lower the learning rate.")
            window_iters += 1
            window_seconds += time.perf_counter() - step_start
            speed = window_iters / max(window_seconds, 1e-9)
            val_miou = None
            if done % cadence.log_every == 0 or done == settings.iters:
                value = loss.detach().clone()
                if dist is not None:
                    torch.distributed.all_reduce(value)
                    value /= world
                tracker.records.append({"iteration": done, "loss": float(value), "lr": lr, "iters_per_second": speed})
                window_seconds, window_iters = 0.0, 0
            if (cadence.eval_every and done % cadence.eval_every == 0) or done == settings.iters:
                val_miou = validate(done)
            if done % cadence.checkpoint_every == 0 or done == settings.iters:
                save_checkpoint(done)
            elif is_main and tracker.records and tracker.records[-1]["iteration"] == done:
                folder.write_log(tracker.records)  # rewritten whole, atomically; trimmed to the checkpoint on resume
            if progress is not None and is_main:
                progress(TrainProgress(done, settings.iters, loss_value, lr, speed, val_miou, tracker.best_miou))
    except KeyboardInterrupt:
        if done > start and consistent:
            save_checkpoint(done)  # resumable from where it stopped
        raise
    assert tracker.best_miou is not None and tracker.best_iteration is not None
    result = TrainResult(
        out_dir=Path(out_dir), last_weights=folder / LAST, best_weights=folder / BEST, best_miou=tracker.best_miou,
        best_iteration=tracker.best_iteration, iterations=settings.iters, resumed_from=start, history=tracker.records,
    )
    if is_main:
        from casprof._io import atomic_write_json

        atomic_write_json(folder / RESULT, result.to_dict())
    return result
