"""The loss terms the paper's objectives are made of.

- softmax: logits = embeddings . L2-normalised class weights, cross-entropy.
- prototypical: prototypes = L2-normalised mean of the n_shot support embeddings of each class;
  logits = query embeddings . prototypes; cross-entropy over the episode's classes.
Support and query embeddings are shot-major: row ``s * n_way + c`` is class ``c``'s ``s``-th sample.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return (logits.argmax(dim=1) == labels).float().mean()


class SoftmaxLoss(nn.Module):
    hyper_parameters = ()   # the paper's softmax: no margin, no scale

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
