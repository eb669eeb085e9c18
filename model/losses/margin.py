"""Margin-based softmax losses over the class weights (not in the paper; opt-in with --loss_type or
--gc_loss): both classify L2-normalised embeddings against L2-normalised class weights, so that
``cos_j = <e / |e|, w_j / |w_j|>``, and push the target class's logit down by a margin ``m`` before
the cross-entropy at scale ``s``:

- AM-softmax (additive margin, CosFace; Wang et al. 2018): target logit ``s * (cos_y - m)``.
- AAM-softmax (additive angular margin, ArcFace; Deng et al. 2019): target logit ``s * cos(theta_y + m)``,
  where ``theta_y + m`` would pass pi (``cos_y < cos(pi - m)``) the logit continues as
  ``s * (cos_y - m * sin(m))`` so that it keeps falling with the angle (ArcFace's usual fix).

Other classes' logits are ``s * cos_j``. Accuracy is that of ``argmax_j cos_j`` (no margin), as the
softmax loss reports it. Each loss takes ``(embeddings, labels, class_weights)`` and returns
``(loss, accuracy)``, like ``model.losses.terms.SoftmaxLoss``.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

DEFAULT_MARGIN = 0.2
DEFAULT_SCALE = 30.0


def cosines(embeddings: torch.Tensor, class_weights: torch.Tensor) -> torch.Tensor:
    """(n, d) x (classes, d) -> (n, classes) cosine similarities."""
    return F.normalize(embeddings, dim=1) @ F.normalize(class_weights, dim=1).t()


class MarginSoftmaxLoss(nn.Module):
    """Cross-entropy over ``scale * cos`` with the target cosine replaced by ``target_logit(cos_y)``."""
    hyper_parameters = ("margin", "scale")   # the entries of ``loss_args`` it takes

    def __init__(self, margin: float = DEFAULT_MARGIN, scale: float = DEFAULT_SCALE):
        super().__init__()
        if margin < 0 or not scale > 0:
            raise ValueError(f"margin must be >= 0 and scale > 0, got margin {margin}, scale {scale}")
        self.margin, self.scale = float(margin), float(scale)

    def target_logit(self, cos_target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, embeddings, labels, class_weights):
        cos = cosines(embeddings, class_weights)
        target = self.target_logit(cos.gather(1, labels[:, None]))
        logits = self.scale * cos.scatter(1, labels[:, None], target)
        accuracy = (cos.argmax(dim=1) == labels).float().mean()
        return F.cross_entropy(logits, labels), accuracy


class AMSoftmaxLoss(MarginSoftmaxLoss):
    """Additive margin: ``cos_y - m``."""

    def target_logit(self, cos_target):
        return cos_target - self.margin


class AAMSoftmaxLoss(MarginSoftmaxLoss):
    """Additive angular margin: ``cos(theta_y + m)``, continued as ``cos_y - m sin(m)`` past pi - m."""

    def target_logit(self, cos_target):
        m = self.margin
        sin_target = torch.sqrt((1 - cos_target.square()).clamp(min=1e-12))   # finite gradient at 1
        shifted = cos_target * math.cos(m) - sin_target * math.sin(m)   # cos(theta + m)
        return torch.where(cos_target > math.cos(math.pi - m), shifted, cos_target - m * math.sin(m))


MARGIN_LOSSES = {"amsoftmax": AMSoftmaxLoss, "aamsoftmax": AAMSoftmaxLoss}
