"""Issue 21, never lose a result: every input and output checked before the work, nothing clobbered,
calibrations that converge and know their model, config files checked like flags. Each failing
command is run as the user runs it (``run_main``: one ``error:`` line, exit 2) and every file that
existed before it is byte-compared afterwards."""
import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from common.errors import UserInputError
from model.checkpoint import checkpoint_digest
from evaluation.calibration import Calibration, fit_calibration, is_calibration_file, save_calibration
from tests.conftest import ROOT
from tests.test_robustness import ENV, error_line, run_entry
from tests.test_run_folder import flags as train_flags, wait_for
from tests.test_wav_training import data, flags as wav_flags  # noqa: F401 (data: the wav corpus fixture)


def tree_bytes(*roots) -> dict:
    """Every file below ``roots`` (or the file itself) -> its bytes: the before/after byte-compare."""
    files = {}
    for root in map(Path, roots):
        paths = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        files.update({str(path): path.read_bytes() for path in paths})
    return files


# ------------------------------------------------------------------ calibration fit that converges
def overlapping_scores(n=24, seed=0):
    """Labels and cosine-like scores in [-1, 1] whose classes overlap (a weak model's scores)."""
    rng = np.random.default_rng(seed)
    labels = np.r_[np.ones(n, int), np.zeros(n, int)]
    scores = np.clip(np.r_[rng.normal(0.3, 0.3, n), rng.normal(0.0, 0.3, n)], -1, 1)
    return labels, scores


def weighted_logloss_gradient(labels, scores, calibration):
    """d/d(slope, offset) of the prior-weighted cross-entropy the fit minimises (zero at its minimum)."""
    prior_logit = np.log(calibration.fit_prior / (1 - calibration.fit_prior))
    p = 1 / (1 + np.exp(-(calibration.llr(scores) + prior_logit)))
    weights = np.where(labels == 1, calibration.fit_prior / labels.sum(),
                       (1 - calibration.fit_prior) / (1 - labels).sum())
    residual = weights * (p - labels)
    return np.array([residual @ scores, residual.sum()])


def test_calibration_of_narrow_scores_converges_to_the_same_llrs_as_wide_ones():
    labels, wide = overlapping_scores()
    narrow = 0.985 + 0.005 * wide            # the same ranking squeezed into [0.98, 0.99]
    fitted_wide, fitted_narrow = fit_calibration(labels, wide), fit_calibration(labels, narrow)
    np.testing.assert_allclose(fitted_narrow.llr(narrow), fitted_wide.llr(wide), atol=1e-6)
    assert fitted_narrow.slope == pytest.approx(fitted_wide.slope / 0.005, rel=1e-6)
    for calibration, scores in ((fitted_wide, wide), (fitted_narrow, narrow)):
        gradient = weighted_logloss_gradient(labels, scores, calibration)   # a minimum, not the start
        assert np.abs(gradient).max() < 1e-6, gradient
    assert 0 < fitted_wide.slope < 100


def test_calibration_of_equal_scores_is_refused():
    with pytest.raises(UserInputError, match="all 4 scores are equal"):
        fit_calibration([1, 0, 1, 0], [0.5] * 4)


@pytest.mark.parametrize("fields, message", [
    ({"slope": True, "offset": 0}, "slope must be a float, got True"),
    ({"slope": 1, "offset": 0, "fit_prior": 7}, "fit_prior must be strictly between 0 and 1, got 7"),
    ({"slope": 1e308, "offset": 0}, "slope must be positive and at most 1e+06"),
    ({"slope": 1, "offset": "0"}, "offset must be a float, got '0'"),
    ({"slope": 1, "offset": 0, "n_target": 2.5}, "n_target must be a int, got 2.5"),
    ({"slope": 1, "offset": 0, "score_norm": "znorm"}, "score_norm must be one of none, asnorm"),
    ({"slope": 1, "offset": 0, "colour": "red"}, "unknown field(s) colour"),
    ({"slope": 1, "offset": 0, "version": 99}, "version must be a version this code reads"),
    ([1, 2], "expected a JSON object, found list"),
])
def test_malformed_calibration_values_are_refused(tmp_path, fields, message):
    path = tmp_path / "cal.json"
    path.write_text(json.dumps(fields))
    with pytest.raises(UserInputError) as caught:
        Calibration.load(path)
    assert str(caught.value).startswith(f"{path}: not a calibration file written by score.py --calibrate_out")
    assert message in str(caught.value)
    assert not is_calibration_file(path)


def test_nan_slope_in_json_is_refused(tmp_path):
    path = tmp_path / "cal.json"
    path.write_text('{"slope": NaN, "offset": 0}')
    with pytest.raises(UserInputError, match="slope must be finite, got nan"):
        Calibration.load(path)


