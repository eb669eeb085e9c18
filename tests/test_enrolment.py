"""Several enrolment recordings, gallery ranking and calibrated decisions in speaker_api and verify.py."""
import numpy as np
import pytest
import soundfile as sf

import verify as verify_cmd
from common.errors import UserInputError
from evaluation.calibration import Calibration, calibration_beside, save_calibration
from speaker_api import SpeakerEncoder, enrolment_embedding
from tests.test_api import as_int16, run_in_process, tiny_checkpoint, voice_like


@pytest.fixture
def setup(tmp_path, model_name):
    checkpoint = tmp_path / "cp.pth"
    tiny_checkpoint(checkpoint, name=model_name)
    gallery = tmp_path / "gallery"
    for speaker, seeds, pitch in (("alice", (1, 2), 120.0), ("bob", (3,), 210.0), ("carol", (4, 5), 300.0)):
        (gallery / speaker).mkdir(parents=True)
        for seed in seeds:
            sf.write(gallery / speaker / f"{seed}.wav", as_int16(voice_like(0.8, pitch=pitch, seed=seed)), 16000)
    return checkpoint, gallery, SpeakerEncoder.from_checkpoint(checkpoint, device="cpu")


def test_enrolment_is_the_unit_mean_of_unit_embeddings(setup):
    _, gallery, encoder = setup
    files = sorted((gallery / "alice").glob("*.wav"))
    a, b = (encoder.embed(f).astype(np.float64) for f in files)
    by_hand = a / np.linalg.norm(a) + b / np.linalg.norm(b)
    np.testing.assert_allclose(encoder.enroll(files), by_hand / np.linalg.norm(by_hand), atol=1e-6)
    np.testing.assert_allclose(enrolment_embedding([3 * a]), a / np.linalg.norm(a), atol=1e-6)
    with pytest.raises(UserInputError, match="non-empty list"):
        encoder.enroll([])


def test_gallery_ranking_in_the_api_and_verify_py(setup, capsys):
    checkpoint, gallery, encoder = setup
    probe = gallery / "bob" / "3.wav"
    models = encoder.enroll_gallery({s.name: sorted(s.glob("*.wav")) for s in sorted(gallery.iterdir())})
    ranked = encoder.identify(probe, models, top_k=2)
    assert ranked[0] == ("bob", pytest.approx(1.0)) and len(ranked) == 2
    expected = sorted(((encoder.score(m, encoder.embed(probe)), n) for n, m in models.items()), reverse=True)
    assert [name for name, _ in ranked] == [name for _, name in expected[:2]]
    result = run_in_process(verify_cmd.main, capsys, "--checkpoint", checkpoint, "--gallery", gallery,
                            "--top_k", 3, probe)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"top 3 of 3 enrolled speakers for {probe}:"
    assert lines[1] == "1. bob  score 1.000000"
    assert [line.split()[1] for line in lines[1:]] == [name for _, name in expected]


def test_calibrated_verify_with_several_enrolment_files(setup, capsys):
    checkpoint, gallery, encoder = setup
    enroll, test = sorted((gallery / "alice").glob("*.wav")), gallery / "carol" / "4.wav"
    score = encoder.score(encoder.enroll(enroll), encoder.embed(test))
    save_calibration(calibration_beside(checkpoint), Calibration(slope=10.0, offset=-10.0 * score + 1.0))  # llr 1
    for p_target, decision in ((0.5, "ACCEPT"), (0.1, "REJECT")):    # Bayes thresholds 0 and ln 9 = 2.197
        result = run_in_process(verify_cmd.main, capsys, "--checkpoint", checkpoint, "--p_target", p_target,
                                *enroll, test)
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert lines[0] == f"score: {score:.6f}"
        assert lines[1] == f"llr: {1.0:.6f} (calibration {calibration_beside(checkpoint)})"
        assert lines[3].startswith(f"decision: {decision}")
    assert encoder.verify(enroll, test, p_target=0.5).accepted
    result = run_in_process(verify_cmd.main, capsys, "--checkpoint", checkpoint, "--threshold", 2, *enroll, test)
    assert "threshold: 2.000000 (--threshold)" in result.stdout     # --threshold wins over a calibration


@pytest.mark.parametrize("flags, message", [
    (["--p_target", "1.5", "a.wav", "b.wav"], "--p_target must lie strictly between 0 and 1"),
    (["--gallery", "{t}/nowhere", "a.wav"], "error: --gallery {t}/nowhere: no such folder"),
    (["--calibration", "{t}/missing.json", "a.wav", "b.wav"], "error: --calibration {t}/missing.json: no such file"),
    (["--calibration", "{t}/bad.json", "{t}/gallery/bob/3.wav", "{t}/gallery/bob/3.wav"],
     "error: {t}/bad.json: not a calibration file written by score.py --calibrate_out"),
    (["a.wav"], "give at least one enrolment recording and the test recording"),
])
def test_bad_verify_input_is_one_clear_line(setup, tmp_path, capsys, flags, message):
    checkpoint = setup[0]
    (tmp_path / "bad.json").write_text('{"slope": 0, "offset": 1}')
    result = run_in_process(verify_cmd.main, capsys, "--checkpoint", checkpoint,
                            *[flag.format(t=tmp_path) for flag in flags])
    assert result.returncode == 2 and message.format(t=tmp_path) in result.stderr.strip().splitlines()[-1]
