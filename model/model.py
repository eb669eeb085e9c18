"""The paper's speaker encoder: ``background_resnet`` = ResNet trunk + ReLU + bias-free projection.

``state_dict`` keys are those of the authors' published checkpoint: ``pretrained.*`` (trunk),
``fc1`` (256x256 projection) and ``weight`` (num_classes x 256 class weights used by the losses).
"""
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from model.encoder import ChunkGeometry, Encoder
from model.resnet import BLOCKS_PER_STAGE, ResNet

EMBEDDING_SIZE = 256


class background_resnet(Encoder):  # noqa: N801 - the name users know from the paper's code
    def __init__(self, num_classes: int, backbone: str = "resnet34", channels: int = 32):
        super().__init__()
        if backbone not in BLOCKS_PER_STAGE:
            raise ValueError(f"unknown backbone {backbone!r}; choose one of {sorted(BLOCKS_PER_STAGE)}")
        self.backbone = backbone
        self.channels = channels
        self.num_classes = num_classes
        self.model_args = {"num_classes": num_classes, "backbone": backbone, "channels": channels}
        self.pretrained = ResNet(BLOCKS_PER_STAGE[backbone], channels)
        width = self.pretrained.embedding_size
        self.fc1 = nn.Parameter(torch.empty(EMBEDDING_SIZE, width))
        self.weight = nn.Parameter(torch.empty(num_classes, EMBEDDING_SIZE))
        nn.init.xavier_uniform_(self.fc1)   # as the original: bound sqrt(6 / (256 + 256)) = 0.108
        nn.init.xavier_uniform_(self.weight)

    def forward(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(batch, 1, 40, frames) log-mel crops -> (batch, 256) speaker embeddings; with ``lengths``
        (valid frames of each zero-padded item) each row equals the item's embedding run alone."""
        self.check_input(x, lengths)
        pooled = self.pretrained(x, lengths)
        return F.linear(F.relu(pooled), self.fc1)

    # exact chunking of long recordings (model/encoder.py): convolutions, then a mean over the maps
    def chunk_geometry(self) -> ChunkGeometry:
        return ChunkGeometry(*self.pretrained.time_geometry())

    def output_frames(self, n_frames: int) -> int:
        return self.pretrained.output_frames(n_frames)

    def frame_maps(self, x: torch.Tensor) -> torch.Tensor:
        return self.pretrained.feature_maps(x)

    def embed_from_pooled(self, pooled: torch.Tensor) -> torch.Tensor:
        return F.linear(F.relu(self.pretrained.avg_bn(pooled)), self.fc1)
