"""Issue 21, never lose a result: every input and output checked before the work, nothing clobbered,
calibrations that converge and know their model, config files checked like flags. Each failing
command is run as the user runs it (``run_main``: one ``error:`` line, exit 2) and every file that
existed before it is byte-compared afterwards."""
import contextlib
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
from tests.conftest import ROOT, TRAIN_FEATURES, write_random_features
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
    ({"slope": 1, "offset": 0, "colour": "red"}, "unknown field(s) 'colour'"),
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


# ------------------------------------------------------------------- score / embed / verify / API
import embed as embed_cmd    # noqa: E402
import score as score_cmd    # noqa: E402
import verify as verify_cmd  # noqa: E402
from evaluation.embedding_files import load_embeddings  # noqa: E402
from speaker_api import SpeakerEncoder  # noqa: E402
from tests.test_api import as_int16, run_in_process, tiny_checkpoint, voice_like  # noqa: E402


@pytest.fixture
def rig(tmp_path):
    """Two tiny models (a.pth, b.pth), four recordings, a labelled trial list over them."""
    models = tmp_path / "models"
    models.mkdir()
    tiny_checkpoint(models / "a.pth", seed=0)
    tiny_checkpoint(models / "b.pth", seed=1)
    audio = tmp_path / "audio"
    audio.mkdir()
    for number in range(4):
        sf.write(audio / f"r{number}.wav", as_int16(voice_like(seconds=0.8, pitch=110 + 25 * number, seed=number)),
                 16000)
    (tmp_path / "trials.txt").write_text("1 r0.wav r1.wav\n0 r0.wav r2.wav\n1 r2.wav r3.wav\n0 r1.wav r3.wav\n")
    return tmp_path


def score_flags(rig, *extra):
    return ["--checkpoint", rig / "models/a.pth", "--trials", rig / "trials.txt", "--audio_root", rig / "audio",
            "--save_path", rig / "no_features", "--out_dir", rig / "out", *extra]


def refused(main, capsys, *argv) -> str:
    """The one ``error:`` line of a refused command (exit 2, nothing on stderr but that line and notes)."""
    result = run_in_process(main, capsys, *argv)
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "checkpoint: " not in result.stderr, "the model was loaded: the check came after work began"
    return errors[0]


def test_calibrate_out_never_replaces_a_file_that_is_not_a_calibration(rig, capsys):
    victim = rig / "models/a.pth"                                   # the checkpoint itself
    before = tree_bytes(rig)
    line = refused(score_cmd.main, capsys, *score_flags(rig, "--calibrate_out", victim))
    assert line == (f"error: --calibrate_out {victim} exists and is not a calibration file; it is never replaced: "
                    "choose another name (nothing was written)")
    line = refused(score_cmd.main, capsys, *score_flags(rig, "--calibrate_out", victim, "--overwrite"))
    assert "is not a calibration file; it is never replaced" in line
    assert tree_bytes(rig) == before and not (rig / "out").exists()


def test_calibrate_out_replaces_a_calibration_only_with_overwrite(rig, capsys):
    calibration = rig / "cal.json"
    save_calibration(calibration, Calibration(1.0, 0.0))
    before = tree_bytes(rig)
    line = refused(score_cmd.main, capsys, *score_flags(rig, "--calibrate_out", calibration))
    assert line.startswith(f"error: --calibrate_out {calibration} already holds a calibration; pass --overwrite")
    assert tree_bytes(rig) == before
    result = run_in_process(score_cmd.main, capsys, *score_flags(rig, "--calibrate_out", calibration, "--overwrite"))
    assert result.returncode == 0, result.stderr
    fitted = Calibration.load(calibration)
    assert fitted.checkpoint_digest == checkpoint_digest(rig / "models/a.pth") and fitted.n_target == 2


