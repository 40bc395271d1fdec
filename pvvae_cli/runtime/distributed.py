"""Data-parallel runs under torchrun: which process this is, and the few collectives a training loop needs.

``torchrun --nproc_per_node N`` starts N processes with ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` set; without
it there is one process and every function here is a no-op (no process group is created). Nothing here knows
what is being trained.

``PVVAE_DIST_TIMEOUT_MIN`` sets how long a collective may wait for the other ranks (default 60 minutes).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes files and prints progress."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


# Rank 0 alone validates, writes checkpoints (several GB for the base preset) and exports while the other ranks
# wait in a collective; NCCL's default 10 minutes can run out on a slow shared file system.
DEFAULT_TIMEOUT_MIN = 60.0
TIMEOUT_ENV = "PVVAE_DIST_TIMEOUT_MIN"


def collective_timeout() -> timedelta:
    """How long a collective waits for the other ranks: ``$PVVAE_DIST_TIMEOUT_MIN`` minutes, default 60."""
    raw = os.environ.get(TIMEOUT_ENV, "").strip()
    if not raw:
        return timedelta(minutes=DEFAULT_TIMEOUT_MIN)
    try:
        minutes = float(raw)
    except ValueError:
        minutes = float("nan")
    if not minutes > 0:
        raise ValueError(f"{TIMEOUT_ENV}={raw!r} must be a number of minutes > 0, e.g. {TIMEOUT_ENV}=120")
    return timedelta(minutes=minutes)


def local_cuda_device(local_rank: int, device_count: int) -> torch.device:
    """The GPU of process ``local_rank`` on a node with ``device_count`` visible GPUs (one GPU per process).
    Raises ``ValueError`` when there are more processes than GPUs (CUDA would say "invalid device ordinal")."""
    if local_rank >= device_count:
        raise ValueError(f"LOCAL_RANK {local_rank} has no GPU: {device_count} visible on this node; start at most "
                         f"{device_count} processes per node (torchrun --nproc_per_node {device_count}) or make more "
                         "GPUs visible (CUDA_VISIBLE_DEVICES)")
    return torch.device("cuda", local_rank)


def local_rank_from_env(env: Mapping[str, str] | None = None) -> int | None:
    """This process's index among the processes of its job on this node: torchrun's ``LOCAL_RANK``, else Slurm's
    ``SLURM_LOCALID`` (``srun`` tasks); None when no launcher says (a single process). ``env``: default
    ``os.environ``. Raises ``ValueError`` for a value that is not an integer >= 0."""
    env = os.environ if env is None else env
    for key in ("LOCAL_RANK", "SLURM_LOCALID"):
        raw = env.get(key, "").strip()
        if raw:
            try:
                rank = int(raw)
            except ValueError:
                rank = -1
            if rank < 0:
                raise ValueError(f"{key}={raw!r} is not a process index (an integer >= 0)")
            return rank
    return None


def local_gpu(env: Mapping[str, str], device_count: int) -> torch.device | None:
    """The GPU of this process of a batch job (one GPU per process), from the launcher's environment and the number
    of GPUs it sees; None when no launcher gives a local rank (then a bare ``cuda`` stays the current device).

    ``cuda:LOCAL_RANK`` (``local_cuda_device``: a ``ValueError`` when there are more processes than GPUs), except
    under Slurm with ``--gpus-per-task`` when the task sees only its own GPUs (``SLURM_GPUS_PER_TASK`` of them or
    fewer: Slurm binds them per task): then its first, ``cuda:0``."""
    rank = local_rank_from_env(env)
    if rank is None:
        return None
    per_task = env.get("SLURM_GPUS_PER_TASK", "").strip()
    if "LOCAL_RANK" not in env and per_task.isdigit() and 0 < device_count <= int(per_task):
        return torch.device("cuda", 0)
    return local_cuda_device(rank, device_count)


def process_device(name: str, env: Mapping[str, str] | None = None) -> torch.device:
    """The device of one process of a batch command (encode, decode, predict), one GPU per process.

    ``runtime.device.resolve_device(name)`` (so ``auto`` is ``$PVVAE_DEVICE`` when set), then a CUDA device
    without an index (``--device cuda``, or ``auto`` on a GPU host) becomes this process's GPU under torchrun or
    Slurm (``local_gpu``). A CUDA device with an index is made the current device (``torch.cuda.set_device``), so
    that CUDA calls without a device ask that GPU and not GPU 0. Raises ``ValueError`` (unusable device, more
    processes than GPUs)."""
    from pvvae_cli.runtime.device import resolve_device

    device = resolve_device(name)
    if device.type != "cuda":
        return device
    if device.index is None:
        device = local_gpu(os.environ if env is None else env, torch.cuda.device_count()) or device
    if device.index is not None:
        torch.cuda.set_device(device)
    return device


def init_distributed(device: torch.device) -> tuple[DistInfo, torch.device]:
    """Read torchrun's environment and join the process group (gloo on CPU, nccl on CUDA), whose collectives wait
    ``collective_timeout()`` for the other ranks.

    Returns this process's ``DistInfo`` and its device: under torchrun a CUDA device becomes ``cuda:LOCAL_RANK``
    (one GPU per process). A single process given ``cuda:N`` makes it the current device, so that CUDA calls
    without a device (RNG state, capability queries) ask that GPU and not GPU 0."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    info = DistInfo(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))
    if world > 1:
        timeout = collective_timeout()
        if device.type == "cuda":
            device = local_cuda_device(info.local_rank, torch.cuda.device_count())
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            if device.type == "cuda":  # device_id binds the group to this GPU (NCCL sets up its communicator now)
                dist.init_process_group("nccl", timeout=timeout, device_id=device)
            else:
                dist.init_process_group("gloo", timeout=timeout)
    elif device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)
    return info, device


