"""``--cuda_graphs``: forward + backward of an episode replayed from one CUDA graph per episode shape.

Support crops always have 200 frames; queries one of 100 lengths, so a run captures at most ~100
graphs, all in one memory pool (activations freed inside a capture are reused by the next one; each
graph keeps only its inputs, loss parts and gradients). The optimiser step stays outside the graphs
(the learning rate changes with the scheduler), on the gradients the replay wrote.

Capturing runs warm-up steps; BatchNorm's running statistics are put back afterwards, so the first
replay is the first step that counts, as in eager mode. ``EagerReplay`` is the CPU stand-in of
``CudaGraphs`` that the tests use: "capture" runs the step once, "replay" runs it again and writes
into the captured tensors, as a graph replay does.
"""
from dataclasses import dataclass
from typing import Callable

import torch

from training.step import losses_backward


def clear_grads(params) -> None:
    for param in params:
        param.grad = None


class CudaGraphs:
    """Captures on a side stream after ``warmup`` eager runs (1 once a graph exists: cuDNN/cuBLAS are
    initialised by then), into one shared memory pool."""

    def __init__(self, warmup: int = 3):
        self.warmup = warmup
        self.pool = torch.cuda.graph_pool_handle()

    def capture(self, run: Callable, params: list) -> tuple:
        """(outputs, gradients, replay) of ``run`` captured as a graph."""
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(self.warmup):
                clear_grads(params)
                run()
        self.warmup = 1
        torch.cuda.current_stream().wait_stream(side)
        clear_grads(params)
        graph = torch.cuda.CUDAGraph()
        # thread_local: the DataLoader's pin-memory thread may allocate while this thread captures
        with torch.cuda.graph(graph, pool=self.pool, capture_error_mode="thread_local"):
            outputs = run()
        return outputs, [param.grad for param in params], graph.replay


class EagerReplay:
    """CPU stand-in of CudaGraphs with a graph's semantics: results land in the captured tensors."""

    def __init__(self):
        self.captures = 0

    def capture(self, run: Callable, params: list) -> tuple:
        self.captures += 1
        clear_grads(params)
        outputs = run()
        grads = [param.grad for param in params]

        def replay():
            clear_grads(params)
            fresh = run()
            for key, value in outputs.items():
                value.copy_(fresh[key])
            for static, param in zip(grads, params):
                if static is not None:
                    static.copy_(param.grad)
        return outputs, grads, replay


@dataclass
class Captured:
    inputs: tuple
    outputs: dict
    grads: list
    replay: Callable


class GraphedSteps:
    """``(support, query, label_g) -> loss parts``, gradients left in the parameters' ``.grad``."""

    def __init__(self, step: torch.nn.Module, amp: bool, backend, dynamic_time: bool = False):
        self.step, self.amp, self.backend, self.dynamic_time = step, amp, backend, dynamic_time
        self.params = [param for param in step.parameters() if param.requires_grad]
        self.captured = {}

    def __call__(self, support, query, label_g) -> dict:
        key = (tuple(support.shape), tuple(query.shape), tuple(label_g.shape))
        if key not in self.captured:
            self.captured[key] = self.capture(support, query, label_g)
        graph = self.captured[key]
        for static, new in zip(graph.inputs, (support, query, label_g)):
            static.copy_(new, non_blocking=True)
        graph.replay()
        for param, grad in zip(self.params, graph.grads):
            param.grad = grad
        return {name: value.clone() for name, value in graph.outputs.items()}

    def capture(self, support, query, label_g) -> Captured:
        inputs = tuple(tensor.clone() for tensor in (support, query, label_g))
        if self.dynamic_time:  # --compile as well: one compiled graph for every query length
            torch._dynamo.mark_dynamic(inputs[1], 3)
        buffers = list(self.step.buffers())
        saved = [buffer.clone() for buffer in buffers]
        outputs, grads, replay = self.backend.capture(
            lambda: losses_backward(self.step, *inputs, amp=self.amp, cache=False), self.params)
        with torch.no_grad():
            for buffer, value in zip(buffers, saved):
                buffer.copy_(value)
        clear_grads(self.params)
        return Captured(inputs, outputs, grads, replay)