@pytest.mark.parametrize("case, extra, message", [
    ("all target", (), "{t}: all 2 trials are target trials; EER, minDCF, Cllr and a calibration need both kinds"),
    ("all non-target", (), "{t}: all 2 trials are non-target trials"),
    ("out_dir a file", ("--out_dir", "{r}/afile"), "--out_dir {r}/afile is a file, not a folder"),
    ("calibrate_out a folder", ("--calibrate_out", "{r}/audio"), "--calibrate_out {r}/audio is a folder, not a file"),
    ("calibrate_out under a file", ("--calibrate_out", "{r}/afile/cal.json"),
     "--calibrate_out {r}/afile/cal.json: {r}/afile is a file, not a folder"),
    ("calibration slope true", ("--calibration", "{r}/bad.json"), "{r}/bad.json: not a calibration file written by"),
    ("calibration of AS-norm scores", ("--calibration", "{r}/asnorm.json"),
     "{r}/asnorm.json maps asnorm scores, but this run's --score_norm is none"),
    ("calibrate_out without labels", ("--calibrate_out", "{r}/new.json"), "--calibrate_out needs labels: {t} has none"),
    ("missing cohort", ("--score_norm", "asnorm", "--cohort", "{r}/nowhere"), "--cohort {r}/nowhere: no such folder"),
])
def test_score_checks_every_input_before_the_first_embedding(rig, capsys, case, extra, message):
    trials = rig / "trials.txt"
    if case.startswith("all"):
        label = "1" if case == "all target" else "0"
        trials.write_text(f"{label} r0.wav r1.wav\n{label} r2.wav r3.wav\n")
    if case == "calibrate_out without labels":
        trials.write_text("r0.wav r1.wav\nr2.wav r3.wav\n")
    (rig / "afile").write_text("a file")
    (rig / "bad.json").write_text('{"slope": true, "offset": 0}')
    save_calibration(rig / "asnorm.json", Calibration(1.0, 0.0, score_norm="asnorm"))
    before = tree_bytes(rig)
    line = refused(score_cmd.main, capsys, *score_flags(rig), *(flag.format(r=rig) for flag in extra))
    assert line.startswith("error: " + message.format(r=rig, t=trials)), line
    assert tree_bytes(rig) == before
    assert not (rig / "out").exists() or case == "out_dir a file"


def test_a_rerun_into_the_same_out_dir_is_refused_unless_overwrite(rig, capsys):
    """score.py rerun into an --out_dir holding its results replaced scores.txt, report.json, det.png
    silently; now refused before any embedding (the model is not even loaded), --overwrite replaces them."""
    assert run_in_process(score_cmd.main, capsys, *score_flags(rig)).returncode == 0
    (rig / "out" / "mine.txt").write_text("the user's own file")
    (rig / "trials.txt").write_text("r0.wav r1.wav\nr2.wav r3.wav\n")     # no labels: no det.png this time
    before = tree_bytes(rig)
    line = refused(score_cmd.main, capsys, *score_flags(rig, "--checkpoint", rig / "models/b.pth"))
    assert line == (f"error: --out_dir {rig / 'out'} already holds scores.txt, report.json, det.png of an earlier "
                    "run; pass --overwrite to replace them, or choose another folder (nothing was written)")
    assert tree_bytes(rig) == before
    result = run_in_process(score_cmd.main, capsys, *score_flags(rig, "--checkpoint", rig / "models/b.pth",
                                                                 "--overwrite"))
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (rig / "out").iterdir()) == ["mine.txt", "report.json", "scores.txt"]
    assert json.loads((rig / "out/report.json").read_text())["checkpoint"] == str(rig / "models/b.pth")
    assert [line.split()[1:] for line in (rig / "out/scores.txt").read_text().splitlines()] == \
        [["r0.wav", "r1.wav"], ["r2.wav", "r3.wav"]]
    assert (rig / "out" / "mine.txt").read_text() == "the user's own file"


