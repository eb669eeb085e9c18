"""Losses on tiny examples computed by hand."""
import math

import torch

from model.loss import EpisodeObjective
from model.losses.terms import PrototypicalLoss, SoftmaxLoss, prototypes_of


def test_softmax_by_hand():
    weights = torch.tensor([[3.0, 4.0], [0.0, 2.0]])      # normalised: [0.6, 0.8], [0, 1]
    embeddings = torch.tensor([[1.0, 1.0], [0.0, -1.0]])  # logits [1.4, 1.0], [-0.8, -1.0]
    loss, acc = SoftmaxLoss()(embeddings, torch.tensor([0, 1]), weights)
    expected = (math.log(1 + math.exp(-0.4)) + math.log(1 + math.exp(0.2))) / 2
    assert abs(loss.item() - expected) < 1e-6
    assert acc.item() == 0.5


def test_prototypical_one_shot_by_hand():
    support = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    query = torch.tensor([[2.0, 0.0], [0.0, 3.0]])
    loss, acc = PrototypicalLoss()(support, query, n_way=2)
    expected = (math.log(1 + math.exp(-2)) + math.log(1 + math.exp(-3))) / 2
    assert abs(loss.item() - expected) < 1e-6 and acc.item() == 1.0


def test_prototypes_average_every_shot():
    # shot-major: rows are (class 0, shot 0), (class 1, shot 0), (class 0, shot 1), (class 1, shot 1)
    support = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 4.0], [0.0, 0.0]])
    prototypes = prototypes_of(support, n_way=2)
    torch.testing.assert_close(prototypes, torch.tensor([[0.70710678, 0.70710678], [0.0, 1.0]]))
    query = torch.tensor([[1.0, 1.0], [-1.0, 1.0]])
    loss, acc = PrototypicalLoss()(support, query, n_way=2)
    logits = query @ prototypes.t()
    expected = (torch.logsumexp(logits[0], 0) - logits[0, 0] + torch.logsumexp(logits[1], 0) - logits[1, 1]) / 2
    assert abs(loss.item() - expected.item()) < 1e-6
    assert acc.item() == 1.0   # scores 1.414 vs 1.0 and 0.0 vs 1.0


def test_gc_adds_global_term_over_support_and_query():
    support = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    query = torch.tensor([[2.0, 0.0], [0.0, 3.0]])
    class_weights = torch.tensor([[0.0, 5.0], [1.0, 0.0], [1.0, 1.0]])
    label_g = torch.tensor([1, 0, 1, 0])
    parts = EpisodeObjective("prototypical", use_gc=True)(support, query, label_g, 2, class_weights)
    global_loss, _ = SoftmaxLoss()(torch.cat([support, query]), label_g, class_weights)
    episodic, _ = PrototypicalLoss()(support, query, 2)
    assert abs(parts["loss_g"].item() - global_loss.item()) < 1e-7
    assert abs(parts["loss"].item() - (episodic + global_loss).item()) < 1e-7
    # by hand for the first row: logits [0, 1, 0.7071] against label 1
    row = torch.tensor([0.0, 1.0, 2 ** -0.5])
    assert abs(SoftmaxLoss()(support[:1], label_g[:1], class_weights)[0].item()
               - (torch.logsumexp(row, 0) - 1.0).item()) < 1e-6


def test_softmax_classifies_every_crop_of_the_episode_as_the_original():
    """The original's softmax trains on nb_class_train x (n_shot + n_query) crops, queries included."""
    support = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    query = torch.tensor([[2.0, 0.0], [0.0, 3.0]])
    class_weights = torch.tensor([[0.0, 5.0], [1.0, 0.0], [1.0, 1.0]])   # normalised: [0,1] [1,0] [.71,.71]
    label_g = torch.tensor([1, 0, 1, 0])
    parts = EpisodeObjective("softmax", use_gc=False)(support, query, label_g, 2, class_weights)
    h = 2 ** -0.5
    logits = torch.tensor([[0.0, 1.0, h], [1.0, 0.0, h], [0.0, 2.0, 2 * h], [3.0, 0.0, 3 * h]])
    by_hand = (torch.logsumexp(logits, dim=1) - torch.tensor([1.0, 1.0, 2.0, 3.0])).mean()
    assert abs(parts["loss"].item() - by_hand.item()) < 1e-6 and parts["acc_g"].item() == 1.0
    support_only = EpisodeObjective("softmax", use_gc=False)(support, query[:0], label_g, 2, class_weights)
    assert abs(support_only["loss"].item() - (torch.logsumexp(logits[:2], 1) - 1.0).mean().item()) < 1e-6
