"""CPU guards for what the GPU check (bench/gpu_check.sh, bench/results/2026-11-26-h200.md) found."""
import pytest
import torch

import train
from training.config import resolve_config
from evaluation.embedding import strict_fp32


@pytest.fixture
def tf32_flags():
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def flags():
    return torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32


def test_evaluation_on_a_gpu_runs_in_strict_float32_and_restores_the_flags(tf32_flags):
    # On the H200, TF32 convolutions (PyTorch's default for cuDNN) moved trial scores by up to 1.9e-4
    # against the CPU; strict float32 by 5e-7.
    with strict_fp32("cuda"):
        assert flags() == (False, False)
    assert flags() == (True, True)
    with strict_fp32(torch.device("cuda:0"), tf32=True):
        assert flags() == (True, True)
    torch.backends.cudnn.allow_tf32 = False
    with strict_fp32("cpu"):  # nothing to change on the CPU
        assert flags() == (False, True)


def test_strict_float32_restores_the_flags_after_an_error(tf32_flags):
    with pytest.raises(RuntimeError), strict_fp32("cuda"):
        raise RuntimeError("forward failed")
    assert flags() == (True, True)


@pytest.mark.parametrize("argv, expected", [
    ([], False),                                             # variable queries: a new shape per length
    (["--use_variable", "False"], True),                     # fixed shapes: autotuning pays off
    (["--cudnn_benchmark", "True"], True),
    (["--use_variable", "False", "--cudnn_benchmark", "False"], False),
])
def test_cudnn_autotuning_default_follows_the_query_lengths(argv, expected):
    config = resolve_config(train.build_parser().parse_args(argv))
    assert config.cudnn_benchmark is expected
