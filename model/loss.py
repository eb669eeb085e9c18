"""Training objectives of the paper. Each loss returns ``(loss, accuracy)``; pick one by name.

- softmax: logits = embeddings . L2-normalised class weights, cross-entropy.
- prototypical: prototypes = L2-normalised mean of the n_shot support embeddings of each class;
  logits = query embeddings . prototypes; cross-entropy over the episode's classes.
- GC (global classification): support and query embeddings also classified against all training
  classes as in softmax; total = episodic + global.
Support and query embeddings are shot-major: row ``s * n_way + c`` is class ``c``'s ``s``-th sample.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return (logits.argmax(dim=1) == labels).float().mean()


class SoftmaxLoss(nn.Module):
    def forward(self, embeddings, labels, class_weights):
        logits = embeddings @ F.normalize(class_weights, dim=1).t()
        return F.cross_entropy(logits, labels), accuracy(logits, labels)


def prototypes_of(support: torch.Tensor, n_way: int) -> torch.Tensor:
    """(n_shot * n_way, d) shot-major support -> (n_way, d) L2-normalised class means."""
    n_shot = support.shape[0] // n_way
    return F.normalize(support.view(n_shot, n_way, -1).mean(dim=0), dim=1)


class PrototypicalLoss(nn.Module):
    def forward(self, support, query, n_way: int):
        logits = query @ prototypes_of(support, n_way).t()
        labels = torch.arange(n_way, device=query.device).repeat(query.shape[0] // n_way)
        return F.cross_entropy(logits, labels), accuracy(logits, labels)


class EpisodeObjective(nn.Module):
    """The training objective by name: ``softmax`` on the support crops (the paper's baseline), or
    ``prototypical`` on the episode, plus the global classification term when ``use_gc``.

    ``forward`` returns a dict with ``loss`` (to back-propagate) and the parts the logs report:
    ``loss_e``/``acc_e`` (episodic) and ``loss_g``/``acc_g`` (global), where they apply.
    """

    def __init__(self, loss_type: str, use_gc: bool):
        super().__init__()
        if loss_type not in ("softmax", "prototypical"):
            raise ValueError(f"unknown loss_type {loss_type!r}: choose softmax or prototypical")
        self.loss_type = loss_type
        self.use_gc = use_gc and loss_type == "prototypical"
        self.softmax = SoftmaxLoss()
        self.prototypical = PrototypicalLoss()

    def forward(self, support, query, label_g, n_way: int, class_weights) -> dict:
        if self.loss_type == "softmax":
            loss_g, acc_g = self.softmax(support, label_g[:support.shape[0]], class_weights)
            return {"loss": loss_g, "loss_g": loss_g, "acc_g": acc_g}
        loss_e, acc_e = self.prototypical(support, query, n_way)
        parts = {"loss": loss_e, "loss_e": loss_e, "acc_e": acc_e}
        if self.use_gc:
            loss_g, acc_g = self.softmax(torch.cat([support, query]), label_g, class_weights)
            parts.update(loss=loss_e + loss_g, loss_g=loss_g, acc_g=acc_g)
        return parts
