"""Data-parallel search under ``torchrun``: process group, parameter broadcast, gradient averages.

Every rank holds the whole supernet. Weights start identical (broadcast from rank 0) and stay
identical because their gradients are averaged over ranks before each SGD step (an explicit
average rather than DistributedDataParallel, so the second-order architecture step can run
extra forward/backward passes without DDP's hooks). Architecture gradients are averaged the
same way, so alphas are identical on every rank. Only rank 0 writes files.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist

from casprof.errors import UserInputError


@dataclass(frozen=True)
class DistContext:
    rank: int
    world_size: int
    local_rank: int
    backend: str
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str) -> DistContext | None:
    """Join the torchrun process group (gloo on CPU, nccl on CUDA); ``None`` outside torchrun."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserInputError("The device 'cuda' was asked for but no CUDA GPU is available.")
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
        backend = "nccl"
    else:
        dev, backend = torch.device(device), "gloo"
    if not dist.is_initialized():
        _import_group_capturing_modules()
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
    return DistContext(rank, world, local_rank, backend, dev)


def _import_group_capturing_modules() -> None:
    """Import ``torch._dynamo`` before the process group exists, so that it cannot hold on to the group.

    Imported while a group is alive (DistributedDataParallel's constructor imports it), it keeps
    references to the default group (torch 2.13: the group's Python reference count goes from 10
    to 20, none of them from an object the garbage collector sees), so ``destroy_process_group``
    releases nothing: gloo's threads (``gloo_tcp_loop``, ``pt_gloo_runloop``) still run when the
    interpreter exits, and their teardown there now and then aborts the process ("terminate
    called without an active exception", SIGABRT) after the command has finished, which fails the
    whole torchrun job. Imported first, it holds no group, and the group and its threads end at
    ``destroy_process_group``. About one second, in torchrun runs only.
    """
    import torch._dynamo  # noqa: F401


@contextmanager
def distributed(device: str) -> Iterator[DistContext | None]:
    """``init_distributed`` for the length of a command, then leave the process group.

    After a normal end every rank waits for the others (rank 0 writes files last) and the group is
    destroyed before the interpreter exits: a rank that exits with its gloo group still alive while
    another still works can abort in the group's teardown ("terminate called without an active
    exception"), which fails the whole torchrun job. After an error the group is destroyed without
    the barrier (the other ranks may never reach it).
    """
    ctx = init_distributed(device)
    try:
        yield ctx
        barrier(ctx)
    finally:
        if ctx is not None and dist.is_initialized():
            dist.destroy_process_group()


def _active(ctx: DistContext | None) -> bool:
    return ctx is not None and ctx.world_size > 1 and dist.is_initialized()


def broadcast_parameters(params: Iterable[torch.Tensor], ctx: DistContext | None) -> None:
    """Copy rank 0's tensors (parameters and buffers) to every rank."""
    if not _active(ctx):
        return
    for p in params:
        dist.broadcast(p.data, src=0)


def all_reduce_mean_(tensor: torch.Tensor, ctx: DistContext | None) -> None:
    """Replace ``tensor`` by its mean over ranks, in place."""
    if not _active(ctx):
        return
    assert ctx is not None
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    tensor.div_(ctx.world_size)


def average_gradients_(params: Iterable[torch.Tensor], ctx: DistContext | None) -> None:
    """Average ``.grad`` of every parameter over ranks (one flat all-reduce)."""
    if not _active(ctx):
        return
    grads = [p.grad for p in params if p.grad is not None]
    if grads:
        average_tensors_(grads, ctx)


def average_tensors_(tensors: list[torch.Tensor], ctx: DistContext | None) -> None:
    """Average a list of tensors over ranks, in place (e.g. computed architecture gradients)."""
    if not _active(ctx):
        return
    flat = torch.cat([t.reshape(-1) for t in tensors])
    all_reduce_mean_(flat, ctx)
    offset = 0
    for t in tensors:
        n = t.numel()
        t.copy_(flat[offset: offset + n].view_as(t))
        offset += n


def barrier(ctx: DistContext | None) -> None:
    if _active(ctx):
        dist.barrier()
