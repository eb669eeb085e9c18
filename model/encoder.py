"""What every encoder in the registry offers (``Encoder``), so nothing outside ``model/`` needs to know
which network it holds.

- ``forward(x, lengths=None)``: ``(batch, 1, n_mels, frames)`` log-mel crops -> ``(batch,
  embedding_size)``; ``lengths`` (valid frames of zero-padded items) makes each row equal to the item
  run alone. ``check_input`` refuses anything else with a ``ValueError`` that says what was wrong.
- ``embedding_size``; ``weight`` (num_classes x embedding_size, the class weights the losses use);
  ``model_args`` (the constructor arguments a checkpoint records); ``backbone``, ``channels``,
  ``num_classes`` (what the commands report).
- Exact chunking of long recordings, optional (``evaluation/long_recordings.py``). An encoder whose
  embedding is ``embed_from_pooled(mean over frequency and time of frame_maps(x))`` and whose
  ``frame_maps`` output frame ``j`` depends only on input frames within ``radius`` of ``stride * j``
  returns ``ChunkGeometry(stride, radius)`` from ``chunk_geometry()`` and implements
  ``output_frames``, ``frame_maps`` and ``embed_from_pooled``; a recording of any length is then
  embedded in overlapping chunks, equal to one pass. The default, ``None``, says the encoder cannot be
  chunked exactly (attention or statistics over the whole recording, as ECAPA-TDNN's squeeze-excitation
  and attentive pooling): long recordings then get one forward over all their frames.
"""
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn as nn


@dataclass(frozen=True)
class ChunkGeometry:
    stride: int     # input frames per output frame of ``frame_maps``
    radius: int     # output frame j sees input frames within ``radius`` of ``stride * j``


class Encoder(nn.Module):
    """Base class of the registered encoders (model/registry.py); see the module docstring."""

    __jit_unused_properties__ = ["embedding_size"]
    n_mels: Optional[int] = None      # the filter count the encoder needs, when it needs one (ECAPA: 40)

    @property
    def embedding_size(self) -> int:
        return int(self.weight.shape[1])

    def check_input(self, x: torch.Tensor, lengths: Optional[torch.Tensor]) -> None:
        """``x`` is (batch, 1, n_mels, frames) with frames >= 1 (and ``n_mels`` filters when the encoder
        sets it); ``lengths``, when given, holds one
        valid-frame count in [1, frames] per item. Skipped while tracing (export.py): a traced graph
        would keep the checks' outcome for the example input as constants."""
        if torch.jit.is_tracing():
            return
        if x.dim() != 4 or x.shape[1] != 1 or x.shape[3] < 1:
            raise ValueError("encoder input must be (batch, 1, n_mels, frames) with at least one frame, got "
                             + str(list(x.shape)))
        if self.n_mels is not None and x.shape[2] != self.n_mels:
            raise ValueError("this encoder takes " + str(self.n_mels) + " mel filters, got " + str(x.shape[2]))
        if lengths is not None:
            if lengths.dim() != 1 or lengths.shape[0] != x.shape[0]:
                raise ValueError("lengths must hold one valid-frame count per item: " + str(list(lengths.shape))
                                 + " for a batch of " + str(x.shape[0]))
            if bool((lengths < 1).any()) or bool((lengths > x.shape[3]).any()):
                raise ValueError("lengths must lie between 1 and the input's " + str(x.shape[3]) + " frames")

    def chunk_geometry(self) -> Optional[ChunkGeometry]:
        """How to cut a long recording into exact chunks; None: it cannot be (one forward instead)."""
        return None

    def output_frames(self, n_frames: int) -> int:
        """Time frames of ``frame_maps`` for an input of ``n_frames`` frames (chunkable encoders)."""
        raise NotImplementedError(f"{type(self).__name__} cannot be chunked exactly")

    def frame_maps(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, channels, height, output frames) before the mean pooling (chunkable encoders)."""
        raise NotImplementedError(f"{type(self).__name__} cannot be chunked exactly")

    def embed_from_pooled(self, pooled: torch.Tensor) -> torch.Tensor:
        """(batch, channels) mean of ``frame_maps`` -> (batch, embedding_size) (chunkable encoders)."""
        raise NotImplementedError(f"{type(self).__name__} cannot be chunked exactly")
