"""AM-softmax and AAM-softmax: values worked out by hand on tiny examples, and their use in training."""
import json
import math

import pytest
import torch
import torch.nn.functional as F

from model.loss import EpisodeObjective, classification_loss
from model.losses.margin import AAMSoftmaxLoss, AMSoftmaxLoss

# Class weights along the axes (their norms must not matter), embeddings at known angles.
WEIGHTS = torch.tensor([[2.0, 0.0], [0.0, 3.0]])


def ce(logits, target):
    """Cross-entropy of one row by hand: log(sum exp) - target logit."""
    return math.log(sum(math.exp(v) for v in logits)) - logits[target]


def test_am_softmax_by_hand():
    embeddings = torch.tensor([[5.0, 0.0], [1.0, 2.0]])     # cosines (1, 0) and (1/sqrt5, 2/sqrt5)
    labels = torch.tensor([0, 1])
    loss, acc = AMSoftmaxLoss(margin=0.2, scale=10)(embeddings, labels, WEIGHTS)
    # row 1: logits (10 * (1 - 0.2), 0) -> log(1 + e^-8); row 2: (10/sqrt5, 10 * (2/sqrt5 - 0.2))
    first, second = math.log(1 + math.exp(-8)), math.log(1 + math.exp(10 / math.sqrt(5) - 20 / math.sqrt(5) + 2))
    assert (first, second) == (pytest.approx(3.35406e-4, rel=1e-5), pytest.approx(0.0810309, rel=1e-5))
    assert loss.item() == pytest.approx((first + second) / 2, abs=1e-6)
    assert acc.item() == 1.0


def test_aam_softmax_by_hand():
    embeddings = torch.tensor([[1.0, 2.0], [1.0, 0.9]])
    labels = torch.tensor([1, 1])
    loss, acc = AAMSoftmaxLoss(margin=0.2, scale=10)(embeddings, labels, WEIGHTS)
    # row 1: theta_y = atan2(2, 1) from class 1's axis = acos(2/sqrt5) = 0.463648; cos(0.663648) = 0.787751
    # row 2: theta_y = acos(0.9/sqrt1.81) = 0.837981; cos(1.037981) = 0.507960 (class 0: 1/sqrt1.81 = 0.743294)
    first = ce([10 / math.sqrt(5), 10 * 0.787751], 1)
    second = ce([10 * 0.743294, 10 * 0.507960], 1)
    assert math.cos(math.acos(2 / math.sqrt(5)) + 0.2) == pytest.approx(0.787751, abs=1e-6)
    assert math.cos(math.acos(0.9 / math.sqrt(1.81)) + 0.2) == pytest.approx(0.507960, abs=1e-6)
    assert loss.item() == pytest.approx((first + second) / 2, abs=1e-5)
    assert acc.item() == 0.5           # row 2 is closer to class 0 (accuracy uses the plain cosines)


def test_aam_softmax_past_pi_minus_margin_keeps_falling():
    """theta_y + m beyond pi: the target logit continues as cos_y - m sin(m), not cos(theta_y + m)."""
    y = math.sqrt(1 - 0.99 ** 2)
    embeddings = torch.tensor([[-0.99, y]])                  # theta to class 0 = 3.0 > pi - 0.2
    loss, _ = AAMSoftmaxLoss(margin=0.2, scale=10)(embeddings, torch.tensor([0]), WEIGHTS)
    target = -0.99 - 0.2 * math.sin(0.2)                     # -1.029734
    assert loss.item() == pytest.approx(ce([10 * target, 10 * y], 0), abs=1e-5)
    # why: past pi - m, cos(theta + m) rises again: theta = pi (worse) would score above theta = 3.0
    assert math.cos(math.pi + 0.2) > math.cos(math.acos(-0.99) + 0.2)


@pytest.mark.parametrize("margin_loss", [AMSoftmaxLoss, AAMSoftmaxLoss])
def test_zero_margin_is_scaled_cosine_softmax_and_gradients_are_finite(margin_loss):
    torch.manual_seed(0)
    embeddings = torch.randn(6, 8, requires_grad=True)
    weights = torch.randn(4, 8)
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    loss, _ = margin_loss(margin=0.0, scale=7)(embeddings, labels, weights)
    expected = F.cross_entropy(7 * F.normalize(embeddings, dim=1) @ F.normalize(weights, dim=1).t(), labels)
    assert loss.item() == pytest.approx(expected.item(), abs=1e-6)
    aligned = weights[labels].clone().requires_grad_(True)  # cos_y exactly 1
    loss, acc = margin_loss(margin=0.3, scale=30)(aligned, labels, weights)
    loss.backward()
    assert acc.item() == 1.0 and torch.isfinite(aligned.grad).all()


