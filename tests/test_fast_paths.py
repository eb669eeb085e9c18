"""The opt-in faster training paths (training/fast_paths.py, fast_step.py, graphs.py) against the eager
step on the CPU: bitwise where the arithmetic is the same, within a stated tolerance where the kernels
differ. The GPU only measures them (bench/gpu_speed.sh)."""
import pytest
import torch

import train
from common.errors import UserInputError
from data_loading.corpus import FeatureCorpus
from data_loading.episodes import EpisodeDataset
from tests.conftest import write_random_features
from training.config import resolve_config
from training.distributed import DistContext
from training.fast_paths import set_sgd_kernels
from training.fast_step import FastStep, compile_encoder, fast_train_step
from training.graphs import EagerReplay, GraphedSteps
from training.loop import run_epoch
from training.step import (batch_on_device, build_encoder, build_optimizer, build_step, forward_backward,
                           losses_backward, train_step)

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return FeatureCorpus(write_random_features(tmp_path_factory.mktemp("fast") / "feat", n_speakers=6,
                                               n_utterances=4, frames=(210, 300)))


def config_of(*flags):
    return resolve_config(train.build_parser().parse_args(
        ["--channels", "4", "--backbone", "resnet18", "--nb_class_train", "3", "--seed", "2", *flags]))


def episodes(corpus, config, n=4):
    """Episodes with variable query lengths (they repeat below: the same shape is met again)."""
    dataset = EpisodeDataset(corpus, config.episode, n, seed=7)
    return [dataset[index] for index in range(n)]


def parts_of(corpus, config, dtype=torch.float32):
    encoder = build_encoder(config, corpus.n_speakers, CPU, DistContext()).to(dtype)
    step = build_step(encoder, config, DistContext(), CPU).train()
    return encoder, step, build_optimizer(encoder, 0.1, config.sgd_impl)


def train_eagerly(corpus, config, batches):
    encoder, step, optimizer = parts_of(corpus, config)
    logs = [train_step(step, optimizer, batch, CPU) for batch in batches]
    return encoder, logs


def state(encoder) -> dict:
    return {name: value.detach().clone() for name, value in encoder.state_dict().items()}


def assert_states(one: dict, two: dict, tolerance: float = 0.0) -> None:
    assert one.keys() == two.keys()
    for name in one:
        torch.testing.assert_close(two[name], one[name], rtol=tolerance, atol=tolerance, msg=name)


def test_foreach_sgd_trains_bitwise_as_the_for_loop(corpus):
    batches = episodes(corpus, config_of())
    results = {impl: state(train_eagerly(corpus, config_of("--sgd_impl", impl), batches)[0])
               for impl in ("default", "for-loop", "foreach")}
    assert_states(results["for-loop"], results["default"])   # torch's choice on the CPU: the for-loop
    assert_states(results["for-loop"], results["foreach"])   # the same operations, batched: bitwise


def test_fused_sgd_steps_equal_the_for_loop_within_float_rounding():
    """On the same gradients (training amplifies any rounding difference through BatchNorm, so the
    optimiser is compared alone): 5 nesterov steps with weight decay, within 1e-6 relative."""
    generator = torch.Generator().manual_seed(0)
    start = [torch.randn(shape, generator=generator) for shape in ((8, 4, 3, 3), (256,), (5, 256))]
    grads = [[torch.randn(p.shape, generator=generator) for p in start] for _ in range(5)]
    results = {}
    for impl in ("for-loop", "fused"):
        params = [torch.nn.Parameter(p.clone()) for p in start]
        optimizer = build_optimizer(torch.nn.ParameterList(params), 0.1, impl)
        for step_grads in grads:
            for param, grad in zip(params, step_grads):
                param.grad = grad.clone()
            optimizer.step()
        results[impl] = {str(i): p.detach() for i, p in enumerate(params)}
    assert optimizer.param_groups[0]["fused"] is True
    assert_states(results["for-loop"], results["fused"], 1e-6)


