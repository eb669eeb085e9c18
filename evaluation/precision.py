"""``--eval_precision``: the arithmetic of evaluation's forward passes on the GPU (opt-in).

- ``fp32`` (default): strict float32 (``evaluation.embedding.strict_fp32``): GPU trial scores equal
  the CPU's to 8e-7 (bench/results/2026-11-26-h200.md).
- ``tf32``: TF32 convolutions and matrix products (10-bit mantissa): scores moved by up to 1.9e-4 on
  an H200.
- ``bf16``: bfloat16 autocast: scores moved by up to 3.4e-3 on an H200; embeddings returned in float32.

On the CPU, ``tf32`` is the same arithmetic as ``fp32`` (the flags only concern CUDA); ``bf16``
autocasts there too.
"""
import torch
import torch.nn as nn

from evaluation.embedding import strict_fp32

EVAL_PRECISIONS = ("fp32", "tf32", "bf16")


def add_precision_argument(parser) -> None:
    parser.add_argument("--eval_precision", choices=EVAL_PRECISIONS, default="fp32",
                        help="forward passes in strict float32 (equal to the CPU's scores), TF32 or bfloat16 "
                             "autocast (faster on a GPU; scores move by ~2e-4 and ~3e-3)")


class PrecisionEncoder(nn.Module):
    """``model(x, lengths)`` in TF32 or under bfloat16 autocast, returning float32 embeddings; the
    attributes evaluation reads (``backbone``, ``channels``, ``num_classes``, ``model_args``) are the
    wrapped encoder's."""

    def __init__(self, encoder: nn.Module, precision: str):
        super().__init__()
        self.encoder = encoder
        self.precision = precision
        for name in ("backbone", "channels", "num_classes", "model_args"):
            if hasattr(encoder, name):
                setattr(self, name, getattr(encoder, name))

    def forward(self, x: torch.Tensor, lengths=None) -> torch.Tensor:
        if self.precision == "tf32":
            with strict_fp32(x.device, tf32=True):   # inside evaluation's strict_fp32: TF32 back on
                return self.encoder(x, lengths)
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            return self.encoder(x, lengths).float()


def with_precision(encoder: nn.Module, precision: str = "fp32") -> nn.Module:
    """The encoder itself for ``fp32``, else wrapped in ``PrecisionEncoder``."""
    if precision not in EVAL_PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}: choose one of {', '.join(EVAL_PRECISIONS)}")
    return encoder if precision == "fp32" else PrecisionEncoder(encoder, precision)
