"""Every script's --help teaches: each flag has help, each default is shown; the model is checked first."""
import argparse
import importlib
import subprocess
import sys

import pytest

import configure
from common.errors import UserInputError
from tests.conftest import ROOT

SCRIPTS = ("train", "EER_full", "EER_short", "identification", "dataprep", "verify", "embed", "score", "export",
           "demo", "feat_extract.feature_extraction")


class Captured(Exception):
    """Raised instead of parsing: carries the parser a script built."""


def script_parser(name: str, monkeypatch) -> argparse.ArgumentParser:
    def capture(parser, args=None, namespace=None):
        raise Captured(parser)
    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", capture)
    with pytest.raises(Captured) as caught:
        importlib.import_module(name).parse_args([])
    return caught.value.args[0]


def shown_help(parser, action) -> str:
    """The help line of ``action`` as --help prints it (defaults expanded), on one line."""
    return " ".join(parser._get_formatter()._expand_help(action).split())


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_flag_has_help_and_shows_its_default(name, monkeypatch):
    parser = script_parser(name, monkeypatch)
    assert isinstance(parser._get_formatter(), configure.HelpFormatter)
    for action in parser._actions:
        assert action.help and action.help.strip(), f"{name}: {action.option_strings or action.dest} has no help"
        if action.option_strings and all(action.default is not value for value in configure.NOT_SHOWN):
            shown = shown_help(parser, action)
            assert shown.endswith(f"(default: {action.default})") and shown.count("(default") == 1, \
                f"{name}: {action.option_strings[0]} does not show its default {action.default!r} once: {shown!r}"


def test_help_shows_defaults_and_keeps_the_descriptions_line_breaks():
    text = subprocess.run([sys.executable, "identification.py", "--help"], cwd=ROOT, capture_output=True,
                          text=True, check=True).stdout
    assert ("    python identification.py --n_folder 0 --cp_num 100 --n_shot 1 --n_query 5 --nb_class_test 50 \\\n"
            "        --nb_episode 1000 --enroll_length 500 --test_length 100\n") in text
    flat = " ".join(text.split())
    assert "--nb_class_test NB_CLASS_TEST speakers per episode (N-way) (default: 50)" in flat
    assert "--cp_num CP_NUM checkpoint (epoch) number: checkpoint_NNN.pth in that folder (default: 100)" in flat
    assert "--seed SEED random seed (runs are reproducible) (default: 0)" in flat      # 0 is a default too


def test_export_help_names_the_feature_function_where_it_lives(monkeypatch):
    text = script_parser("export", monkeypatch).format_help()
    assert "feat_extract.fbank.log_mel_fbank" in text
    from feat_extract.fbank import log_mel_fbank  # noqa: F401  (it is there)


def test_shared_flags_are_declared_once(monkeypatch):
    """--n_folder/--cp_num/--checkpoint/--model_dir, --save_path, --chunk_seconds: the same declaration
    (type, help) in every script that has them; only the defaults may differ."""
    seen = {}
    for name in SCRIPTS:
        for action in script_parser(name, monkeypatch)._actions:
            flag = action.option_strings[0] if action.option_strings else None
            if flag in ("--n_folder", "--cp_num", "--checkpoint", "--model_dir", "--save_path", "--chunk_seconds"):
                seen.setdefault(flag, set()).add((action.type, action.help))
    assert set(seen) == {"--n_folder", "--cp_num", "--checkpoint", "--model_dir", "--save_path", "--chunk_seconds"}
    assert all(len(declarations) == 1 for declarations in seen.values()), seen


@pytest.mark.parametrize("script, extra", [
    ("EER_full", ["--trials", "missing_list.txt"]),
    ("EER_short", ["--protocol", "H"]),
    ("identification", []),
])
def test_a_missing_checkpoint_is_reported_before_missing_lists_and_features(script, extra, tmp_path):
    module = importlib.import_module(script)
    flags = ["--save_path", str(tmp_path / "no_data"), "--model_dir", str(tmp_path / "no_models"), *extra]
    with pytest.raises(UserInputError, match=r"^no checkpoint .*no_models/baseline_000/checkpoint_100\.pth "
                                             r"\(--cp_num 100\); checkpoints in .*: none$"):
        module.main(flags)
    with pytest.raises(UserInputError, match=r"^checkpoint not found: .*elsewhere\.pth$"):
        module.main(flags + ["--checkpoint", str(tmp_path / "elsewhere.pth")])