def test_a_resumed_optimizer_takes_this_runs_sgd_kernels():
    encoder = torch.nn.Linear(3, 2)
    saved = build_optimizer(encoder, 0.1, "fused").state_dict()
    optimizer = build_optimizer(encoder, 0.1, "foreach")
    optimizer.load_state_dict(saved)
    assert optimizer.param_groups[0]["fused"] is True   # torch restores the saved run's choice ...
    set_sgd_kernels(optimizer, "foreach")
    assert (optimizer.param_groups[0]["foreach"], optimizer.param_groups[0]["fused"]) == (True, None)


def in_float64(batch: dict) -> dict:
    return {key: value.double() if value.is_floating_point() else value for key, value in batch.items()}


def steps_from_the_same_weights(encoder, run, batches) -> list:
    """(loss parts, gradients, BatchNorm statistics) of ``run(batch)`` on every batch, each from the
    initial weights (learning rate 0), in float64: this tiny untrained encoder (3-crop BatchNorm
    batches) turns float32 rounding into ~1 % gradient differences (the default path is 0.8 % from its
    own float64 gradients), so paths are compared where only a real difference can show."""
    results = []
    for batch in batches:
        parts = run(in_float64(batch))
        grads = {name: p.grad.clone() for name, p in encoder.named_parameters() if p.grad is not None}
        results.append((parts, grads, {name: b.clone() for name, b in encoder.named_buffers()}))
    return results


def assert_close_steps(one: list, two: list, tolerance: float) -> None:
    """Loss parts and BatchNorm statistics within ``tolerance``; each gradient within ``tolerance`` of
    its norm (relative to the whole tensor, so near-zero entries do not decide)."""
    assert len(one) == len(two)
    for (parts, grads, buffers), (parts2, grads2, buffers2) in zip(one, two):
        assert_states(parts, parts2, tolerance)
        assert_states(buffers, buffers2, tolerance)
        assert grads.keys() == grads2.keys()
        for name in grads:
            assert (grads[name] - grads2[name]).norm() <= tolerance * grads[name].norm(), name


def eager_steps(corpus, config, batches) -> list:
    encoder, step, _ = parts_of(corpus, config, torch.float64)
    optimizer = build_optimizer(encoder, 0.0)
    return steps_from_the_same_weights(encoder, lambda batch: train_step(step, optimizer, batch, CPU), batches)


def test_channels_last_on_the_cpu_equals_the_default_layout_within_rounding(corpus):
    # width 8: at width 4, torch 2.13's CPU backward of the channels-last 1x1 stride-2 convolution
    # (4 -> 8 channels, even frame counts) corrupts memory (a torch bug; widths 8 to 32 run)
    config = config_of("--channels", "8")
    batches = episodes(corpus, config, 3)
    nhwc = config_of("--channels", "8", "--channels_last")
    assert parts_of(corpus, nhwc)[0].pretrained.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert parts_of(corpus, config)[0].pretrained.layer1[0].conv1.weight.is_contiguous()
    assert_close_steps(eager_steps(corpus, config, batches), eager_steps(corpus, nhwc, batches), 1e-10)


@pytest.mark.parametrize("amp", [False, True])
def test_graph_replay_equals_the_eager_step_bitwise_one_capture_per_shape(corpus, amp):
    """bf16 too, against the eager step without autocast's weight cache, which a CUDA graph cannot use
    (with the cache, the support and query passes share one bf16 copy of each weight and their
    gradients are summed in bf16 before the cast back: other rounding, not other arithmetic)."""
    config = config_of()
    batches = episodes(corpus, config, 3)
    batches = batches + batches[::-1]   # shapes met again: replayed, not captured
    encoder, step, optimizer = parts_of(corpus, config)
    eager, eager_step, eager_optimizer = parts_of(corpus, config)

    def eager_step_without_cache(batch):
        eager_optimizer.zero_grad(set_to_none=True)
        parts = losses_backward(eager_step, *batch_on_device(batch, CPU), amp=amp, cache=False)
        eager_optimizer.step()
        return parts
    eager_logs = [eager_step_without_cache(batch) for batch in batches]
    if not amp:   # without autocast there is no cache: the loop's own step
        reference, _ = train_eagerly(corpus, config, batches)
        assert_states(state(reference), state(eager))
    backend = EagerReplay()
    fast = FastStep(step, optimizer, CPU, amp=amp, graphs=GraphedSteps(step, amp, backend))
    logs = [fast(batch) for batch in batches]
    shapes = {tuple(batch["query"].shape) for batch in batches}
    assert backend.captures == len(shapes) == len(fast.graphs.captured) and len(shapes) > 1
    for one, two in zip(eager_logs, logs):
        assert_states(one, two)
    assert_states(state(eager), state(encoder))   # weights and BatchNorm statistics: bitwise


