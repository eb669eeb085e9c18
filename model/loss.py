"""The loss registry: training objectives by name (``--loss_type``). Each returns a dict with
``loss`` (to back-propagate) and the parts the logs report: ``loss_e``/``acc_e`` (episodic) and
``loss_g``/``acc_g`` (global), where they apply.

Each objective is built as ``cls(use_gc=..., classifier=...)`` (``classifier``: the loss over all
training classes, ``classification_loss(name, loss_args)``: the paper's softmax, or a margin
softmax of model/losses/margin.py, not in the paper), is called as
``objective(support, query, label_g, n_way, class_weights)`` on shot-major embeddings, and declares
``needs_queries`` (an episode without queries is refused) and ``needs_class_weights`` (whether the
encoder's class weights are trained). Loss hyper-parameters travel as one ``loss_args`` mapping
(``{"margin": 0.2, "scale": 30.0}``); each classification loss takes the ones it names in its
``hyper_parameters`` (the paper's softmax: none). Adding one: a file in ``model/losses/`` and a line
here (docs/architecture.md shows an example).
"""
from typing import Mapping

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
CLASSIFIERS = {"softmax": SoftmaxLoss, **MARGIN_LOSSES}   # losses over all training classes
CLASSIFICATION_LOSSES = tuple(CLASSIFIERS)   # --gc_loss choices; as --loss_type: the softmax-like baselines
LOSS_ARGS = {"margin": DEFAULT_MARGIN, "scale": DEFAULT_SCALE}   # every hyper-parameter a loss takes


def classification_loss(name: str, loss_args: Mapping = None) -> nn.Module:
    """The loss over all training classes by name: the paper's softmax, or a margin softmax, built
    with the entries of ``loss_args`` it takes (defaults: ``LOSS_ARGS``)."""
    if name not in CLASSIFIERS:
        raise ValueError(f"unknown classification loss {name!r}: choose one of {', '.join(CLASSIFICATION_LOSSES)}")
    loss_args = dict(loss_args or {})
    unknown = sorted(set(loss_args) - set(LOSS_ARGS))
    if unknown:
        raise ValueError(f"unknown loss argument(s) {', '.join(unknown)}: the losses take {', '.join(LOSS_ARGS)}")
    cls = CLASSIFIERS[name]
    return cls(**{key: loss_args.get(key, LOSS_ARGS[key]) for key in cls.hyper_parameters})


def build_objective(loss_type: str, use_gc: bool, gc_loss: str = "softmax", loss_args: Mapping = None) -> nn.Module:
    """The objective ``loss_type``; its classifier is ``loss_type`` itself where that is a
    classification loss (softmax, amsoftmax, aamsoftmax), else ``gc_loss`` (prototypical's GC)."""
    if loss_type not in LOSSES:
        raise ValueError(f"unknown loss_type {loss_type!r}: choose one of {', '.join(LOSSES)}")
    classifier = classification_loss(loss_type if loss_type in CLASSIFICATION_LOSSES else gc_loss, loss_args)
    return LOSSES[loss_type](use_gc=use_gc, classifier=classifier)


class EpisodeObjective(nn.Module):
    """The objective named ``loss_type`` (GC applies to objectives that have it, i.e. prototypical)."""

    def __init__(self, loss_type: str, use_gc: bool, gc_loss: str = "softmax", loss_args: Mapping = None):
        super().__init__()
        self.loss_type = loss_type
        self.objective = build_objective(loss_type, use_gc, gc_loss, loss_args)
        self.needs_queries = self.objective.needs_queries
        self.needs_class_weights = self.objective.needs_class_weights

    def forward(self, support, query, label_g, n_way: int, class_weights) -> dict:
        return self.objective(support, query, label_g, n_way, class_weights)
