"""ResNet trunk of the paper's speaker encoder (BasicBlocks, no max-pool, stride-1 7x7 stem).

Module names match the authors' checkpoint (``pretrained.conv1``, ``pretrained.layer1.0.bn1`` ...),
so a published ``state_dict`` loads with ``strict=True``.
"""
from typing import Optional

import torch
import torch.nn as nn

BLOCKS_PER_STAGE = {"resnet18": [2, 2, 2, 2], "resnet34": [3, 4, 6, 3]}


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)

    def masked_forward(self, x: torch.Tensor, lengths: torch.Tensor):
        """``forward`` for zero-padded items of ``lengths`` frames: padding is zeroed after each
        convolution stage; returns (output, output lengths)."""
        identity = x if self.downsample is None else self.downsample(x)
        lengths = conv_lengths(self.conv1, lengths)
        out = self.relu(self.bn1(self.conv1(x)))
        mask = time_mask(lengths, out.shape[-1], out.dtype)
        out = self.bn2(self.conv2(out * mask))
        return self.relu(out + identity) * mask, lengths


def time_mask(lengths: torch.Tensor, frames: int, dtype) -> torch.Tensor:
    """(n, 1, 1, frames): 1 on each item's valid frames, 0 on padding."""
    valid = torch.arange(frames, device=lengths.device)[None, :] < lengths[:, None]
    return valid[:, None, None, :].to(dtype)


def conv_lengths(conv: nn.Conv2d, lengths: torch.Tensor) -> torch.Tensor:
    """Valid output frames of ``conv`` (time is the last axis) for inputs of ``lengths`` frames."""
    kernel, stride, padding = conv.kernel_size[1], conv.stride[1], conv.padding[1]
    return torch.div(lengths + 2 * padding - kernel, stride, rounding_mode="floor") + 1


class ResNet(nn.Module):
    """Four stages of BasicBlocks with ``channels``, 2x, 4x, 8x feature maps, then mean pooling + BN."""

    def __init__(self, blocks_per_stage, channels: int = 32):
        super().__init__()
        widths = [channels, 2 * channels, 4 * channels, 8 * channels]
        self.embedding_size = widths[-1]
        self.conv1 = nn.Conv2d(1, channels, kernel_size=7, stride=1, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        in_planes = channels
        for index, (width, n_blocks) in enumerate(zip(widths, blocks_per_stage)):
            stride = 1 if index == 0 else 2
            blocks = [BasicBlock(in_planes, width, stride)]
            blocks += [BasicBlock(width, width) for _ in range(n_blocks - 1)]
            setattr(self, f"layer{index + 1}", nn.Sequential(*blocks))
            in_planes = width
        self.avg_bn = nn.BatchNorm1d(widths[-1])
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def main_path_convs(self) -> list:
        """The convolutions along the main path, in order (1x1 shortcuts run in parallel with a
        block's first conv, with its stride, so they add nothing to the receptive field)."""
        convs = [self.conv1]
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            for block in stage:
                convs += [block.conv1, block.conv2]
        return convs

    def time_geometry(self) -> tuple:
        """(total time stride, receptive-field radius in input frames) of ``feature_maps``' output frames."""
        stride, radius = 1, 0
        for conv in self.main_path_convs():
            kernel, conv_stride, padding = conv.kernel_size[1], conv.stride[1], conv.padding[1]
            assert 2 * padding == kernel - 1, "chunking assumes centred ('same') convolutions"
            radius += padding * stride
            stride *= conv_stride
        return stride, radius

    def output_frames(self, n_frames: int) -> int:
        """Time frames of ``feature_maps`` for an input of ``n_frames`` frames."""
        lengths = torch.tensor([n_frames])
        for conv in self.main_path_convs():
            lengths = conv_lengths(conv, lengths)
        return int(lengths[0])

    def feature_maps(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(batch, 1, n_mels, frames) -> pooled, batch-normalised (batch, 8 * channels).

        ``lengths``: valid frames of each zero-padded item; each output then equals the item's
        output run alone (the convolutions see the same zeros beyond its end; pooling averages the
        valid frames only)."""
        if lengths is None:
            return self.avg_bn(self.feature_maps(x).mean(dim=(2, 3)))
        lengths = conv_lengths(self.conv1, lengths)
        h = self.relu(self.bn1(self.conv1(x)))
        h = h * time_mask(lengths, h.shape[-1], h.dtype)
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            for block in stage:
                h, lengths = block.masked_forward(h, lengths)
        pooled = h.sum(dim=(2, 3)) / (h.shape[2] * lengths[:, None].to(h.dtype))
        return self.avg_bn(pooled)
