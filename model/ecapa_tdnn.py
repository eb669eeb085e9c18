"""ECAPA-TDNN (Desplanques, Thienpondt, Demuynck, Interspeech 2020) as a second encoder (not in the
paper; ``--model ecapa_tdnn``, ``--channels 512`` or ``1024`` as the ECAPA paper's two sizes).

It takes the same (batch, 1, 40, frames) log-mel crops as ``background_resnet`` (the 40 filters are
the input channels of 1-d convolutions over time) and gives (batch, 256) embeddings for any number of
frames, with the same ``weight`` (num_classes x 256) class weights for the softmax / GC losses:

    conv(k5) -> 3 SE-Res2Blocks (k3, dilation 2/3/4, scale 8, residual) -> concatenation of the three
    blocks' outputs -> conv(1x1, 3C -> 1536) -> attentive statistics pooling with global context
    (weighted mean and std over time) -> BN -> linear 3072 -> 256 -> BN.

Every convolution is followed by ReLU then BatchNorm, as in the ECAPA paper. Checkpoints record it
as ``model: ecapa_tdnn`` with its ``model_args`` (model/registry.py).
"""
from typing import Optional

import torch
import torch.nn as nn

from model.encoder import Encoder
from model.model import EMBEDDING_SIZE

RES2_SCALE = 8
SE_BOTTLENECK = 128
ATTENTION_CHANNELS = 128
POOLED_CHANNELS = 1536
DILATIONS = (2, 3, 4)


class ConvReluBn(nn.Sequential):
    def __init__(self, inputs: int, outputs: int, kernel: int = 1, dilation: int = 1):
        super().__init__(nn.Conv1d(inputs, outputs, kernel, dilation=dilation, padding=dilation * (kernel - 1) // 2),
                         nn.ReLU(), nn.BatchNorm1d(outputs))


class Res2Conv(nn.Module):
    """Res2Net: channel groups where group i convolves (its input + group i-1's output); group 0 passes."""

    def __init__(self, channels: int, kernel: int, dilation: int, scale: int = RES2_SCALE):
        super().__init__()
        if channels % scale:
            raise ValueError(f"ECAPA-TDNN channels must be a multiple of {scale}, got {channels}")
        width = channels // scale
        self.scale = scale
        self.convs = nn.ModuleList(ConvReluBn(width, width, kernel, dilation) for _ in range(scale - 1))

    def forward(self, x):
        groups = torch.chunk(x, self.scale, dim=1)
        outputs, previous = [groups[0]], None
        for group, conv in zip(groups[1:], self.convs):
            previous = conv(group if previous is None else group + previous)
            outputs.append(previous)
        return torch.cat(outputs, dim=1)


class SqueezeExcitation(nn.Module):
    def __init__(self, channels: int, bottleneck: int = SE_BOTTLENECK):
        super().__init__()
        self.gate = nn.Sequential(nn.Conv1d(channels, bottleneck, 1), nn.ReLU(),
                                  nn.Conv1d(bottleneck, channels, 1), nn.Sigmoid())

    def forward(self, x):
        return x * self.gate(x.mean(dim=2, keepdim=True))


class SERes2Block(nn.Sequential):
    def __init__(self, channels: int, dilation: int):
        super().__init__(ConvReluBn(channels, channels), Res2Conv(channels, 3, dilation),
                         ConvReluBn(channels, channels), SqueezeExcitation(channels))

    def forward(self, x):
        return x + super().forward(x)


def mean_and_std(x: torch.Tensor, weights: torch.Tensor) -> tuple:
    """Weighted mean and standard deviation over time (dim 2); weights sum to 1 over time."""
    mean = (x * weights).sum(dim=2)
    variance = (x.square() * weights).sum(dim=2) - mean.square()
    return mean, variance.clamp(min=1e-6).sqrt()


class AttentiveStatisticsPooling(nn.Module):
    """Channel- and context-dependent attention over frames; returns [weighted mean, weighted std]."""

    def __init__(self, channels: int, attention: int = ATTENTION_CHANNELS):
        super().__init__()
        self.attention = nn.Sequential(ConvReluBn(3 * channels, attention), nn.Tanh(),
                                       nn.Conv1d(attention, channels, 1))

    def forward(self, x):
        uniform = torch.ones_like(x[:, :1]) / x.shape[2]
        mean, std = mean_and_std(x, uniform)
        context = torch.cat([x, mean[..., None].expand_as(x), std[..., None].expand_as(x)], dim=1)
        weights = torch.softmax(self.attention(context), dim=2)
        return torch.cat(mean_and_std(x, weights), dim=1)


class EcapaTdnn(nn.Module):
    def __init__(self, channels: int = 512, n_mels: int = 40):
        super().__init__()
        self.stem = ConvReluBn(n_mels, channels, kernel=5)
        self.blocks = nn.ModuleList(SERes2Block(channels, dilation) for dilation in DILATIONS)
        self.aggregate = nn.Sequential(nn.Conv1d(len(DILATIONS) * channels, POOLED_CHANNELS, 1), nn.ReLU())
        self.pooling = AttentiveStatisticsPooling(POOLED_CHANNELS)
        self.pooled_norm = nn.BatchNorm1d(2 * POOLED_CHANNELS)
        self.projection = nn.Linear(2 * POOLED_CHANNELS, EMBEDDING_SIZE)
        self.embedding_norm = nn.BatchNorm1d(EMBEDDING_SIZE)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self.stem(features)
        outputs = []
        for block in self.blocks:
            x = block(x)
            outputs.append(x)
        pooled = self.pooling(self.aggregate(torch.cat(outputs, dim=1)))
        return self.embedding_norm(self.projection(self.pooled_norm(pooled)))


class EcapaEncoder(Encoder):
    """ECAPA-TDNN with the encoder interface (model/encoder.py):
    (n, 1, 40, T) -> (n, 256), ``forward(x, lengths)``, ``weight`` (num_classes x 256) for the
    classification losses, ``model_args``. ``backbone`` (the ResNet depth flag) does not apply."""
    n_mels = 40     # the stem's input channels

    def __init__(self, num_classes: int, channels: int = 512, backbone: str = None):
        super().__init__()
        self.backbone, self.channels, self.num_classes = "ecapa_tdnn", channels, num_classes
        self.model_args = {"num_classes": num_classes, "channels": channels}
        self.ecapa = EcapaTdnn(channels, self.n_mels)
        self.weight = nn.Parameter(torch.empty(num_classes, EMBEDDING_SIZE))
        nn.init.xavier_uniform_(self.weight)

    def forward(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        """With ``lengths`` (valid frames of zero-padded items), items of each length run together,
        cut to that length, so every row equals the item's embedding run alone. Not chunkable exactly
        (``chunk_geometry`` is None): squeeze-excitation and attentive pooling look at every frame."""
        self.check_input(x, lengths)
        if lengths is None or bool((lengths == x.shape[3]).all()):
            return self.ecapa(x.flatten(1, 2))   # (n, 1, 40, T) -> (n, 40, T)
        out = x.new_empty(len(x), EMBEDDING_SIZE)
        for length in torch.unique(lengths).tolist():
            members = torch.nonzero(lengths == length).flatten()
            # .to: under bfloat16 autocast (--eval_precision bf16) the rows come out in bfloat16
            out[members] = self.ecapa(x[members, :, :, :length].flatten(1, 2)).to(out.dtype)
        return out
