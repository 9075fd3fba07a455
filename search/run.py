"""The CAS search loop: alternating weight and architecture steps, checkpoints, resume, run folder.

Each iteration takes one ``search_train`` batch for an SGD step on the weights, then one
``search_val`` batch for an architecture step on alpha (paper §3.1: w_k first, then alpha
against L_val(w_k) + lambda L_cost). Batches are a pure function of (seed, iteration), so a
resumed run sees exactly the batches of an uninterrupted one.

Run folder: ``settings.json``, ``log.jsonl`` (one JSON object per logged iteration, appended;
a torn last line and lines past the checkpoint are dropped on resume), ``alphas/alphas_<iter>.json``
(softmax weights at every checkpoint), ``checkpoint.pt``, and at the end ``genotype.json``,
``summary.json`` and ``cells/<cell_type>.png``. Every file but the appended log is written
atomically; only rank 0 writes.
"""

from __future__ import annotations

import io
import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from casprof._io import atomic_write_bytes, atomic_write_json, check_output_folder, make_output_folder, read_json_file
from casprof.config import NetworkConfig
from casprof.devices import torch_device
from casprof.errors import CasError, UserInputError
from casprof.genotype import CellGraph, Genotype, SearchRecord
from casprof.predict import predict
from casprof.profile import Profile
from search.architect import Architect, segmentation_loss
from search.budget import BudgetDerivation, LambdaController, budget_derivation
from search.cost import CostModel, check_metric
from search.derive import derive_genotype
from search.distributed import DistContext, average_gradients_, average_tensors_, broadcast_parameters, barrier
from search.settings import SearchSettings, Stage
from search.supernet import Supernet, default_ms_cell

CHECKPOINT_VERSION = 1
RUN_FILES = ("settings.json", "checkpoint.pt", "log.jsonl", "genotype.json")


@dataclass(frozen=True)
class SearchProgress:
    iteration: int
    total: int
    train_loss: float
    val_loss: float
    cost_loss: float
    lambda_: float
    predicted_cost: float
    unit: str
    iters_per_second: float


@dataclass(frozen=True)
class SearchResult:
    genotype: Genotype
    genotype_path: Path
    predicted_cost: float
    unit: str
    target: float | None
    final_val_loss: float
    val_miou: float | None
    out_dir: Path
    warnings: tuple[str, ...] = ()
    budget_swaps: tuple[str, ...] = ()
    iterations: int = 0


@dataclass(frozen=True)
class SearchSetup:
    """Everything a run needs that comes from validated input (built before anything is written)."""

    settings: SearchSettings
    profile: Profile
    config: NetworkConfig
    fixed: dict[str, CellGraph]
    cost: CostModel
    unit: str
    device: torch.device
    warnings: tuple[str, ...] = ()


def prepare(settings: SearchSettings, dist: DistContext | None = None) -> SearchSetup:
    """Validate the settings against the profile, data set and device (UserInputError if bad)."""
    from search.data import dataset_info

    profile = Profile.load(settings.profile)
    config = profile.network
    unit = check_metric(profile, settings.metric)
    info = dataset_info(settings.dataset)
    if info.num_classes != config.num_classes:
        raise UserInputError(
            f"The {info.name} dataset has {info.num_classes} classes but the profile's network predicts {config.num_classes}."
        )
    for side, value in zip(("height", "width"), settings.crop):
        if value % config.total_stride:
            raise UserInputError(
                f"The crop {side} {value} is not divisible by the network's total stride {config.total_stride}."
            )
    fixed: dict[str, CellGraph] = {}
    if settings.stage is Stage.MS:
        if settings.backbone is None:
            raise UserInputError("A stage-ms search needs the backbone genotype (--backbone genotype.json).")
        backbone = Genotype.load(settings.backbone)
        profile.require_network(backbone.network)
        fixed.update(normal=backbone.normal, reduce=backbone.reduce)
    elif settings.backbone is not None:
        raise UserInputError(f"--backbone goes with --stage ms (a {settings.stage.value} search searches the backbone itself).")
    if settings.stage is Stage.BACKBONE:
        fixed["ms"] = default_ms_cell(config)
    world = dist.world_size if dist is not None else 1
    if settings.batch_size % world:
        raise UserInputError(f"The batch size {settings.batch_size} is not divisible by the {world} processes.")
    if settings.batch_size // world < 2 and "ms" in settings.searched_cell_types:
        raise UserInputError(
            f"The batch size {settings.batch_size} leaves {settings.batch_size // world} image per process; the supernet's "
            "spp_* operations batch-normalise a 1x1 pooled map, which needs at least 2 images per process."
        )
    cost = CostModel.from_profile(profile, settings.metric, config, settings.searched_cell_types, settings.cost_support)
    device = dist.device if dist is not None else torch_device(settings.device)
    return SearchSetup(settings, profile, config, fixed, cost, unit, device, cost.warnings)


