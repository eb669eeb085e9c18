"""Duration-aware calibration (quality measure functions): fit, apply, save, load, score.py."""
import json
import re

import numpy as np
import pytest

from common.errors import UserInputError
from evaluation.calibration import Calibration, duration_qualities, fit_calibration, save_calibration
from evaluation.llr_metrics import llr_report


def gaussian_trials(n, shift_per_log_second, seed=0, durations=(1.0, 2.0, 8.0)):
    """Targets N(0.5 + c log d, 0.1), non-targets N(c log d, 0.1), d = the test side's duration
    (enrolment 8 s). The true LLR is 50 * (score - 0.25 - c log d): slope 50 = 0.5 / 0.1^2, offset
    -12.5, and the log of the shorter side weighted -50 c."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    test = rng.choice(durations, n)
    scores = 0.5 * labels + shift_per_log_second * np.log(test) + rng.normal(0, 0.1, n)
    return labels, scores, duration_qualities(np.full(n, 8.0), test)


def cllr(labels, llrs) -> float:
    return llr_report(labels, llrs, [0.01])["cllr"]


def test_qualities_are_log_shorter_and_longer_side():
    np.testing.assert_allclose(duration_qualities([8.0, 1.0], [2.0, 4.0]),
                               np.log([[2.0, 8.0], [1.0, 4.0]]))
    with pytest.raises(UserInputError, match="positive duration"):
        duration_qualities([1.0], [0.0])


def test_duration_dependent_offset_is_learnt_and_lowers_cllr():
    labels, scores, qualities = gaussian_trials(40_000, 0.2)
    plain = fit_calibration(labels, scores)
    aware = fit_calibration(labels, scores, qualities=qualities)
    assert aware.qmf == "duration" and plain.qmf == "none"
    assert aware.slope == pytest.approx(50, rel=0.03)
    assert aware.qmf_weights[0] == pytest.approx(-10, rel=0.05)     # -50 * 0.2
    assert aware.qmf_weights[1] == 0.0                               # the longer side is always 8 s
    assert aware.offset == pytest.approx(-12.5, abs=0.5)
    # the true LLR's Cllr (hand formula above) is what the QMF reaches; plain calibration cannot
    true_cllr = cllr(labels, 50 * (scores - 0.25 - 0.2 * qualities[:, 0]))
    assert cllr(labels, aware.llr(scores, qualities)) == pytest.approx(true_cllr, abs=0.005)
    assert cllr(labels, plain.llr(scores)) > true_cllr + 0.2


def test_durations_without_information_change_nothing():
    labels, scores, qualities = gaussian_trials(40_000, 0.0, seed=1)
    plain = fit_calibration(labels, scores)
    aware = fit_calibration(labels, scores, qualities=qualities)
    assert np.abs(aware.qmf_weights).max() < 0.2 and aware.slope == pytest.approx(plain.slope, rel=0.01)
    assert cllr(labels, aware.llr(scores, qualities)) == pytest.approx(cllr(labels, plain.llr(scores)), abs=0.002)


def test_qmf_calibration_round_trips_and_is_checked(tmp_path):
    labels, scores, qualities = gaussian_trials(2_000, 0.2)
    aware = fit_calibration(labels, scores, qualities=qualities, trials="dev.txt")
    save_calibration(tmp_path / "cal.json", aware)
    loaded = Calibration.load(tmp_path / "cal.json")
    assert loaded == aware
    np.testing.assert_array_equal(loaded.llr(scores, qualities), aware.llr(scores, qualities))
    expected = aware.slope * scores[:3] + aware.offset + qualities[:3] @ np.array(aware.qmf_weights)
    np.testing.assert_allclose(loaded.llr(scores[:3], qualities[:3]), expected)
    with pytest.raises(UserInputError, match="durations of both sides"):
        loaded.llr(scores)
    fields = json.loads((tmp_path / "cal.json").read_text())
    for bad in ({"qmf": "snr"}, {"qmf_weights": [1.0]}, {"qmf": "none"}):
        (tmp_path / "bad.json").write_text(json.dumps({**fields, **bad}))
        with pytest.raises(UserInputError, match="qmf"):
            Calibration.load(tmp_path / "bad.json")


# ---------------------------------------------------------------- score.py --qmf duration
@pytest.fixture
def embedded_corpus(tmp_path):
    """embed.py's npy layout (index.tsv with durations) for 16 speakers: 2 enrolments of 8 s each and
    test recordings of 1, 2 and 8 s whose embeddings are noisier the shorter they are (noise std
    0.75 / sqrt(seconds) per dimension around a unit speaker direction scaled by 4), and a dev and a
    held-out list (alternate test recordings)."""
    from common.files import save_npy
    from evaluation.batch_embedding import write_index
    rng = np.random.default_rng(3)
    folder, rows, enrol, tests = tmp_path / "emb", [], [], []
    for speaker in range(16):
        direction = rng.standard_normal(256)
        direction *= 4 / np.linalg.norm(direction)
        for n, seconds in enumerate([8.0, 8.0] + [1.0, 2.0, 8.0] * 4):
            key = f"spk{speaker:02d}/utt{n:02d}"
            save_npy(folder / f"{key}.npy",
                     (direction + rng.normal(0, 0.75 / np.sqrt(seconds), 256)).astype(np.float32))
            rows.append((f"{key}.npy", f"{key}.wav", seconds))
            (enrol if n < 2 else tests).append((speaker, f"{key}.wav"))
    write_index(folder, rows)
    lists = {"dev": [], "held_out": []}
    for number, (test_speaker, test) in enumerate(tests):
        for speaker, name in enrol:
            lists["dev" if number % 2 else "held_out"].append(f"{int(speaker == test_speaker)} {name} {test}")
    for which, lines in lists.items():
        (tmp_path / f"{which}.txt").write_text("\n".join(lines) + "\n")
    return folder, tmp_path / "dev.txt", tmp_path / "held_out.txt"


def test_score_py_duration_calibration_lowers_held_out_cllr(embedded_corpus, tmp_path, capsys):
    import score as score_cmd
    from evaluation.cli import read_scores
    from tests.test_api import run_in_process
    folder, dev, held_out = embedded_corpus
    common = ["--embeddings", folder, "--use_cuda", "False"]
    cllrs = {}
    for qmf in ("none", "duration"):
        fitted = run_in_process(score_cmd.main, capsys, "--trials", dev, *common, "--calibrate_out",
                                tmp_path / f"{qmf}.json", "--qmf", qmf, "--out_dir", tmp_path / f"fit_{qmf}")
        assert fitted.returncode == 0, fitted.stderr
        applied = run_in_process(score_cmd.main, capsys, "--trials", held_out, *common, "--calibration",
                                 tmp_path / f"{qmf}.json", "--out_dir", tmp_path / f"held_{qmf}")
        assert applied.returncode == 0, applied.stderr
        cllrs[qmf] = float(re.search(r"^calibrated Cllr: ([\d.]+)", applied.stdout, re.M).group(1))
    calibration = Calibration.load(tmp_path / "duration.json")
    assert calibration.qmf == "duration" and calibration.qmf_weights[0] < 0   # short sides: lower target scores
    assert cllrs["duration"] < cllrs["none"] - 0.02
    rows = [line.split() for line in (tmp_path / "held_duration" / "scores.txt").read_text().splitlines()]
    seconds = {f"spk{s:02d}/utt{n:02d}.wav": d for s in range(16)
               for n, d in enumerate([8.0, 8.0] + [1.0, 2.0, 8.0] * 4)}
    llrs = [calibration.slope * float(r[1]) + calibration.offset
            + calibration.qmf_weights[0] * np.log(min(seconds[r[3]], seconds[r[4]]))
            + calibration.qmf_weights[1] * np.log(max(seconds[r[3]], seconds[r[4]])) for r in rows]
    np.testing.assert_allclose([float(r[2]) for r in rows], llrs, rtol=1e-9)
    labels, scores = read_scores(tmp_path / "held_none" / "scores.txt")
    assert len(labels) == len(rows)


def test_score_py_qmf_needs_durations_and_a_fit(embedded_corpus, tmp_path, capsys):
    import score as score_cmd
    from evaluation.embedding_files import load_embeddings, write_matrix
    from tests.test_api import run_in_process
    folder, dev, _ = embedded_corpus
    vectors = load_embeddings(folder)
    write_matrix(tmp_path / "matrix", list(vectors), np.stack(list(vectors.values())))
    result = run_in_process(score_cmd.main, capsys, "--trials", dev, "--embeddings", tmp_path / "matrix" / "embeddings.npy",
                            "--calibrate_out", tmp_path / "c.json", "--qmf", "duration", "--out_dir", tmp_path / "o")
    assert result.returncode == 2 and "needs each entry's duration" in result.stderr
    assert "matrix or Kaldi ark keep no durations" in result.stderr and not (tmp_path / "c.json").exists()
    result = run_in_process(score_cmd.main, capsys, "--trials", dev, "--embeddings", folder, "--qmf", "duration")
    assert result.returncode == 2 and "--qmf is a choice of the calibration fit" in result.stderr


# ---------------------------------------------------------------- verify.py and the API
def test_verify_applies_the_duration_terms_of_both_sides(tmp_path, capsys):
    import soundfile as sf
    import verify as verify_cmd
    from evaluation.calibration import calibration_beside
    from speaker_api import SpeakerEncoder
    from tests.test_api import as_int16, run_in_process, tiny_checkpoint, voice_like
    checkpoint = tmp_path / "cp.pth"
    tiny_checkpoint(checkpoint)
    files = {}
    for name, seconds, seed in (("a", 0.8, 1), ("b", 1.6, 2), ("test", 0.5, 3)):   # 12,800 / 25,600 / 8,000 samples
        files[name] = tmp_path / f"{name}.wav"
        sf.write(files[name], as_int16(voice_like(seconds, seed=seed)), 16000)
    save_calibration(calibration_beside(checkpoint), Calibration(slope=4.0, offset=-1.0, qmf="duration",
                                                                 qmf_weights=[-0.5, 0.25]))
    encoder = SpeakerEncoder.from_checkpoint(checkpoint, device="cpu")
    score = encoder.score(encoder.enroll([files["a"], files["b"]]), encoder.embed(files["test"]))
    expected = 4.0 * score - 1.0 - 0.5 * np.log(0.5) + 0.25 * np.log(0.8 + 1.6)   # enrolment: 2.4 s in all
    assert encoder.verify([files["a"], files["b"]], files["test"]).llr == pytest.approx(expected, abs=1e-9)
    result = run_in_process(verify_cmd.main, capsys, "--checkpoint", checkpoint, files["a"], files["b"], files["test"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1] == f"llr: {expected:.6f} (calibration {calibration_beside(checkpoint)})"
    test_vector = encoder.embed(files["test"])
    with pytest.raises(UserInputError, match="test side was given as an embedding, so pass test_seconds"):
        encoder.verify(files["a"], test_vector)
    given = encoder.verify(files["a"], test_vector, test_seconds=0.5).llr
    assert given == pytest.approx(4.0 * encoder.score(files["a"], test_vector) - 1.0 - 0.5 * np.log(0.5)
                                  + 0.25 * np.log(0.8), abs=1e-9)


def test_short_recording_warnings_point_at_the_users_line(tmp_path):
    from speaker_api import ShortRecording, SpeakerEncoder
    from tests.test_api import tiny_checkpoint, voice_like
    tiny_checkpoint(tmp_path / "cp.pth")
    encoder = SpeakerEncoder.from_checkpoint(tmp_path / "cp.pth", device="cpu")
    for call in (lambda: encoder.embed(voice_like(0.3), sample_rate=16000),
                 lambda: encoder.as_embedding((voice_like(0.3), 16000))):
        with pytest.warns(ShortRecording) as record:
            call()
        assert record[0].filename == __file__
