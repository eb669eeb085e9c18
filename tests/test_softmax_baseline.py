"""The softmax baseline as the original trains it: every classification loss (softmax, amsoftmax,
aamsoftmax) plans batches of ``nb_class_train x (n_shot + n_query)`` full 200-frame crops, ignores
``--use_variable`` (with a note when asked), counts epochs in those batches and runs all crops of a
batch through the encoder in one pass (one set of BatchNorm statistics). Prototypical is unchanged."""
import copy
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import train
from data_loading.corpus import FeatureCorpus
from data_loading.episodes import EpisodeConfig, EpisodeDataset
from training.config import episodes_per_epoch, resolve_config
from training.distributed import DistContext
from training.step import build_encoder, build_step, forward_backward
from tests.conftest import write_random_features

AUTHORS_LINE = "--loss_type softmax --use_GC False --n_shot 1 --n_query 0 --use_variable False --nb_class_train 256"


def config_from(flags: str):
    return resolve_config(train.build_parser().parse_args(flags.split()))


@pytest.fixture(scope="module")
def corpus_256(tmp_path_factory):
    """256 speakers x 3 utterances (768): one default softmax batch, or three of the authors' line."""
    return FeatureCorpus(write_random_features(tmp_path_factory.mktemp("feat"), n_speakers=256, n_utterances=3))


@pytest.mark.parametrize("flags, crops_per_speaker, batches_per_epoch", [
    ("--loss_type softmax", 3, 1),                         # default n_shot 1 + n_query 2: 3 full crops each
    (AUTHORS_LINE, 1, 3),                                  # the paper's baseline: one crop per speaker
    ("--loss_type softmax --use_variable True", 3, 1),     # asked for, ignored
    ("--loss_type aamsoftmax --n_shot 2 --n_query 1", 3, 1),
])
def test_a_softmax_batch_planned_from_user_flags_is_all_full_crops(corpus_256, flags, crops_per_speaker,
                                                                    batches_per_epoch):
    config = config_from(flags)
    assert config.nb_class_train == 256 and config.use_variable is False
    assert config.episode == EpisodeConfig(n_way=256, n_shot=crops_per_speaker, n_query=0, variable_query=False)
    n_batches = episodes_per_epoch(len(corpus_256), config.episode)
    assert n_batches == 768 // (256 * crops_per_speaker) == batches_per_epoch
    batch = EpisodeDataset(corpus_256, config.episode, n_batches, seed=config.seed)[n_batches - 1]
    assert batch["support"].shape == (256 * crops_per_speaker, 1, 40, 200)
    assert batch["query"].shape[0] == 0
    counts = np.bincount(batch["label_g"].numpy(), minlength=256)
    assert counts.tolist() == [crops_per_speaker] * 256          # every speaker, crops_per_speaker times


def test_the_crops_are_those_of_the_fixed_length_episode_merged_into_one_batch(corpus_256):
    """The same utterances, starts and labels as the old support + query split without variable
    lengths: only the split (and so the separate BatchNorm pass) is gone."""
    config = config_from("--loss_type softmax")
    merged = EpisodeDataset(corpus_256, config.episode, 1, seed=4)[0]
    split = EpisodeDataset(corpus_256, EpisodeConfig(256, 1, 2, variable_query=False), 1, seed=4)[0]
    assert torch.equal(merged["support"], torch.cat([split["support"], split["query"]]))
    assert torch.equal(merged["label_g"], split["label_g"])


def test_use_variable_note_only_when_asked_for(tmp_path, capsys):
    config_from("--loss_type softmax")
    assert "use_variable" not in capsys.readouterr().err
    config_from("--loss_type amsoftmax --use_variable True")
    assert ("note: --loss_type amsoftmax always trains on full 200-frame crops, as the original's softmax: "
            "--use_variable True is ignored") in capsys.readouterr().err
    config_from(AUTHORS_LINE)
    assert "use_variable" not in capsys.readouterr().err
    (tmp_path / "run.json").write_text(json.dumps({"loss_type": "softmax", "use_variable": True}))
    from_file = resolve_config(train.parse_args(["--config", str(tmp_path / "run.json")]))
    assert from_file.use_variable is False and "--use_variable True is ignored" in capsys.readouterr().err
    assert config_from("--loss_type prototypical").use_variable is True
    assert "use_variable" not in capsys.readouterr().err


def test_use_gc_note_only_when_asked_for_and_config_records_what_was_trained(tmp_path, capsys):
    """--use_GC True with a classification loss was ignored silently and recorded as true in config.json."""
    note = ("note: --loss_type softmax has no global classification term (GC is an add-on of prototypical "
            "episodes): --use_GC True is ignored")
    asked = config_from("--loss_type softmax --use_GC True")
    assert asked.use_GC is False and asked.as_dict()["use_GC"] is False and note in capsys.readouterr().err
    assert config_from("--loss_type softmax").use_GC is False
    assert config_from(AUTHORS_LINE).use_GC is False
    assert "use_GC" not in capsys.readouterr().err
    (tmp_path / "run.json").write_text(json.dumps({"loss_type": "aamsoftmax", "use_GC": True}))
    from_file = resolve_config(train.parse_args(["--config", str(tmp_path / "run.json")]))
    assert from_file.use_GC is False and "--use_GC True is ignored" in capsys.readouterr().err
    assert [config_from(flags).use_GC for flags in ("", "--loss_type prototypical", "--use_GC True",
                                                    "--use_GC False")] == [True, True, True, False]
    assert config_from("").objective_name == "prototypical + GC" and "use_GC" not in capsys.readouterr().err


def test_prototypical_episodes_are_as_before():
    assert config_from("").episode == EpisodeConfig(n_way=100, n_shot=1, n_query=2, variable_query=True)
    assert config_from("--use_variable False --n_query 3").episode == EpisodeConfig(100, 1, 3, variable_query=False)
    assert config_from("--loss_type prototypical --use_GC True --n_shot 1 --n_query 2 --use_variable True "
                       "--nb_class_train 100").cudnn_benchmark is False
    assert config_from("--loss_type softmax").cudnn_benchmark is True   # fixed shapes: autotuning pays off


def test_softmax_step_is_one_forward_over_all_crops(tmp_path):
    """The step's loss is the softmax of one train-mode forward over the whole batch (hand-built
    here from a copy of the encoder), and the encoder is called exactly once."""
    corpus = FeatureCorpus(write_random_features(tmp_path, n_speakers=5, n_utterances=3))
    config = config_from("--loss_type softmax --nb_class_train 5 --channels 4 --seed 2")
    batch = EpisodeDataset(corpus, config.episode, 1, seed=2)[0]
    encoder = build_encoder(config, corpus.n_speakers, torch.device("cpu"), DistContext())
    reference = copy.deepcopy(encoder).train()
    calls = []
    encoder.register_forward_hook(lambda module, inputs, output: calls.append(inputs[0].shape[0]))
    parts = forward_backward(build_step(encoder, config, DistContext(), torch.device("cpu")).train(), batch,
                             torch.device("cpu"))
    assert calls == [15]
    logits = reference(batch["support"]) @ F.normalize(reference.weight, dim=1).t()
    expected = F.cross_entropy(logits, batch["label_g"])
    assert parts["loss"].item() == pytest.approx(expected.item(), abs=1e-6)
    assert parts["acc_g"].item() == pytest.approx((logits.argmax(1) == batch["label_g"]).float().mean().item())