def test_episode_objective_uses_the_margin_loss_as_baseline_and_as_gc():
    torch.manual_seed(1)
    support, query = torch.randn(3, 16), torch.randn(6, 16)
    weights = torch.randn(5, 16)
    label_g = torch.tensor([4, 0, 2, 4, 0, 2, 4, 0, 2])
    aam = AAMSoftmaxLoss(0.25, 20)
    baseline = EpisodeObjective("aamsoftmax", False, loss_args={"margin": 0.25, "scale": 20})(support, query[:0], label_g, 3, weights)
    assert baseline.keys() == {"loss", "loss_g", "acc_g"}
    assert baseline["loss"].item() == pytest.approx(aam(support, label_g[:3], weights)[0].item(), abs=1e-6)
    gc = EpisodeObjective("prototypical", True, "amsoftmax", {"margin": 0.25, "scale": 20})(support, query, label_g, 3, weights)
    expected_g = AMSoftmaxLoss(0.25, 20)(torch.cat([support, query]), label_g, weights)[0]
    plain = EpisodeObjective("prototypical", True)(support, query, label_g, 3, weights)
    assert gc["loss_g"].item() == pytest.approx(expected_g.item(), abs=1e-6)
    assert gc["loss_e"].item() == plain["loss_e"].item()
    assert gc["loss"].item() == pytest.approx(gc["loss_e"].item() + gc["loss_g"].item(), abs=1e-6)
    with pytest.raises(ValueError, match="unknown classification loss 'arcface'"):
        classification_loss("arcface", {"margin": 0.2, "scale": 30})


@pytest.mark.parametrize("flags", [["--loss_type", "amsoftmax"],
                                   ["--loss_type", "prototypical", "--gc_loss", "aamsoftmax", "--margin", "0.3",
                                    "--scale", "15"]])
def test_margin_losses_train_from_the_command_line(data_root, flags, capsys):
    from tests.test_train import read_log, run_train
    folder = run_train(data_root, *flags, "--max_epoch", "1")
    config = json.loads((folder / "config.json").read_text())
    assert config["loss_type"] == flags[1] and math.isfinite(float(read_log(folder)[0]["loss_g"]))
    if "--gc_loss" in flags:
        assert (config["gc_loss"], config["margin"], config["scale"]) == ("aamsoftmax", 0.3, 15.0)
        assert "prototypical + GC (aamsoftmax)" in capsys.readouterr().out
    else:
        assert config["nb_class_train"] == 3 and read_log(folder)[0]["loss_e"] == ""   # a classification baseline


def test_bad_margin_is_a_clear_error(data_root):
    from common.errors import UserInputError
    from tests.test_train import run_train
    with pytest.raises(UserInputError, match=r"--margin must be in \[0, pi/2\), got -0.1"):
        run_train(data_root, "--loss_type", "aamsoftmax", "--margin", "-0.1")
    with pytest.raises(UserInputError, match="--scale must be positive and finite, got 0.0"):
        run_train(data_root, "--gc_loss", "amsoftmax", "--scale", "0")


def test_loss_args_reach_the_loss_as_one_mapping_and_config_json_keeps_its_fields():
    """--margin/--scale become ``TrainConfig.loss_args``; the step's classifier is built from it; the
    paper's softmax takes none of them; config.json still records margin and scale as fields."""
    import train
    from training.config import resolve_config
    from training.distributed import DistContext
    from training.step import build_step
    from model.model import background_resnet

    def objective_of(*flags):
        config = resolve_config(train.build_parser().parse_args(list(flags)))
        step = build_step(background_resnet(3, channels=4), config, DistContext(), torch.device("cpu"))
        return config, step.objective.objective

    config, objective = objective_of("--gc_loss", "aamsoftmax", "--margin", "0.3", "--scale", "15")
    assert config.loss_args == {"margin": 0.3, "scale": 15.0}
    assert (config.as_dict()["margin"], config.as_dict()["scale"]) == (0.3, 15.0)
    assert isinstance(objective.softmax, AAMSoftmaxLoss)
    assert (objective.softmax.margin, objective.softmax.scale) == (0.3, 15.0)
    config, objective = objective_of("--loss_type", "amsoftmax", "--nb_class_train", "3")
    assert config.loss_args == {"margin": 0.2, "scale": 30.0}           # the flags' defaults
    assert (objective.softmax.margin, objective.softmax.scale) == (0.2, 30.0)
    assert type(classification_loss("softmax", {"margin": 0.3, "scale": 15})).__name__ == "SoftmaxLoss"
    with pytest.raises(ValueError, match="unknown loss argument.s. gamma: the losses take margin, scale"):
        classification_loss("amsoftmax", {"gamma": 2.0})