def wrap_ddp(module: nn.Module, info: DistInfo, device: torch.device,
             find_unused_parameters: bool = False) -> nn.Module:
    """``module`` in DistributedDataParallel when there are several processes, ``module`` itself otherwise.

    ``find_unused_parameters``: for a model whose forward leaves some parameters out of the graph (it costs a
    graph traversal per step). Gradients are views into DDP's all-reduce buckets, which saves a copy of them."""
    if not info.enabled:
        return module
    return DDP(module, device_ids=[device.index] if device.type == "cuda" else None,
               find_unused_parameters=find_unused_parameters, gradient_as_bucket_view=True)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def finish(info: DistInfo) -> None:
    """The end of a run that went well, on every rank: wait for the others, then leave the process group. Without
    ``destroy_process_group`` gloo's worker threads can still be alive at interpreter exit and abort the process
    (SIGABRT, "terminate called without an active exception") after the work is done. Not for a run that failed:
    destroying while other ranks are inside a collective can hang (the run's exception ends the process instead)."""
    if info.enabled and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def any_rank(flag: bool, info: DistInfo, device: torch.device) -> bool:
    """True on every rank if it is true on any (a signal may reach the ranks at different steps)."""
    if not info.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def mean_over_ranks(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """The element-wise mean of ``t`` over the ranks (every rank passes the same shape), on ``t``'s device: no host
    sync of its own."""
    if info.enabled:
        t = t.clone()
        dist.all_reduce(t)
        t /= info.world
    return t


def gather_objects(obj, info: DistInfo) -> list:
    """Every rank's ``obj`` (picklable), in rank order, on every rank."""
    if not info.enabled:
        return [obj]
    gathered: list = [None] * info.world
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_module(module: nn.Module, info: DistInfo) -> None:
    """Rank 0's parameters and buffers on every rank (in place), for state that only rank 0 computed."""
    if info.enabled:
        for tensor in module.state_dict().values():
            dist.broadcast(tensor, src=0)
