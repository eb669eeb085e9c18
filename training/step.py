"""One training step of the paper: the encoder, its objective, SGD + ReduceLROnPlateau, forward/backward.

Each prototypical step runs support and query through the encoder in two forward passes (train-mode
BatchNorm statistics per pass, as the original) and back-propagates ``EpisodeObjective``. A
classification loss's batch has no queries (``TrainConfig.episode``): all its crops go through the
encoder in one pass, as the original's softmax.
"""
import torch
import torch.nn as nn

from data_loading.episodes import EpisodeConfig
from model.loss import LOSSES, EpisodeObjective
from model.registry import build_model
from training.config import TrainConfig
from training.distributed import DistContext, convert_sync_batchnorm, gather_shot_major
from training.fast_paths import sgd_kernel_options, uses_channels_last


class EpisodeStep(nn.Module):
    """Encoder + objective in one module (so DDP sees one forward): support and query embedded in two
    passes, gathered over ranks into the whole shot-major episode, then the losses."""

    def __init__(self, encoder: nn.Module, objective: EpisodeObjective, episode: EpisodeConfig,
                 ctx: DistContext = DistContext()):
        super().__init__()
        self.encoder = encoder
        self.objective = objective
        self.episode = episode
        self.ctx = ctx

    def forward(self, support, query, label_g) -> dict:
        n_way = self.episode.n_way
        support_emb = gather_shot_major(self.encoder(support), self.episode.n_shot, n_way, self.ctx)
        if self.episode.n_query:
            query_emb = gather_shot_major(self.encoder(query), self.episode.n_query, n_way, self.ctx)
        else:
            query_emb = support_emb[:0]
        return self.objective(support_emb, query_emb, label_g, n_way, self.encoder.weight)


def build_encoder(config: TrainConfig, num_classes: int, device: torch.device, ctx: DistContext):
    """The registry's model, the same initial weights on every rank (seeded), class weights trained
    only when the objective needs them."""
    torch.manual_seed(config.seed)
    encoder = build_model(config.model, num_classes=num_classes, backbone=config.backbone,
                          channels=config.channels)
    if config.sync_bn and ctx.enabled:
        encoder = convert_sync_batchnorm(encoder, device)
    encoder.weight.requires_grad_(LOSSES[config.loss_type](use_gc=config.use_GC).needs_class_weights)
    encoder = encoder.to(device)
    if uses_channels_last(config.channels_last, device):
        encoder = encoder.to(memory_format=torch.channels_last)
    return encoder


def build_step(encoder, config: TrainConfig, ctx: DistContext, device: torch.device) -> nn.Module:
    objective = EpisodeObjective(config.loss_type, config.use_GC, config.gc_loss or "softmax", config.loss_args)
    step = EpisodeStep(encoder, objective, config.episode, ctx)
    if ctx.enabled:
        device_ids = [device.index] if device.type == "cuda" else None
        step = nn.parallel.DistributedDataParallel(step, device_ids=device_ids)
    return step


def build_optimizer(encoder: nn.Module, lr: float, sgd_impl: str = "default") -> torch.optim.SGD:
    """The paper's SGD; ``sgd_impl`` (--sgd_impl): torch's choice, or its foreach / fused kernels."""
    return torch.optim.SGD(encoder.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=1e-4,
                           **sgd_kernel_options(sgd_impl))


def build_scheduler(optimizer) -> torch.optim.lr_scheduler.ReduceLROnPlateau:
    return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=0.1, patience=3,
                                                      min_lr=1e-5, threshold=1e-4)


def batch_on_device(batch: dict, device: torch.device) -> tuple:
    """(support, query, label_g) of an episode on ``device`` (asynchronous copies from pinned memory)."""
    memory_format = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    support = batch["support"].to(device, non_blocking=True, memory_format=memory_format)
    query = batch["query"].to(device, non_blocking=True, memory_format=memory_format)
    return support, query, batch["label_g"].to(device, non_blocking=True)


def losses_backward(step: nn.Module, support, query, label_g, amp: bool = False, cache: bool = True) -> dict:
    """Loss parts of one episode already on the device (detached), gradients accumulated into the
    parameters; ``cache=False``: no autocast weight cache (inside a CUDA graph capture)."""
    with torch.autocast(support.device.type, dtype=torch.bfloat16, enabled=amp, cache_enabled=cache):
        parts = step(support, query, label_g)
    parts["loss"].backward()
    return {key: value.detach().float() for key, value in parts.items()}


def forward_backward(step: nn.Module, batch: dict, device: torch.device, amp: bool = False) -> dict:
    """Loss parts of one episode (detached), gradients accumulated into the parameters."""
    return losses_backward(step, *batch_on_device(batch, device), amp)


def train_step(step: nn.Module, optimizer, batch: dict, device: torch.device, amp: bool = False) -> dict:
    optimizer.zero_grad(set_to_none=True)
    parts = forward_backward(step, batch, device, amp)
    optimizer.step()
    return parts