def test_scores_are_written_when_a_later_step_fails(rig, capsys):
    result = run_in_process(score_cmd.main, capsys, *score_flags(rig))
    assert result.returncode == 0, result.stderr
    scores = {tuple(line.split()[2:]): float(line.split()[1]) for line in (rig / "out/scores.txt").read_text().splitlines()}
    # labels against the scores: higher score = non-target, so the calibration fit fails (negative slope)
    ranked = sorted(scores, key=scores.get)
    (rig / "trials.txt").write_text("".join(f"{int(i < 2)} {e} {t}\n" for i, (e, t) in enumerate(ranked)))
    expected = (rig / "trials.txt").read_text()
    line = error_line(run_entry("score", *score_flags(rig, "--out_dir", rig / "late", "--calibrate_out",
                                                      rig / "cal.json")))
    assert line.startswith("error: calibration failed: on this list, higher scores do not mean 'same speaker'")
    written = (rig / "late/scores.txt").read_text().splitlines()       # the embedding work is kept
    assert [" ".join([w.split()[0], *w.split()[2:]]) for w in written] == expected.splitlines()
    assert all(float(w.split()[1]) == scores[tuple(w.split()[2:])] for w in written)
    assert not (rig / "cal.json").exists()


def test_a_calibration_applied_to_another_models_embeddings_is_warned_about(rig, capsys):
    """score.py --embeddings <embed.py folder> --calibration: the folder's model.json names the model, so a
    calibration fitted on another model's scores is warned about as it is with --checkpoint (it was silent)."""
    digest_a = checkpoint_digest(rig / "models/a.pth")
    save_calibration(rig / "cal.json", Calibration(2.0, -1.0, checkpoint=str(rig / "models/a.pth"),
                                                   checkpoint_digest=digest_a))
    for name in ("a", "b"):
        assert run_in_process(embed_cmd.main, capsys, "--checkpoint", rig / f"models/{name}.pth", "--out",
                              rig / f"emb_{name}", rig / "audio").returncode == 0
    warnings = {}
    for name in ("a", "b"):
        result = run_in_process(score_cmd.main, capsys, "--trials", rig / "trials.txt", "--embeddings",
                                rig / f"emb_{name}", "--calibration", rig / "cal.json", "--out_dir", rig / f"out_{name}")
        assert result.returncode == 0, result.stderr
        warnings[name] = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    digest_b = checkpoint_digest(rig / "models/b.pth")
    assert warnings == {"a": [], "b": [
        f"warning: {rig / 'cal.json'}: calibration fitted on the scores of another model ({rig / 'models/a.pth'}, "
        f"digest {digest_a[:12]}) than {rig / 'models/b.pth'} (digest {digest_b[:12]}); its LLRs do not hold for "
        "this model: refit it with score.py --calibrate_out"]}


def test_embed_folder_knows_its_model(rig, capsys):
    out = rig / "emb"
    assert run_in_process(embed_cmd.main, capsys, "--checkpoint", rig / "models/a.pth", "--out", out,
                          rig / "audio").returncode == 0
    record = json.loads((out / "model.json").read_text())
    assert record == {"checkpoint": str(rig / "models/a.pth"), "checkpoint_digest": checkpoint_digest(rig / "models/a.pth")}
    before = tree_bytes(out)
    line = refused(embed_cmd.main, capsys, "--checkpoint", rig / "models/b.pth", "--out", out, rig / "audio")
    assert line.startswith(f"error: {out} holds embeddings of another model ({rig / 'models/a.pth'}, digest "
                           f"{record['checkpoint_digest'][:12]}), not of {rig / 'models/b.pth'}")
    assert tree_bytes(out) == before
    result = run_in_process(embed_cmd.main, capsys, "--checkpoint", rig / "models/b.pth", "--out", out, rig / "audio",
                            "--overwrite")
    assert result.returncode == 0, result.stderr
    assert "resuming" not in result.stderr
    model_b = SpeakerEncoder.from_checkpoint(rig / "models/b.pth", device="cpu")
    for number in range(4):
        expected = model_b.embed(rig / f"audio/r{number}.wav")
        np.testing.assert_allclose(np.load(out / f"r{number}.npy"), expected, atol=1e-5 * np.abs(expected).max())
    assert json.loads((out / "model.json").read_text())["checkpoint_digest"] == checkpoint_digest(rig / "models/b.pth")