def test_cuda_graphs_are_refused_on_the_cpu_and_under_torchrun(tmp_path):
    import subprocess
    import sys

    from tests.conftest import ROOT
    with pytest.raises(UserInputError, match="^--cuda_graphs needs a GPU"):
        config_of("--cuda_graphs", "--use_cuda", "False")
    done = subprocess.run([sys.executable, str(ROOT / "train.py"), "--cuda_graphs", "--use_cuda", "False",
                           "--save_path", str(tmp_path), "--model_dir", str(tmp_path / "models")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stdout == "" and not (tmp_path / "models").exists()
    assert done.stderr.splitlines() == ["error: --cuda_graphs needs a GPU (CUDA graphs replay GPU kernels); "
                                        "this run is on the CPU"]
    args = train.build_parser().parse_args(["--cuda_graphs", "--use_cuda", "True", "--nb_class_train", "4"])
    with pytest.raises(UserInputError, match="runs in one process only"):
        resolve_config(args, DistContext(0, 2, 0))
    plain = config_of()
    assert (plain.compile, plain.cuda_graphs, plain.sgd_impl, plain.channels_last) == (None, False, "default", None)
    assert fast_train_step(None, None, plain, CPU) is None   # the paper's commands: training.step.train_step


def test_compiled_encoder_equals_eager_one_graph_for_all_query_lengths(corpus):
    """torch.compile with the query time axis dynamic: TorchDynamo's capture and AOTAutograd's forward
    and backward graphs (backend aot_eager; inductor's C++ code generation took 320 s on this 2-core
    machine, so it runs on the GPU only, bench/gpu_speed.py). One graph for the support, one for
    every query length: no recompilation for the third length."""
    config = config_of("--compile")
    batches = episodes(corpus, config, 3)
    assert len({batch["query"].shape[-1] for batch in batches}) == 3
    encoder, step, _ = parts_of(corpus, config, torch.float64)
    keys = list(encoder.state_dict())
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    compile_encoder(encoder, config.compile, backend="aot_eager")
    fast = fast_train_step(step, build_optimizer(encoder, 0.0), config, CPU)
    compiled = steps_from_the_same_weights(encoder, fast, batches)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 2
    assert list(encoder.state_dict()) == keys   # checkpoints of a compiled run load anywhere
    assert_close_steps(eager_steps(corpus, config, batches), compiled, 1e-9)
    torch._dynamo.reset()


def test_bf16_autocast_on_the_cpu_is_within_a_loose_tolerance_of_float32(corpus):
    config = config_of()
    batch = episodes(corpus, config, 1)[0]
    results = []
    for amp in (False, True):
        encoder, step, _ = parts_of(corpus, config)
        parts = forward_backward(step, batch, CPU, amp)
        grad = torch.cat([p.grad.flatten() for p in encoder.parameters() if p.grad is not None])
        results.append((parts, grad))
    (fp32, grad32), (bf16, grad16) = results
    assert all(value.dtype == torch.float32 for value in bf16.values())
    assert bf16["loss"].item() == pytest.approx(fp32["loss"].item(), rel=3e-2)   # measured 1.7 %
    # bf16's 8-bit mantissa through this untrained, BatchNorm-heavy toy (whose own float32 gradients
    # are 0.8 % from float64): gradient cosine 0.90-0.93 measured at widths 4-16
    assert torch.nn.functional.cosine_similarity(grad32, grad16, dim=0) > 0.8


def test_the_loop_reads_losses_from_the_device_only_at_logging_intervals(monkeypatch):
    """No host synchronisation inside the step: 25 steps read the sums at steps 1, 11, 21 and 25 (the
    progress bar: loss and 2 accuracies) and once at the end (5 parts); the means are exact."""
    values = {"loss": 0.75, "loss_e": 0.5, "loss_g": 0.25, "acc_e": 0.5, "acc_g": 1.0}
    calls = []
    item = torch.Tensor.item
    monkeypatch.setattr(torch.Tensor, "item", lambda tensor: calls.append(1) or item(tensor))
    means = run_epoch(torch.nn.Identity(), None, [{}] * 25, CPU, config_of(), 1, DistContext(),
                      fast_step=lambda batch: {key: torch.tensor(value) for key, value in values.items()})
    assert means == values
    assert len(calls) == 4 * 3 + 5


def test_evaluation_precision_tf32_is_float32_on_the_cpu_and_bf16_within_a_loose_tolerance():
    """--eval_precision (evaluation/precision.py): fp32 is the encoder itself; on the CPU tf32 is the
    same arithmetic (bitwise), bf16 autocast moves embeddings by < 3 % and cosine scores by < 0.01;
    padded full utterances go through the wrapper's masked pass too."""
    import argparse

    import numpy as np

    from evaluation.embedding import cosine_rows, embed_crops, embed_utterances
    from evaluation.precision import add_precision_argument, with_precision
    from model.model import background_resnet
    torch.manual_seed(0)
    encoder = background_resnet(5, "resnet18", 8).eval()
    parser = argparse.ArgumentParser()
    add_precision_argument(parser)
    assert parser.parse_args([]).eval_precision == "fp32" and with_precision(encoder) is encoder
    rng = np.random.default_rng(0)
    crops = [rng.standard_normal((frames, 40)).astype(np.float32) for frames in (120, 120, 200, 90)]
    fp32 = embed_crops(encoder, crops, CPU, desc="")
    tf32 = embed_crops(with_precision(encoder, "tf32"), crops, CPU, desc="")
    bf16 = embed_crops(with_precision(encoder, "bf16"), crops, CPU, desc="")
    np.testing.assert_array_equal(tf32, fp32)
    assert bf16.dtype == np.float32 and np.abs(bf16 - fp32).max() < 0.03 * np.abs(fp32).max()
    assert np.abs(cosine_rows(bf16, np.roll(bf16, 1, 0)) - cosine_rows(fp32, np.roll(fp32, 1, 0))).max() < 0.01
    padded = embed_utterances(with_precision(encoder, "tf32"), crops, CPU, batch_size=4, desc="")
    np.testing.assert_allclose(padded, fp32, rtol=1e-5, atol=1e-5)   # masked pass = each alone
    assert with_precision(encoder, "bf16").channels == 8


def test_evaluation_scripts_load_the_model_in_the_precision_asked(tmp_path, capsys):
    """EER_full.py / EER_short.py / identification.py (evaluation/cli.py): --eval_precision wraps the
    loaded encoder (and says so); the default hands the encoder itself over, as before."""
    import argparse

    import configure
    from evaluation import cli
    from evaluation.precision import PrecisionEncoder
    from model.checkpoint import save_checkpoint
    from model.model import background_resnet
    save_checkpoint(tmp_path / "checkpoint_003.pth", epoch=3,
                    state_dict=background_resnet(5, "resnet18", 4).state_dict(), optimizer={})
    parser = argparse.ArgumentParser()
    cli.add_model_arguments(parser)
    loaded = {}
    for precision in ("fp32", "bf16"):
        args = configure.apply_common_arguments(parser.parse_args(
            ["--checkpoint", str(tmp_path / "checkpoint_003.pth"), "--use_cuda", "False", "--eval_precision",
             precision, "--out_dir", str(tmp_path)]))
        loaded[precision] = cli.load_model(args)[0]
    assert type(loaded["fp32"]).__name__ == "background_resnet"
    assert isinstance(loaded["bf16"], PrecisionEncoder) and loaded["bf16"].precision == "bf16"
    assert "width 4, 5 training classes) on cpu, bf16" in capsys.readouterr().out
