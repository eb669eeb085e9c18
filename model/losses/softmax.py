"""The paper's softmax baseline: every crop of the episode classified against all training classes."""
import torch
import torch.nn as nn

from model.losses.terms import SoftmaxLoss


class SoftmaxObjective(nn.Module):
    """Cross-entropy of support and query embeddings (``nb_class_train x (n_shot + n_query)`` crops,
    as the original trains softmax) against the L2-normalised class weights."""
    needs_queries = False     # uses the queries when the episode has them (n_query > 0)

    def __init__(self, use_gc: bool = False, classifier: nn.Module = None):
        super().__init__()
        self.needs_class_weights = True
        self.softmax = classifier if classifier is not None else SoftmaxLoss()   # or a margin softmax

    def forward(self, support, query, label_g, n_way: int, class_weights) -> dict:
        embeddings = torch.cat([support, query]) if len(query) else support
        loss_g, acc_g = self.softmax(embeddings, label_g[:embeddings.shape[0]], class_weights)
        return {"loss": loss_g, "loss_g": loss_g, "acc_g": acc_g}