def test_embed_rerun_with_a_subset_keeps_everything_in_the_index(rig, capsys):
    out = rig / "emb"
    for out_format in ("matrix", "ark"):
        assert run_in_process(embed_cmd.main, capsys, "--checkpoint", rig / "models/a.pth", "--out", out,
                              rig / "audio", "--out_format", out_format).returncode == 0
    first = load_embeddings(out)
    index = (out / "index.tsv").read_text()
    result = run_in_process(embed_cmd.main, capsys, "--checkpoint", rig / "models/a.pth", "--out", out,
                            rig / "audio/r1.wav", "--out_format", "matrix")
    assert result.returncode == 0, result.stderr
    assert (out / "index.tsv").read_text() == index                  # r0, r2, r3 still listed
    assert (out / "keys.txt").read_text().split() == ["r0", "r1", "r2", "r3"]
    for where in (out, out / "embeddings.npy", out / "embeddings.scp"):
        again = load_embeddings(where)
        assert sorted(again) == sorted(first) and all(np.array_equal(again[k], first[k]) for k in first)


def test_embed_refuses_a_recording_named_like_the_matrix(rig, capsys):
    (rig / "audio/r0.wav").rename(rig / "audio/embeddings.wav")
    before = tree_bytes(rig)
    line = refused(embed_cmd.main, capsys, "--checkpoint", rig / "models/a.pth", "--out", rig / "emb", rig / "audio",
                   "--out_format", "matrix")
    assert line.startswith(f"error: {rig / 'audio/embeddings.wav'}: its embedding would be named embeddings.npy, "
                           "the name of the output folder's own embeddings.npy")
    assert tree_bytes(rig) == before and not (rig / "emb").exists()


@pytest.mark.parametrize("case", ["out is a file", "entry too long", "seed -1"])
def test_embed_bad_arguments_are_one_error_line(rig, capsys, case):
    (rig / "afile").write_text("keep me")
    argv = ["--checkpoint", rig / "models/a.pth", "--out", rig / "emb", rig / "audio"]
    message = {"out is a file": f"{rig / 'afile'} is a file, not a folder: choose another output folder "
                                "(nothing was written)",
               "entry too long": "a" * 80 + f"... (listed in {rig / 'list.txt'}): not a usable path (File name too long)",
               "seed -1": "--seed must lie in [0, 2**32) (the random generators' range), got -1"}[case]
    if case == "out is a file":
        argv[3] = rig / "afile"
    elif case == "entry too long":
        (rig / "list.txt").write_text("a" * 300 + ".wav\n")
        argv += ["--list", rig / "list.txt"]
    else:
        argv += ["--seed", "-1"]
    before = tree_bytes(rig)
    result = run_in_process(embed_cmd.main, capsys, *argv)
    assert result.returncode == 2 and result.stderr.splitlines() == [f"error: {message}"], result.stderr
    assert tree_bytes(rig) == before and not (rig / "emb").exists()


def test_trial_entry_longer_than_a_file_name_is_one_error_line(rig, capsys):
    (rig / "trials.txt").write_text(f"1 r0.wav {'b' * 300}.wav\n0 r0.wav r1.wav\n")
    before = tree_bytes(rig)
    line = refused(score_cmd.main, capsys, *score_flags(rig))
    assert line == f"error: {rig / 'audio'}/{'b' * (80 - len(str(rig / 'audio')) - 1)}... (a trial-list entry): " \
                   "not a usable path (File name too long)"
    assert tree_bytes(rig) == before


