"""Opt-in faster training paths (issue 23): their settings, checks and the optimiser kernels.

Every path is off by default, so the paper's commands compute what they always computed:

- ``--channels_last``: the encoder's convolutions in NHWC layout (default: on the GPU, as before; off
  on the CPU). Same arithmetic, other kernels: equal to the default layout within float rounding.
- ``--sgd_impl``: torch's SGD kernels: ``default`` (torch's choice: foreach on the GPU, the for-loop
  on the CPU), ``for-loop``, ``foreach`` (bitwise equal to the for-loop), ``fused`` (one kernel;
  within float rounding).
- ``--compile [MODE]``: ``torch.compile`` of the encoder, the queries' time axis marked dynamic (one
  graph for the 200-frame support, one for every query length) (training/fast_step.py).
- ``--cuda_graphs``: forward + backward replayed from one CUDA graph per episode shape (the support's
  200 frames, each query length), all graphs in one memory pool (training/graphs.py). GPU only.

The loop already synchronises with the host only at logging intervals (training/loop.py: losses are
summed on the device, read every 10 steps for the progress bar), and episodes already come in pinned
memory with asynchronous copies on the GPU (training/data.py, training.step.batch_on_device).
"""
from common.errors import UserInputError

SGD_IMPLS = ("default", "for-loop", "foreach", "fused")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
SGD_KERNEL_OPTIONS = {"default": {}, "for-loop": {"foreach": False}, "foreach": {"foreach": True},
                      "fused": {"fused": True}}


def uses_channels_last(setting, device) -> bool:
    """``--channels_last`` (None: on the GPU only, the behaviour before the flag existed)."""
    return device.type == "cuda" if setting is None else bool(setting)


def sgd_kernel_options(sgd_impl: str) -> dict:
    """torch.optim.SGD's ``foreach``/``fused`` arguments for ``--sgd_impl``."""
    return dict(SGD_KERNEL_OPTIONS[sgd_impl])


def set_sgd_kernels(optimizer, sgd_impl: str) -> None:
    """Apply ``--sgd_impl`` after a resume (``load_state_dict`` brings back the saved run's choice)."""
    options = {"foreach": None, "fused": None, **sgd_kernel_options(sgd_impl)}
    for group in optimizer.param_groups:
        group.update(options)


def wants_fast_step(config) -> bool:
    """Whether the loop's step is training.fast_step.FastStep rather than training.step.train_step."""
    return bool(config.compile or config.cuda_graphs)


def check_fast_paths(config) -> None:
    """Combinations that cannot run, refused before any work."""
    if config.cuda_graphs and not config.use_cuda:
        raise UserInputError("--cuda_graphs needs a GPU (CUDA graphs replay GPU kernels); this run is on the CPU")
    if config.cuda_graphs and config.world_size > 1:
        raise UserInputError(f"--cuda_graphs runs in one process only; this is a torchrun launch of "
                             f"{config.world_size} processes (DDP's gradient hooks are not captured)")
    if config.compile is not None and config.compile not in COMPILE_MODES:
        raise UserInputError(f"--compile must be one of {', '.join(COMPILE_MODES)}, got {config.compile}")
    if config.sgd_impl not in SGD_IMPLS:
        raise UserInputError(f"--sgd_impl must be one of {', '.join(SGD_IMPLS)}, got {config.sgd_impl}")
