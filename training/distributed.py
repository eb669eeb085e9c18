"""One paper episode shared by several processes (``torchrun``): DDP, class sharding, gathered embeddings.

Each rank builds the whole episode plan from ``(seed, epoch, index)`` (data_loading/episodes.py), but
reads and embeds only its share of the ``n_way`` classes. The embeddings are all-gathered *with their
gradients* (``torch.distributed.nn.functional.all_gather``) and put back in shot-major order, so the
episodic and global losses are computed on the whole episode, identically on every rank.

Gradient bookkeeping: every rank holds the same loss L; the all-gather backward sums the N ranks'
gradients, so each rank's local gradient is N * dL/dθ_local, and DDP's averaging over N ranks gives
exactly dL/dθ. With ``--sync_bn`` (BatchNorm statistics over the whole episode) N processes therefore
compute the same loss and gradients as one process.

PyTorch's ``SyncBatchNorm`` only runs on GPUs; on CPU (gloo) the same statistics are computed by
``CpuSyncBatchNorm`` from differentiable all-reduces, so the equivalence can be tested without a GPU.
"""
import datetime
import os
import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from data_loading.episodes import EpisodeDataset
from common.errors import UserInputError

PROCESS_GROUP_TIMEOUT = datetime.timedelta(minutes=10)


@dataclass(frozen=True)
class DistContext:
    """Where this process stands among the training processes. ``launched``: started by torchrun, so
    the distributed path (process group, DDP, SyncBatchNorm, gathers) runs even for one process
    (``torchrun --nproc_per_node 1`` exercises NCCL on a one-GPU machine)."""
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    launched: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1 or self.launched

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def context_from_env() -> DistContext:
    """Rank and world size as torchrun sets them (RANK, WORLD_SIZE, LOCAL_RANK); one process otherwise."""
    try:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError as error:
        raise UserInputError(f"bad torchrun environment (RANK/WORLD_SIZE/LOCAL_RANK): {error}") from None
    if world_size > 1 and not 0 <= rank < world_size:
        raise UserInputError(f"RANK {rank} is outside 0..{world_size - 1} (WORLD_SIZE {world_size})")
    return DistContext(rank, world_size, local_rank, launched="WORLD_SIZE" in os.environ)


def init_process_group(ctx: DistContext, device: torch.device) -> None:
    """NCCL on GPUs, gloo on CPU; collectives time out instead of hanging forever."""
    if not ctx.enabled or dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    kwargs = {"device_id": device} if device.type == "cuda" else {}
    dist.init_process_group(backend, rank=ctx.rank, world_size=ctx.world_size,
                            timeout=PROCESS_GROUP_TIMEOUT, **kwargs)


def check_same_corpus(digest: str, ctx: DistContext) -> None:
    """Stop unless every rank loaded the same corpus index (rank 0 built it, the others waited for it):
    episodes are a function of (seed, epoch, index) only when all ranks number utterances alike."""
    if not ctx.enabled:
        return
    digests = [None] * ctx.world_size
    dist.all_gather_object(digests, digest)
    differing = [rank for rank, other in enumerate(digests) if other != digests[0]]
    if differing:
        raise UserInputError(f"ranks {', '.join(map(str, differing))} loaded a different corpus index than "
                             "rank 0: every node must see the same feature store (and its corpus_index.npz)")