def test_ark_scp_written_with_a_relative_out_resolves_from_anywhere(rig, capsys, monkeypatch):
    monkeypatch.chdir(rig)
    assert run_in_process(embed_cmd.main, capsys, "--checkpoint", "models/a.pth", "--out", "emb", "audio",
                          "--out_format", "ark").returncode == 0
    elsewhere = rig / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    from_scp, from_npy = load_embeddings(rig / "emb/embeddings.scp"), load_embeddings(rig / "emb")
    assert sorted(from_scp) == ["r0", "r1", "r2", "r3"]
    assert all(np.array_equal(from_scp[key], from_npy[key]) for key in from_npy)


# ---------------------------------------------------------------------------------------- verify.py
def verify_flags(rig, *extra):
    return ["--checkpoint", rig / "models/a.pth", *extra, rig / "audio/r0.wav", rig / "audio/r1.wav"]


def test_verify_refuses_a_threshold_that_is_not_a_number(rig, capsys):
    for value in ("nan", "inf"):
        assert refused(verify_cmd.main, capsys, *verify_flags(rig, "--threshold", value)) == \
            f"error: --threshold must be a finite score, got {float(value)}"


def test_verify_p_target_without_a_calibration_is_refused_as_the_api_refuses_it(rig, capsys):
    (rig / "eer.json").write_text('{"threshold": 0.5}')
    before = tree_bytes(rig)
    line = refused(verify_cmd.main, capsys, *verify_flags(rig, "--threshold_file", rig / "eer.json",
                                                          "--p_target", "0.01"))
    assert line.startswith("error: --p_target 0.01 needs a calibration (--calibration FILE, or "
                           "<checkpoint>.calibration.json; score.py --calibrate_out fits one)")
    with pytest.raises(UserInputError, match="no calibration for"):
        SpeakerEncoder.from_checkpoint(rig / "models/a.pth", device="cpu").verify(
            rig / "audio/r0.wav", rig / "audio/r1.wav", p_target=0.01)
    assert tree_bytes(rig) == before


@pytest.mark.parametrize("fields, message", [
    ('{"slope": true, "offset": 0}', "slope must be a float, got True"),
    ('{"slope": 1, "offset": 0, "fit_prior": 7}', "fit_prior must be strictly between 0 and 1, got 7"),
    ('{"slope": 1e308, "offset": 0}', "slope must be positive and at most 1e+06"),
])
def test_verify_refuses_malformed_calibration_values(rig, capsys, fields, message):
    (rig / "cal.json").write_text(fields)
    line = refused(verify_cmd.main, capsys, *verify_flags(rig, "--calibration", rig / "cal.json"))
    assert line.startswith(f"error: {rig / 'cal.json'}: not a calibration file") and message in line


def test_verify_warns_when_the_calibration_was_fitted_on_another_model(rig, capsys):
    save_calibration(rig / "cal.json", Calibration(2.0, -1.0, checkpoint=str(rig / "models/b.pth"),
                                                   checkpoint_digest=checkpoint_digest(rig / "models/b.pth")))
    result = run_in_process(verify_cmd.main, capsys, *verify_flags(rig, "--calibration", rig / "cal.json"))
    assert result.returncode == 0, result.stderr
    [warning] = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert warning.startswith(f"warning: {rig / 'cal.json'}: calibration fitted on the scores of another model "
                              f"({rig / 'models/b.pth'}, digest {checkpoint_digest(rig / 'models/b.pth')[:12]}) "
                              f"than {rig / 'models/a.pth'}")
    save_calibration(rig / "own.json", Calibration(2.0, -1.0, checkpoint_digest=checkpoint_digest(rig / "models/a.pth")))
    result = run_in_process(verify_cmd.main, capsys, *verify_flags(rig, "--calibration", rig / "own.json"))
    assert result.returncode == 0 and "warning:" not in result.stderr


# ------------------------------------------------------------------------------------ the Python API
SAMPLES = voice_like(seconds=0.6)


