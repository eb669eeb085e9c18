"""Prototypical episodes, plus the paper's global classification (GC) term when ``use_gc``."""
import torch
import torch.nn as nn

from model.losses.terms import PrototypicalLoss, SoftmaxLoss


class PrototypicalObjective(nn.Module):
    """Queries classified against the support prototypes (episodic); with GC, support and query
    embeddings are also classified against all training classes (global); total = episodic + global."""
    needs_queries = True

    def __init__(self, use_gc: bool = True, classifier: nn.Module = None):
        super().__init__()
        self.use_gc = use_gc
        self.needs_class_weights = use_gc
        self.prototypical = PrototypicalLoss()
        self.softmax = classifier if classifier is not None else SoftmaxLoss()   # GC: or a margin softmax

    def forward(self, support, query, label_g, n_way: int, class_weights) -> dict:
        loss_e, acc_e = self.prototypical(support, query, n_way)
        parts = {"loss": loss_e, "loss_e": loss_e, "acc_e": acc_e}
        if self.use_gc:
            loss_g, acc_g = self.softmax(torch.cat([support, query]), label_g, class_weights)
            parts.update(loss=loss_e + loss_g, loss_g=loss_g, acc_g=acc_g)
        return parts
