"""The training step with ``--compile`` and/or ``--cuda_graphs`` (training/fast_paths.py): the same
computation as ``training.step.train_step`` (zero gradients, forward + backward, SGD step)."""
import torch

from training.fast_paths import wants_fast_step
from training.graphs import CudaGraphs, GraphedSteps
from training.step import batch_on_device, losses_backward


def compile_encoder(encoder: torch.nn.Module, mode: str, backend: str = "inductor") -> None:
    """``torch.compile`` the encoder in place (its state_dict keys, hence checkpoints, unchanged)."""
    options = {"mode": None if mode == "default" else mode} if backend == "inductor" else {}
    encoder.compile(backend=backend, **options)


class FastStep:
    """``batch -> loss parts``: one training step, compiled and/or replayed from CUDA graphs."""

    def __init__(self, step: torch.nn.Module, optimizer, device: torch.device, amp: bool,
                 dynamic_time: bool = False, graphs: GraphedSteps = None):
        self.step, self.optimizer, self.device, self.amp = step, optimizer, device, amp
        self.dynamic_time, self.graphs = dynamic_time, graphs

    def __call__(self, batch: dict) -> dict:
        support, query, label_g = batch_on_device(batch, self.device)
        if self.graphs is not None:
            parts = self.graphs(support, query, label_g)
        else:
            if self.dynamic_time:  # one compiled graph for every query length, not one per length
                torch._dynamo.mark_dynamic(query, 3)
            self.optimizer.zero_grad(set_to_none=True)
            parts = losses_backward(self.step, support, query, label_g, self.amp)
        self.optimizer.step()
        return parts


def fast_train_step(step, optimizer, config, device: torch.device, graph_backend=None):
    """The loop's step for ``--compile`` / ``--cuda_graphs``, or None (training.step.train_step)."""
    if not wants_fast_step(config):
        return None
    dynamic_time = bool(config.compile) and config.use_variable
    graphs = None
    if config.cuda_graphs:
        graphs = GraphedSteps(step, config.amp, graph_backend or CudaGraphs(), dynamic_time)
    return FastStep(step, optimizer, device, config.amp, dynamic_time, graphs)