@pytest.mark.parametrize("call, message", [
    (lambda e: e.embed(SAMPLES, sample_rate=0), "array: sample_rate must be at least 1, got 0"),
    (lambda e: e.embed(SAMPLES, sample_rate=-16000), "array: sample_rate must be at least 1, got -16000"),
    (lambda e: e.embed(SAMPLES, sample_rate="16k"), "array: sample_rate must be an integer, got '16k' (str)"),
    (lambda e: e.embed(SAMPLES, sample_rate=float("nan")), "array: sample_rate must be a whole number, got nan"),
    (lambda e: e.embed(SAMPLES, sample_rate=16000.5), "array: sample_rate must be a whole number, got 16000.5"),
    (lambda e: e.embed(SAMPLES, sample_rate=True), "array: sample_rate must be an integer, got True (bool)"),
    (lambda e: e.features(SAMPLES, sample_rate=0), "array: sample_rate must be at least 1, got 0"),
    (lambda e: e.identify(np.ones(256, np.float32), {"a": np.ones(256, np.float32)}, top_k="x"),
     "top_k must be an integer, got 'x' (str)"),
    (lambda e: e.identify(np.ones(256, np.float32), {"a": np.ones(256, np.float32)}, top_k=0),
     "top_k must be at least 1, got 0"),
    (lambda e: e.identify(np.ones(256, np.float32), ["a"]), "identify() gallery must be a non-empty dict, got list"),
    (lambda e: e.enroll(5), "enroll() takes a non-empty list of recordings, got int"),
    (lambda e: e.enroll_gallery(["a.wav"]), "enroll_gallery() speakers must be a non-empty dict, got list"),
    (lambda e: e.score(None, np.ones(256)), "score() takes embeddings of shape (256,)"),
    (lambda e: e.score(np.array(["x"] * 256), np.ones(256)), "score() takes embeddings of shape (256,)"),
    (lambda e: e.verify(np.ones(256), np.ones(256), p_target="x"), "p_target must be a number strictly between"),
    (lambda e: e.verify(np.ones(256), np.ones(256), calibration=7), "calibration must be a file path (str or Path), got 7"),
    (lambda e: SpeakerEncoder.from_checkpoint(7), "checkpoint path must be a file path (str or Path), got 7 (int)"),
    (lambda e: SpeakerEncoder.from_checkpoint(n_folder="0", cp_num=1), "n_folder must be an integer, got '0' (str)"),
])
def test_api_arguments_are_checked(rig, call, message):
    encoder = SpeakerEncoder.from_checkpoint(rig / "models/a.pth", device="cpu")
    with pytest.raises(UserInputError) as caught:
        call(encoder)
    assert str(caught.value).startswith(message), str(caught.value)


def test_api_sample_rate_as_a_whole_float_or_numpy_integer_is_accepted(rig):
    encoder = SpeakerEncoder.from_checkpoint(rig / "models/a.pth", device="cpu")
    reference = encoder.embed(SAMPLES, sample_rate=16000)
    for rate in (16000.0, np.int64(16000), np.float32(16000)):
        assert np.array_equal(encoder.embed(SAMPLES, sample_rate=rate), reference)


# ------------------------------------------------------- dataprep: MUSAN / RIR archives never escape
import dataprep  # noqa: E402
from tests.test_augment_corpora import tar_gz, wav_bytes, zip_of  # noqa: E402

ESCAPES = ["../evil.wav", "/tmp/evil_abs.wav", "RIRS_NOISES/../../evil.wav", "..\\evil.wav", "C:/evil.wav",
           "RIRS_NOISES/simulated_rirs/../../../evil.wav"]


def extract_argv(save, archive_name, tmp_path):
    (tmp_path / "augment.txt").write_text(f"https://openslr.invalid/resources/28/{archive_name} {'0' * 32}\n")
    return ["--save_path", save, "--extract_augment", "--augment_list", tmp_path / "augment.txt"]