def test_calibration_round_trips_with_its_version_and_checkpoint_digest(tmp_path):
    checkpoint, other = tmp_path / "a.pth", tmp_path / "b.pth"
    checkpoint.write_bytes(b"model a")
    other.write_bytes(b"model b")
    calibration = Calibration(2.0, -1.0, checkpoint=str(checkpoint), checkpoint_digest=checkpoint_digest(checkpoint))
    save_calibration(tmp_path / "cal.json", calibration)
    saved = json.loads((tmp_path / "cal.json").read_text())
    assert saved["version"] == 1
    assert saved["checkpoint_digest"] == hashlib.blake2b(b"model a", digest_size=16).hexdigest()
    loaded = Calibration.load(tmp_path / "cal.json")
    assert loaded == calibration and is_calibration_file(tmp_path / "cal.json")
    assert loaded.model_mismatch(checkpoint) is None
    assert f"than {other} (digest {hashlib.blake2b(b'model b', digest_size=16).hexdigest()[:12]})" in \
        loaded.model_mismatch(other)
    # a calibration written before the digest was recorded still loads (and cannot tell)
    (tmp_path / "old.json").write_text('{"slope": 2.0, "offset": -1.0, "fit_prior": 0.5}')
    assert Calibration.load(tmp_path / "old.json").model_mismatch(other) is None


# ------------------------------------------------------------ train.py --config: checked as flags
@pytest.mark.parametrize("setting, message", [
    ("loss_type: triplet", "loss_type: invalid choice: 'triplet' (choose from "),
    ("n_query: [1, 2]", "n_query: expected one value, got [1, 2]"),
    ("n_query: 2.5", "n_query: invalid int value: '2.5'"),
    ("use_GC: 3", "use_GC: expected a boolean"),
    ("n_shot: null", "n_shot: null is not a value of --n_shot"),
    ("val_features: [a, [b]]", "val_features: expected plain values"),
    ("reindex: maybe", "reindex: expected a boolean"),
    ("lr: {a: 1}", "lr: expected one value"),
])
def test_config_file_values_pass_the_flags_checks(data_root, setting, message):
    config = data_root / "run.yaml"
    config.write_text(setting + "\n")
    before = tree_bytes(data_root)
    line = error_line(run_entry("train", *train_flags(data_root, "--config", config)))
    assert line.startswith(f"error: --config {config}: {message}"), line
    assert tree_bytes(data_root) == before and not (data_root / "models").exists()


def test_config_file_values_are_converted_as_flags_are(data_root):
    import train
    config = data_root / "run.yaml"
    config.write_text("n_query: '3'\nuse_GC: 'no'\nval_features: [a, b]\nreindex: true\namp: 1\n")
    args = train.parse_args(["--config", str(config)])
    assert (args.n_query, args.use_GC, args.val_features, args.reindex, args.amp) == (3, False, ["a", "b"], True, True)


# ------------------------------------------------ --input wav: 8 kHz --rir_dir found before the claim
def test_8khz_room_response_is_refused_before_the_run_folder_is_claimed(data, tmp_path):
    rirs = tmp_path / "rirs"
    sf.write(rirs.joinpath("narrowband").mkdir(parents=True) or rirs / "narrowband/room.wav",
             np.r_[np.zeros(5), 1.0, np.exp(-np.arange(600) / 80.0)] * 0.5, 8000, subtype="PCM_16")
    before = tree_bytes(data, rirs)
    line = error_line(run_entry("train", *wav_flags(data, "models", "--max_epoch", 1, "--workers", 0,
                                                    "--input", "wav", "--augment", "--noise_dir", data / "musan",
                                                    "--rir_dir", rirs)))
    assert line == f"error: --rir_dir: {rirs}/narrowband/room.wav: 8000 Hz; augmentation audio must be 16 kHz"
    assert not (data / "models").exists()          # the run folder was never claimed
    assert tree_bytes(data, rirs) == before


def test_a_run_killed_before_its_first_checkpoint_leaves_a_folder_a_rerun_may_reuse(data_root):
    folder = data_root / "models/baseline_000"
    command = [sys.executable, "train.py", *map(str, train_flags(data_root, "--max_epoch", "1", "--n_episode", "400"))]
    killed = subprocess.Popen(command, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: (folder / "config.json").exists(), killed)   # claimed, config written, epoch 1 starting
    finally:
        killed.send_signal(signal.SIGKILL)
        killed.communicate()
    assert not list(folder.glob("checkpoint_*.pth"))
    left = tree_bytes(folder)
    result = run_entry("train", *train_flags(data_root, "--max_epoch", "1"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"note: {folder} holds a run that stopped before its first checkpoint (config from 20" in result.stderr
    [aside] = [path for path in folder.iterdir() if path.is_dir()]
    assert {str(aside / Path(name).relative_to(folder)): content for name, content in left.items()
            if not name.endswith("train.lock")} == tree_bytes(aside)     # moved aside, byte for byte
    assert (folder / "checkpoint_001.pth").is_file()