def held_run_files(out_dir: Path) -> list[str]:
    """The files of a search run (:data:`RUN_FILES`) that ``out_dir`` holds."""
    return [name for name in RUN_FILES if (out_dir / name).exists()]


def check_run_folder(settings: SearchSettings, out_dir: Path, resume: bool) -> bool:
    """Whether ``out_dir`` holds a run to resume; refuses to overwrite or resume another run."""
    held = held_run_files(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserInputError(f"The output path {out_dir} exists and is not a folder.")
    check_output_folder(out_dir)
    if not resume:
        if held:
            raise UserInputError(f"The folder {out_dir} already holds a search run; pass --resume or choose another --out.")
        return False
    if not (out_dir / "settings.json").exists():
        if held:
            raise UserInputError(
                f"The folder {out_dir} holds {', '.join(held)} but no settings.json, so its run cannot be resumed; "
                "choose another --out."
            )
        return False
    settings_path = out_dir / "settings.json"
    recorded = SearchSettings.from_dict(read_json_file(settings_path, "search settings"), settings_path)
    if recorded.config_digest() != settings.config_digest():
        raise UserInputError(
            f"The run in {out_dir} was made with other settings ({settings.first_difference(recorded)}); it cannot be resumed."
        )
    return True


# --- state ------------------------------------------------------------------------------------
#: What a search checkpoint holds besides its version and settings digest.
_CHECKPOINT_KEYS = ("iteration", "model", "w_opt", "sched", "a_opt", "controller", "last_val_loss", "rng")


@dataclass
class _State:
    model: Supernet
    w_opt: torch.optim.SGD
    sched: torch.optim.lr_scheduler.PolynomialLR
    a_opt: torch.optim.Adam
    controller: LambdaController | None
    iteration: int = 0
    last_val_loss: float = math.nan
    history: list[dict[str, Any]] = field(default_factory=list)

    def to_bytes(self, settings: SearchSettings) -> bytes:
        blob = {
            "version": CHECKPOINT_VERSION,
            "digest": settings.config_digest(),
            "iteration": self.iteration,
            "model": self.model.state_dict(),
            "w_opt": self.w_opt.state_dict(),
            "sched": self.sched.state_dict(),
            "a_opt": self.a_opt.state_dict(),
            "controller": None if self.controller is None else self.controller.state_dict(),
            "last_val_loss": self.last_val_loss,
            "rng": torch.get_rng_state(),
        }
        buffer = io.BytesIO()
        torch.save(blob, buffer)
        return buffer.getvalue()

    def load(self, path: Path, settings: SearchSettings) -> None:
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a torn or foreign file: say so, once
            raise UserInputError(f"The checkpoint {path} cannot be read ({exc.__class__.__name__}).") from None
        if not isinstance(blob, dict):
            raise UserInputError(f"The checkpoint {path} is not a cas search checkpoint (it holds a {type(blob).__name__}).")
        if blob.get("version") != CHECKPOINT_VERSION or blob.get("digest") != settings.config_digest():
            raise UserInputError(f"The checkpoint {path} belongs to another run or toolkit version.")
        missing = [k for k in _CHECKPOINT_KEYS if k not in blob]
        if missing:
            raise UserInputError(f"The checkpoint {path} is incomplete (no {', '.join(missing)}); it may be corrupt.")
        self.model.load_state_dict(blob["model"])
        self.w_opt.load_state_dict(blob["w_opt"])
        self.sched.load_state_dict(blob["sched"])
        if self.sched.total_iters != settings.iters:  # an extended run: the poly decay now spans the new total
            self.sched.total_iters = settings.iters
            done = min(int(blob["iteration"]), settings.iters)
            for group in self.w_opt.param_groups:
                group["lr"] = group["initial_lr"] * (1 - done / settings.iters) ** self.sched.power
        self.a_opt.load_state_dict(blob["a_opt"])
        if self.controller is not None and blob["controller"] is not None:
            self.controller.load_state_dict(blob["controller"])
        self.iteration = int(blob["iteration"])
        self.last_val_loss = float(blob["last_val_loss"])
        torch.set_rng_state(blob["rng"])


def _build_state(setup: SearchSetup, dist: DistContext | None) -> _State:
    s = setup.settings
    torch.manual_seed(s.seed)
    model = Supernet(setup.config, s.searched_cell_types, setup.fixed).to(setup.device)
    broadcast_parameters([*model.parameters(), *model.buffers()], dist)
    w_opt = torch.optim.SGD(model.weight_parameters(), lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay)
    sched = torch.optim.lr_scheduler.PolynomialLR(w_opt, total_iters=s.iters, power=s.lr_power)
    a_opt = torch.optim.Adam(model.arch_parameters(), lr=s.arch_lr, betas=s.arch_betas, weight_decay=s.arch_weight_decay)
    controller = None if s.target is None else LambdaController(s.target, s.lambda_, s.budget_factor)
    return _State(model, w_opt, sched, a_opt, controller)


# --- the loop -----------------------------------------------------------------------------------
def _streams(setup: SearchSetup, start: int, dist: DistContext | None) -> tuple[Iterator[Any], Iterator[Any]]:
    from search.data import Split, Transform, batches, build_dataset

    s = setup.settings
    rank, world = (dist.rank, dist.world_size) if dist is not None else (0, 1)
    train_tf = Transform(scale=s.scale, crop=s.crop, flip=s.flip)
    val_tf = Transform(scale=s.scale, crop=s.crop, flip=s.flip)
    train = build_dataset(s.dataset, Split.SEARCH_TRAIN, root=s.data_root, transform=train_tf, seed=s.seed)
    val = build_dataset(s.dataset, Split.SEARCH_VAL, root=s.data_root, transform=val_tf, seed=s.seed)
    common = dict(batch_size=s.batch_size // world, start_iteration=start, rank=rank, world_size=world, num_workers=s.num_workers)
    return batches(train, seed=s.seed, **common), batches(val, seed=s.seed + 1, **common)


def _to(batch: tuple[torch.Tensor, torch.Tensor], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    return batch[0].to(device, non_blocking=True), batch[1].to(device, non_blocking=True)


def _derive(setup: SearchSetup, model: Supernet, record: SearchRecord | None = None) -> Genotype:
    with torch.no_grad():
        weights = {t: w.cpu() for t, w in model.mixing_weights().items()}
    return derive_genotype(weights, setup.config, setup.fixed, record)


def _predicted(setup: SearchSetup, genotype: Genotype) -> float:
    return predict(setup.profile, genotype)[setup.settings.metric].value


def _alphas_dict(model: Supernet, iteration: int) -> dict[str, Any]:
    from casprof.ops import candidate_ops

    with torch.no_grad():
        weights = model.mixing_weights()
    return {
        "iteration": iteration,
        "operations": {t: list(candidate_ops(t, with_none=True)) for t in weights},
        "softmax": {t: w.cpu().double().tolist() for t, w in weights.items()},
    }


def _repair_log(path: Path, upto: int) -> None:
    """Keep the log lines of iterations <= ``upto``; drop a torn last line."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and int(row.get("iteration", 0)) <= upto:
            kept.append(line)
    atomic_write_bytes(path, "".join(f"{line}\n" for line in kept).encode())


def _append_log(path: Path, row: dict[str, Any]) -> None:
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(row) + "\n")
        fh.flush()


def run_search(
    settings: SearchSettings,
    out_dir: Path,
    *,
    resume: bool = False,
    progress: Callable[[SearchProgress], None] | None = None,
    dist: DistContext | None = None,
) -> SearchResult:
    """Run (or resume) a search and write the run folder; returns the derived genotype and figures."""
    out_dir = Path(out_dir)
    setup = prepare(settings, dist)
    resuming = check_run_folder(settings, out_dir, resume)
    main = dist is None or dist.is_main
    _check_data(setup)
    barrier(dist)  # every rank has checked the folder before rank 0 writes to it
    state = _build_state(setup, dist)
    if resuming and (out_dir / "checkpoint.pt").exists():
        state.load(out_dir / "checkpoint.pt", settings)
    if main:
        make_output_folder(out_dir)
        (out_dir / "alphas").mkdir(exist_ok=True)
        atomic_write_json(out_dir / "settings.json", settings.to_dict())
        if resuming:
            _repair_log(out_dir / "log.jsonl", state.iteration)
        else:
            (out_dir / "log.jsonl").unlink(missing_ok=True)
    barrier(dist)
    threads_before = torch.get_num_threads()
    if settings.threads is not None:
        torch.set_num_threads(settings.threads)
    try:
        _loop(setup, state, out_dir, progress, dist, main)
        return _finish(setup, state, out_dir, dist, main)
    finally:
        torch.set_num_threads(threads_before)


def _check_data(setup: SearchSetup) -> None:
    """Build the data sets once up front so a bad root or crop fails before any file is written."""
    _streams(setup, 0, None)


def _loop(
    setup: SearchSetup, state: _State, out_dir: Path, progress: Callable[[SearchProgress], None] | None,
    dist: DistContext | None, main: bool,
) -> None:
    s = setup.settings
    model = state.model
    reduce = (lambda grads: average_tensors_(grads, dist)) if dist is not None else None
    architect = Architect(model, setup.cost, state.a_opt, s.order, reduce)
    train_stream, val_stream = _streams(setup, state.iteration, dist)
    t0, done0 = time.perf_counter(), state.iteration
    for k in range(state.iteration, s.iters):
        model.train()
        train, val = _to(next(train_stream), setup.device), _to(next(val_stream), setup.device)
        lam = state.controller.lambda_ if state.controller is not None else s.lambda_
        # weight step on search_train
        state.w_opt.zero_grad(set_to_none=True)
        train_loss = segmentation_loss(model, train)
        if not math.isfinite(float(train_loss.detach())):
            raise CasError(f"The training loss became {float(train_loss.detach())} at iteration {k + 1}; lower the learning rate.")
        weights = model.weight_parameters()
        grads = torch.autograd.grad(train_loss, weights)
        for w, g in zip(weights, grads):
            w.grad = g
        average_gradients_(weights, dist)
        nn.utils.clip_grad_norm_(weights, s.grad_clip)
        state.w_opt.step()
        # architecture step on search_val (xi: the current weight learning rate, second order only)
        stats = architect.step(train, val, lam, xi=state.w_opt.param_groups[0]["lr"])
        state.sched.step()
        state.iteration = k + 1
        state.last_val_loss = stats.val_loss
        if state.controller is not None and state.iteration % s.budget_every == 0:
            state.controller.update(state.iteration, _predicted(setup, _derive(setup, model)))
        if state.iteration % s.checkpoint_every == 0 or state.iteration == s.iters:
            _checkpoint(state, s, out_dir, main)
        if state.iteration % s.log_every == 0 or state.iteration == s.iters:
            rate = (state.iteration - done0) / max(time.perf_counter() - t0, 1e-9)
            predicted = _predicted(setup, _derive(setup, model))
            row = {
                "iteration": state.iteration, "train_loss": float(train_loss.detach()), "val_loss": stats.val_loss,
                "cost_loss": stats.cost_loss, "expected_cost": stats.expected_cost, "lambda": lam,
                "predicted_cost": predicted, "unit": setup.unit, "lr": state.sched.get_last_lr()[0],
                "iters_per_second": rate,
            }
            if main:
                _append_log(out_dir / "log.jsonl", row)
            if progress is not None:
                progress(SearchProgress(state.iteration, s.iters, row["train_loss"], stats.val_loss, stats.cost_loss,
                                        lam, predicted, setup.unit, rate))


def _checkpoint(state: _State, settings: SearchSettings, out_dir: Path, main: bool) -> None:
    if not main:
        return
    atomic_write_json(out_dir / "alphas" / f"alphas_{state.iteration}.json", _alphas_dict(state.model, state.iteration))
    atomic_write_bytes(out_dir / "checkpoint.pt", state.to_bytes(settings))


def _val_miou(setup: SearchSetup, model: Supernet, dist: DistContext | None) -> float | None:
    """mIoU of the supernet (eval mode) on ``val_batches`` search_val batches."""
    from search.data import Split, Transform, batches, build_dataset
    from search.metrics import ConfusionMatrix

    s = setup.settings
    rank, world = (dist.rank, dist.world_size) if dist is not None else (0, 1)
    val = build_dataset(s.dataset, Split.SEARCH_VAL, root=s.data_root, transform=Transform(crop=s.crop), seed=s.seed)
    stream = batches(val, batch_size=s.batch_size // world, seed=s.seed + 2, rank=rank, world_size=world)
    matrix = ConfusionMatrix(setup.config.num_classes)
    model.eval()
    with torch.no_grad():
        for _ in range(s.val_batches):
            images, labels = _to(next(stream), setup.device)
            matrix.update(model(images).argmax(dim=1).cpu(), labels.cpu())
    matrix.all_reduce_(dist)
    value = matrix.miou()
    return None if value is None or not math.isfinite(value) else float(value)


def _finish(setup: SearchSetup, state: _State, out_dir: Path, dist: DistContext | None, main: bool) -> SearchResult:
    s = setup.settings
    warnings = list(setup.warnings)
    lam = state.controller.lambda_ if state.controller is not None else s.lambda_
    with torch.no_grad():
        weights = {t: w.cpu() for t, w in state.model.mixing_weights().items()}
    swaps: tuple[str, ...] = ()
    genotype = derive_genotype(weights, setup.config, setup.fixed)
    if s.target is not None and _predicted(setup, genotype) > s.target:
        budgeted: BudgetDerivation = budget_derivation(weights, setup.config, setup.fixed, setup.profile, s.metric, s.target)
        genotype = budgeted.genotype
        swaps = tuple(swap.describe(setup.unit) for swap in budgeted.swaps)
        warnings.append(
            f"The strongest derived network was over the {s.target:g} {setup.unit} budget; the budget-aware derivation "
            f"switched {len(swaps)} edge(s) to cheaper operations"
            + ("." if budgeted.within_budget else ", and the network is still over budget (every edge is at its cheapest).")
        )
    predicted = _predicted(setup, genotype)
    record = SearchRecord(
        method="cas", profile_fingerprint=setup.profile.fingerprint, profile_path=str(s.profile), metric=s.metric,
        lambda_=lam, iterations=state.iteration, seed=s.seed, predicted_cost=predicted, budget=s.target,
    )
    genotype = Genotype(genotype.normal, genotype.reduce, genotype.ms, setup.config, record)
    miou = _val_miou(setup, state.model, dist)
    path = out_dir / "genotype.json"
    if main:
        genotype.save(path)
        atomic_write_json(out_dir / "summary.json", {
            "iterations": state.iteration, "metric": s.metric, "unit": setup.unit, "predicted_cost": predicted,
            "target": s.target, "lambda_final": lam, "final_val_loss": state.last_val_loss,
            "supernet_val_miou": miou,
            "supernet_val_miou_note": f"supernet in eval mode on {s.val_batches} search_val batch(es) of {s.crop[0]}x{s.crop[1]}",
            "budget_swaps": list(swaps), "warnings": warnings,
        })
        _draw(genotype, out_dir / "cells")
    barrier(dist)
    return SearchResult(genotype, path, predicted, setup.unit, s.target, state.last_val_loss, miou, out_dir,
                        tuple(warnings), swaps, state.iteration)


def _draw(genotype: Genotype, folder: Path) -> None:
    try:
        from search.plot import draw_cells
    except ImportError:
        return
    folder.mkdir(exist_ok=True)
    draw_cells(genotype, folder)