@pytest.mark.parametrize("member", ESCAPES)
def test_rir_zip_members_outside_the_data_folder_are_refused(tmp_path, member, capsys):
    save = tmp_path / "data"
    save.mkdir()
    (save / "rirs_noises.zip").write_bytes(zip_of({"RIRS_NOISES/real/a.wav": wav_bytes(np.zeros(800, np.int16)),
                                                   member: b"owned"}))
    (tmp_path / "evil.wav").write_bytes(b"the user's own file")     # what a ../ member would replace
    argv = extract_argv(save, "rirs_noises.zip", tmp_path)
    before = tree_bytes(tmp_path)
    line = refused(dataprep.main, capsys, *argv)
    assert line.startswith(f"error: {save / 'rirs_noises.zip'}: refusing member {member!r}: it would land outside")
    assert tree_bytes(tmp_path) == before and not Path("/tmp/evil_abs.wav").exists()


@pytest.mark.parametrize("archive", ["musan.tar.gz", "rirs_noises.zip"])
def test_members_through_a_symlink_that_leaves_the_data_folder_are_refused(tmp_path, archive, capsys):
    save, outside = tmp_path / "data", tmp_path / "outside"
    save.mkdir()
    outside.mkdir()
    top = "musan" if archive.startswith("musan") else "RIRS_NOISES"
    (save / top).symlink_to(outside, target_is_directory=True)      # a folder already there, a link out
    members = {f"{top}/noise/a.wav": wav_bytes(np.zeros(800, np.int16))}
    (save / archive).write_bytes(tar_gz(members) if archive.endswith(".tar.gz") else zip_of(members))
    argv = extract_argv(save, archive, tmp_path)
    before = tree_bytes(tmp_path)
    line = refused(dataprep.main, capsys, *argv)
    assert line.startswith(f"error: {save / archive}: refusing member '{top}/noise/a.wav': it would land outside")
    assert tree_bytes(tmp_path) == before and not any(outside.iterdir())


# ------------------------------------------------------------- permission denied (privileges dropped)
def as_nobody(main, argv) -> tuple:
    """``main(argv)`` through ``run_main`` in a forked child that dropped root for ``nobody`` (the
    tests run as root, which no permission stops); (exit code, stderr). Modules are imported before the
    fork (a child without root may not read the interpreter's folders)."""
    import pwd
    user = pwd.getpwnam("nobody")
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:   # the child: never returns into pytest
        code = 1
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(user.pw_gid)
            os.setuid(user.pw_uid)
            import contextlib
            import io
            stderr = io.StringIO()
            with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
                try:
                    from common.errors import run_main
                    run_main(lambda: main([str(arg) for arg in argv]))
                    code = 0
                except SystemExit as stop:
                    code = stop.code
                except BaseException as error:   # reported as a traceback would be
                    stderr.write(f"Traceback: {type(error).__name__}: {error}\n")
                    code = 1
            os.write(write_end, stderr.getvalue().encode())
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        stderr = pipe.read()
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), stderr


