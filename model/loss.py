"""The loss registry: training objectives by name (``--loss_type``). Each returns a dict with
``loss`` (to back-propagate) and the parts the logs report: ``loss_e``/``acc_e`` (episodic) and
``loss_g``/``acc_g`` (global), where they apply.

Each objective is built as ``cls(use_gc=...)``, is called as
``objective(support, query, label_g, n_way, class_weights)`` on shot-major embeddings, and declares
``needs_queries`` (an episode without queries is refused) and ``needs_class_weights`` (whether the
encoder's class weights are trained). Adding one: a file in ``model/losses/`` and a line here
(docs/architecture.md shows an example).
"""
import torch.nn as nn

from model.losses.prototypical import PrototypicalObjective
from model.losses.softmax import SoftmaxObjective

LOSSES = {
    "softmax": SoftmaxObjective,
    "prototypical": PrototypicalObjective,
}


def build_objective(loss_type: str, use_gc: bool) -> nn.Module:
    if loss_type not in LOSSES:
        raise ValueError(f"unknown loss_type {loss_type!r}: choose one of {', '.join(LOSSES)}")
    return LOSSES[loss_type](use_gc=use_gc)


class EpisodeObjective(nn.Module):
    """The objective named ``loss_type`` (GC applies to objectives that have it, i.e. prototypical)."""

    def __init__(self, loss_type: str, use_gc: bool):
        super().__init__()
        self.loss_type = loss_type
        self.objective = build_objective(loss_type, use_gc)
        self.needs_queries = self.objective.needs_queries
        self.needs_class_weights = self.objective.needs_class_weights

    def forward(self, support, query, label_g, n_way: int, class_weights) -> dict:
        return self.objective(support, query, label_g, n_way, class_weights)