def differentiable(collective: str, *args):
    """``torch.distributed.nn.functional.<collective>`` (collectives with gradients), without its
    deprecation notice on every call."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return getattr(torch.distributed.nn.functional, collective)(*args)


def process_group_note() -> str:
    """``", process group nccl"`` (or gloo) while one is initialised, else empty."""
    return f", process group {dist.get_backend()}" if dist.is_initialized() else ""


def destroy_process_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


# ---------------------------------------------------------------- which rows of an episode a rank owns
def class_shard(n_way: int, rank: int, world_size: int) -> tuple:
    """``(first, stop)`` class indices of this rank; shares differ by at most one class."""
    bounds = [n_way * r // world_size for r in range(world_size + 1)]
    return bounds[rank], bounds[rank + 1]


def shard_rows(n_way: int, samples_per_class: int, first: int, stop: int) -> np.ndarray:
    """Row indices (shot-major layout) of classes ``first..stop-1``, still shot-major."""
    return np.array([s * n_way + c for s in range(samples_per_class) for c in range(first, stop)],
                    dtype=np.int64)


def gather_shot_major(local: torch.Tensor, samples_per_class: int, n_way: int, ctx: DistContext):
    """All-gather each rank's (samples * k_rank, d) embeddings with gradients -> (samples * n_way, d)
    shot-major, the layout one process would have produced."""
    if not ctx.enabled or samples_per_class == 0:
        return local
    shards = [class_shard(n_way, r, ctx.world_size) for r in range(ctx.world_size)]
    widest = max(stop - first for first, stop in shards)
    width = local.shape[0] // samples_per_class
    blocks = local.reshape(samples_per_class, width, -1)
    padded = F.pad(blocks, (0, 0, 0, widest - width))   # all_gather needs equal shapes
    gathered = differentiable("all_gather", padded)
    parts = [block[:, :stop - first] for block, (first, stop) in zip(gathered, shards)]
    return torch.cat(parts, dim=1).reshape(samples_per_class * n_way, -1)


class ShardedEpisodeDataset(EpisodeDataset):
    """Like ``EpisodeDataset`` but reads only this rank's classes; ``label_g`` stays the whole episode's."""

    def __init__(self, corpus, config, n_episodes: int, seed: int, ctx: DistContext):
        super().__init__(corpus, config, n_episodes, seed)
        self.ctx = ctx
        self.first, self.stop = class_shard(config.n_way, ctx.rank, ctx.world_size)

    def __getitem__(self, index: int) -> dict:
        plan = self.plan(index)
        n_way = plan.n_way
        support_rows = shard_rows(n_way, plan.n_shot, self.first, self.stop)
        n_query = (len(plan.utterances) - plan.n_support) // n_way
        query_rows = plan.n_support + shard_rows(n_way, n_query, self.first, self.stop)
        support = self.crops(plan, support_rows, plan.support_frames, index)
        query = self.crops(plan, query_rows, plan.query_frames, index)
        return {"support": support, "query": query, "label_g": torch.from_numpy(plan.label_g)}


# ---------------------------------------------------------------- BatchNorm statistics over all ranks
class CpuSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm with statistics over all ranks, for CPU tensors (PyTorch's ``SyncBatchNorm`` kernels
    and DDP's check of them are GPU-only). Outside a training process group it is plain BatchNorm.

    Global mean and biased variance come from two differentiable all-reduces (sum, then centred sum
    of squares); running statistics use the unbiased variance, as ``F.batch_norm`` does.
    """

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {x.dim()}D input)")

    @torch.no_grad()
    def update_running_stats(self, mean: torch.Tensor, unbiased_var: torch.Tensor) -> None:
        """Running statistics as ``F.batch_norm`` keeps them: exponential with ``momentum``, or the
        cumulative average over the batches seen when ``momentum`` is None."""
        self.num_batches_tracked.add_(1)
        momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
        self.running_mean.mul_(1 - momentum).add_(mean, alpha=momentum)
        self.running_var.mul_(1 - momentum).add_(unbiased_var, alpha=momentum)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        synced = self.training and dist.is_available() and dist.is_initialized() and \
            dist.get_world_size() > 1
        if not synced:
            return super().forward(x)
        dims = [0] + list(range(2, x.dim()))
        shape = [1, -1] + [1] * (x.dim() - 2)
        def all_reduce(tensor):
            return differentiable("all_reduce", tensor)
        count = all_reduce(torch.tensor(float(x.numel() // x.shape[1])))
        mean = all_reduce(x.sum(dim=dims)) / count
        centred = x - mean.reshape(shape)
        var = all_reduce(centred.pow(2).sum(dim=dims)) / count
        if self.track_running_stats:
            self.update_running_stats(mean.detach(), (var * count / max(count.item() - 1, 1)).detach())
        out = centred * torch.rsqrt(var + self.eps).reshape(shape)
        if self.affine:
            out = out * self.weight.reshape(shape) + self.bias.reshape(shape)
        return out


def convert_sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """Every BatchNorm computes its statistics over all ranks: PyTorch's ``SyncBatchNorm`` on GPUs,
    ``CpuSyncBatchNorm`` (same parameters and buffers, so the same state_dict keys) on CPU."""
    if device.type != "cpu":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.__class__ = CpuSyncBatchNorm
    return model