@pytest.fixture
def shared(tmp_path):
    """A folder ``nobody`` can read but not write (owned by root, mode 755), with readable inputs."""
    import tempfile
    folder = Path(tempfile.mkdtemp(prefix="never-lose-"))
    folder.chmod(0o755)
    np.save(folder / "embeddings.npy", np.eye(3, 8, dtype=np.float32))
    (folder / "keys.txt").write_text("a\nb\nc\n")
    (folder / "trials.txt").write_text("1 a b\n0 a c\n")
    tiny_checkpoint(folder / "model.pth")
    sf.write(folder / "r0.wav", as_int16(voice_like(seconds=0.6)), 16000)
    for path in folder.iterdir():
        path.chmod(0o644)
    yield folder
    import shutil
    shutil.rmtree(folder)


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root (as the tests run here)")
@pytest.mark.parametrize("script", ["score", "score --calibrate_out", "embed", "train"])
def test_permission_denied_outputs_are_one_error_line_before_any_work(shared, script):
    import training.run  # noqa: F401  (imported while the files are readable; the child cannot read root's)
    import evaluation.plots  # noqa: F401
    main = {"score": score_cmd.main, "score --calibrate_out": score_cmd.main, "embed": embed_cmd.main}.get(script)
    writable = shared / "writable"
    writable.mkdir()
    os.chown(writable, 65534, 65534)
    if script == "score":
        argv, denied = ["--trials", shared / "trials.txt", "--embeddings", shared / "embeddings.npy",
                        "--out_dir", shared / "out"], shared / "out"
    elif script == "score --calibrate_out":
        argv, denied = ["--trials", shared / "trials.txt", "--embeddings", shared / "embeddings.npy",
                        "--out_dir", writable / "out", "--calibrate_out", shared / "cal.json"], shared
    elif script == "embed":
        argv, denied = ["--checkpoint", shared / "model.pth", "--out", shared / "emb", shared / "r0.wav"], shared / "emb"
    else:
        import train
        main = train.main
        write_random_features(writable / "data" / TRAIN_FEATURES, n_speakers=4, n_utterances=4, frames=(150, 200))
        subprocess.run(["chown", "-R", "65534:65534", str(writable / "data")], check=True)
        argv, denied = ["--save_path", writable / "data", "--model_dir", shared / "models", "--nb_class_train", "3",
                        "--channels", "4", "--n_episode", "1", "--max_epoch", "1", "--workers", "0"], \
            shared / "models/baseline_000"
    argv += ["--save_path", writable / "nothing"] if script != "train" else []
    before = tree_bytes(shared)
    code, stderr = as_nobody(main, argv)
    assert code == 2, stderr
    assert stderr.strip().splitlines()[-1].startswith(f"error: cannot write {denied}") and \
        "permission denied" in stderr, stderr
    assert "Traceback" not in stderr and len([l for l in stderr.splitlines() if l.startswith("error:")]) == 1
    assert {k: v for k, v in tree_bytes(shared).items() if "/writable/" not in k} == \
        {k: v for k, v in before.items() if "/writable/" not in k}
    assert not list((writable / "out").glob("*")) if (writable / "out").exists() else True


# ----------------------------------------------------------- a torchrun job killed outright, resumed
def descendants(pid: int) -> list:
    """Every live process below ``pid`` (from /proc), found before any is killed."""
    parents = {}
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError, ValueError, IndexError):
            parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
    found, frontier = [], [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def test_torchrun_job_killed_mid_epoch_resumes_to_the_weights_of_an_uninterrupted_job(data_root):
    """Two processes (gloo) lose everything at once (SIGKILL to the whole job, as a machine that dies):
    the last complete checkpoint stays whole, the lock does not block, and the resumed job ends with
    exactly the weights of a job that was never interrupted."""
    from tests.test_distributed import free_port
    from model.checkpoint import available_checkpoints
    import torch

    def job(models, *extra):
        return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                str(free_port()), "train.py", *map(str, train_flags(data_root, "--nb_class_train", "4",
                                                                  "--n_episode", "30", "--max_epoch", "2",
                                                                  models=models)), *extra]
    env = {**ENV, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    folder = data_root / "killed/baseline_000"
    killed = subprocess.Popen(job("killed"), cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        wait_for(lambda: (folder / "checkpoint_001.pth").exists(), killed, seconds=240)   # epoch 2 begins
    finally:
        for pid in [killed.pid, *descendants(killed.pid)]:      # torchrun and both workers (own sessions)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        killed.communicate()
    assert available_checkpoints(folder) == [1], "the kill should land in epoch 2"
    first = tree_bytes(folder / "checkpoint_001.pth")
    resumed = subprocess.run(job("killed", "--use_checkpoint", "True", "--cp_num", "1"), cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "epochs 2..2, 2 process(es)" in resumed.stdout
    assert tree_bytes(folder / "checkpoint_001.pth") == first    # the checkpoint resumed from is untouched
    straight = subprocess.run(job("straight"), cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert straight.returncode == 0, straight.stderr[-3000:]
    a, b = (torch.load(path / "baseline_000/checkpoint_002.pth", weights_only=True)["state_dict"]
            for path in (data_root / "killed", data_root / "straight"))
    assert a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)
