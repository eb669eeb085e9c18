"""The loss registry: training objectives by name (``--loss_type``). Each returns a dict with
``loss`` (to back-propagate) and the parts the logs report: ``loss_e``/``acc_e`` (episodic) and
``loss_g``/``acc_g`` (global), where they apply.

Each objective is built as ``cls(use_gc=..., classifier=...)`` (``classifier``: the loss over all
training classes, ``classification_loss(name, margin, scale)``: the paper's softmax, or a margin
softmax of model/losses/margin.py, not in the paper), is called as
``objective(support, query, label_g, n_way, class_weights)`` on shot-major embeddings, and declares
``needs_queries`` (an episode without queries is refused) and ``needs_class_weights`` (whether the
encoder's class weights are trained). Adding one: a file in ``model/losses/`` and a line here
(docs/architecture.md shows an example).
"""
import torch.nn as nn

from model.losses.margin import DEFAULT_MARGIN, DEFAULT_SCALE, MARGIN_LOSSES
from model.losses.prototypical import PrototypicalObjective
from model.losses.softmax import SoftmaxObjective
from model.losses.terms import SoftmaxLoss

LOSSES = {
    "softmax": SoftmaxObjective,
    "prototypical": PrototypicalObjective,
    "amsoftmax": SoftmaxObjective,      # the softmax baseline with an AM-softmax classifier
    "aamsoftmax": SoftmaxObjective,     # ... with an AAM-softmax (ArcFace) classifier
}
CLASSIFICATION_LOSSES = ("softmax",) + tuple(MARGIN_LOSSES)   # --gc_loss choices


def classification_loss(name: str, margin: float = DEFAULT_MARGIN, scale: float = DEFAULT_SCALE) -> nn.Module:
    """The loss over all training classes by name: the paper's softmax, or a margin softmax."""
    if name == "softmax":
        return SoftmaxLoss()
    if name not in MARGIN_LOSSES:
        raise ValueError(f"unknown classification loss {name!r}: choose one of {', '.join(CLASSIFICATION_LOSSES)}")
    return MARGIN_LOSSES[name](margin, scale)


def build_objective(loss_type: str, use_gc: bool, gc_loss: str = "softmax", margin: float = DEFAULT_MARGIN,
                    scale: float = DEFAULT_SCALE) -> nn.Module:
    """The objective ``loss_type``; its classifier is ``loss_type`` itself where that is a
    classification loss (softmax, amsoftmax, aamsoftmax), else ``gc_loss`` (prototypical's GC)."""
    if loss_type not in LOSSES:
        raise ValueError(f"unknown loss_type {loss_type!r}: choose one of {', '.join(LOSSES)}")
    classifier = classification_loss(loss_type if loss_type in CLASSIFICATION_LOSSES else gc_loss, margin, scale)
    return LOSSES[loss_type](use_gc=use_gc, classifier=classifier)


class EpisodeObjective(nn.Module):
    """The objective named ``loss_type`` (GC applies to objectives that have it, i.e. prototypical)."""

    def __init__(self, loss_type: str, use_gc: bool, gc_loss: str = "softmax", margin: float = DEFAULT_MARGIN,
                 scale: float = DEFAULT_SCALE):
        super().__init__()
        self.loss_type = loss_type
        self.objective = build_objective(loss_type, use_gc, gc_loss, margin, scale)
        self.needs_queries = self.objective.needs_queries
        self.needs_class_weights = self.objective.needs_class_weights

    def forward(self, support, query, label_g, n_way: int, class_weights) -> dict:
        return self.objective(support, query, label_g, n_way, class_weights)
