"""Issue 16 outside training: feature_extraction.py, embed.py, export.py and the evaluation scripts
check their output folder first (writable, room), and a write refused later (full disk, quota,
read-only) is one ``error:`` line naming the file, exit 2, nothing half written. Short recordings
get one ``warning:`` line (verify.py, embed.py) or a ``ShortRecording`` warning (the API)."""
import errno
import os
import re
import warnings

import numpy as np
import pytest
import soundfile as sf

from speaker_api import MIN_SECONDS, ShortRecording, SpeakerEncoder
from tests.small_filesystems import tmpfs
from tests.test_api import as_int16, tiny_checkpoint, voice_like
from tests.test_eval_scripts import run_here, setup  # noqa: F401 (setup: the evaluation data fixture)
from tests.test_robustness import error_line, isolated, run_entry  # noqa: F401 (isolated: autouse)


def kaldi_corpus(folder, n_files=20, seconds=1.0):
    folder.mkdir(parents=True, exist_ok=True)
    scp, utt2spk = [], []
    for index in range(n_files):
        wav = folder / f"u{index:02d}.wav"
        sf.write(wav, as_int16(voice_like(seconds, seed=index)), 16000, subtype="PCM_16")
        scp.append(f"u{index:02d} {wav}")
        utt2spk.append(f"u{index:02d} spk{index % 2}")
    (folder / "wav.scp").write_text("\n".join(scp) + "\n")
    (folder / "utt2spk").write_text("\n".join(utt2spk) + "\n")
    return ["--wav_scp", folder / "wav.scp", "--utt2spk", folder / "utt2spk", "--workers", "1"]


def files_under(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def refuse_nth_write(monkeypatch, n, code):
    """A simulated refusal at the n-th ``np.save``: part of the file is written, then the system error."""
    real_save, calls = np.save, []

    def save(handle, array, *args, **kwargs):
        calls.append(handle)
        if len(calls) == n:
            with open(handle, "wb") as torn:
                torn.write(b"\x93NUMPY half a file")
            raise OSError(code, os.strerror(code))
        return real_save(handle, array, *args, **kwargs)
    monkeypatch.setattr(np, "save", save)


def test_feature_extraction_checks_room_before_the_first_file(tmp_path, monkeypatch):
    flags = kaldi_corpus(tmp_path / "wav")  # 20 x 1 s of audio: 20 x 99 x 40 float32 = 16 KB each on 4 KB blocks
    with tmpfs(tmp_path / "feat", 64) as mounted:
        if mounted is None:
            monkeypatch.setattr("common.preflight.free_bytes", lambda folder: 64 * 1024)
        line = error_line(run_entry("feat_extract.feature_extraction", *flags, "--out_dir", tmp_path / "feat"))
        assert line == (f"error: {tmp_path / 'feat'}: only 64.0 KB free but the features of 20 files need "
                        "about 320.0 KB; free some space or choose another folder (nothing was written)")
        assert files_under(tmp_path / "feat") == []


def test_feature_extraction_full_disk_midway_is_one_line_and_the_rerun_finishes(tmp_path, monkeypatch):
    flags = kaldi_corpus(tmp_path / "wav", n_files=6)
    refuse_nth_write(monkeypatch, 4, errno.ENOSPC)
    line = error_line(run_entry("feat_extract.feature_extraction", *flags, "--out_dir", tmp_path / "feat"))
    assert re.fullmatch(rf"error: cannot write {tmp_path}/feat/spk\d/kaldi/u\d\d\.npy: no space left on the "
                        r"file system, [\d.]+ [KMG]B free \(nothing was left half written\); free some space, "
                        "fix the permissions or choose another output folder", line), line
    assert len(files_under(tmp_path / "feat")) == 3  # three whole files, no torn fourth, no temporaries
    monkeypatch.undo()
    assert run_entry("feat_extract.feature_extraction", *flags, "--out_dir", tmp_path / "feat").returncode == 0
    written = files_under(tmp_path / "feat")
    assert len(written) == 6 + 2 and {"extraction_report.txt", "corpus_index.npz"} <= set(written)


def test_embed_into_a_read_only_folder_stops_before_any_work(tmp_path):
    tiny_checkpoint(tmp_path / "model.pth")
    sf.write(tmp_path / "a.wav", as_int16(voice_like(1.0)), 16000, subtype="PCM_16")
    with tmpfs(tmp_path / "out", 64, read_only=True) as mounted:
        if mounted is None:
            pytest.skip("cannot mount a read-only tmpfs here")
        result = run_entry("embed", "--checkpoint", tmp_path / "model.pth", "--out", tmp_path / "out",
                           tmp_path / "a.wav", "--use_cuda", "False")
        assert error_line(result) == (f"error: cannot write {tmp_path / 'out'}: read-only file system (nothing "
                                      "was left half written); free some space, fix the permissions or "
                                      "choose another output folder")
        assert "embedding" not in result.stderr


def test_embed_over_quota_names_the_file_and_keeps_the_finished_ones(tmp_path, monkeypatch):
    tiny_checkpoint(tmp_path / "model.pth")
    for name in ("a", "b", "c"):
        sf.write(tmp_path / f"{name}.wav", as_int16(voice_like(1.0)), 16000, subtype="PCM_16")
    refuse_nth_write(monkeypatch, 2, errno.EDQUOT)
    result = run_entry("embed", "--checkpoint", tmp_path / "model.pth", "--out", tmp_path / "out",
                       *(tmp_path / f"{name}.wav" for name in "abc"), "--use_cuda", "False")
    assert error_line(result).startswith(f"error: cannot write {tmp_path / 'out'}/b.npy: disk quota exceeded, ")
    assert files_under(tmp_path / "out") == ["a.npy", "model.json"]
    assert np.load(tmp_path / "out/a.npy").shape == (256,)


def test_export_checks_room_for_the_model_files(tmp_path, monkeypatch):
    tiny_checkpoint(tmp_path / "model.pth")  # about 370 KB of weights; two formats + 1 MB allowance
    with tmpfs(tmp_path / "out", 600) as mounted:
        if mounted is None:
            monkeypatch.setattr("common.preflight.free_bytes", lambda folder: 600 * 1024)
        line = error_line(run_entry("export", "--checkpoint", tmp_path / "model.pth", "--out", tmp_path / "out"))
        assert re.fullmatch(rf"error: {tmp_path / 'out'}: only 600\.0 KB free but the exported model files need "
                            r"about 1\.7 MB; free some space or choose another folder \(nothing was written\)",
                            line), line
        assert files_under(tmp_path / "out") == []


def test_export_onto_a_disk_that_fills_up_is_one_error_line(tmp_path, monkeypatch):
    """torch's C++ writer (torch.jit.save to a path) aborts the process on a full disk; export.py
    serialises in memory and writes through Python, so the refusal is one line and nothing is left."""
    tiny_checkpoint(tmp_path / "model.pth")
    with tmpfs(tmp_path / "out", 200) as mounted:
        if mounted is None:
            pytest.skip("cannot mount a small tmpfs here")
        monkeypatch.setattr("common.preflight.free_bytes", lambda folder: 1 << 30)  # past the preflight
        line = error_line(run_entry("export", "--checkpoint", tmp_path / "model.pth", "--out", mounted))
        assert re.fullmatch(rf"error: cannot write {mounted}/encoder\.pt: no space left on the file system, "
                            r"[\d.]+ KB free \(nothing was left half written\); .*", line), line
        assert files_under(mounted) == []


@pytest.mark.parametrize("script", ["EER_full.py", "EER_short.py", "identification.py"])
def test_evaluation_into_a_read_only_folder_stops_before_embedding(setup, tmp_path, script):  # noqa: F811
    with tmpfs(tmp_path / "results", 64, read_only=True) as mounted:
        if mounted is None:
            pytest.skip("cannot mount a read-only tmpfs here")
        extra = {"EER_full.py": ["--trials", setup / "trials.txt"], "EER_short.py": [],
                 "identification.py": ["--nb_class_test", "3"]}[script]
        result = run_here(script, setup, *extra, out=tmp_path / "results")
        assert error_line(result).startswith(f"error: cannot write {tmp_path / 'results'}: read-only file system")
        assert "EER:" not in result.stdout and "accuracy" not in result.stdout


# ------------------------------------------------------------------------------- short recordings
def test_short_recordings_warn_in_verify_embed_and_the_api(tmp_path):
    tiny_checkpoint(tmp_path / "model.pth")
    sf.write(tmp_path / "long.wav", as_int16(voice_like(2.0, seed=1)), 16000, subtype="PCM_16")
    sf.write(tmp_path / "short.wav", as_int16(voice_like(0.2, seed=2)), 16000, subtype="PCM_16")  # 20 frames
    sf.write(tmp_path / "half.wav", as_int16(voice_like(MIN_SECONDS, seed=3)), 16000, subtype="PCM_16")
    common = ["--checkpoint", tmp_path / "model.pth", "--use_cuda", "False", "--threshold", "0.5"]
    result = run_entry("verify", tmp_path / "long.wav", tmp_path / "short.wav", *common)
    assert result.returncode == 0 and "decision: " in result.stdout
    warned = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert warned == [f"warning: {tmp_path / 'short.wav'}: only 0.20 s of audio, below the 0.5 s minimum; "
                      "embeddings and decisions on recordings this short are not reliable"]
    result = run_entry("verify", tmp_path / "long.wav", tmp_path / "half.wav", *common)
    assert result.returncode == 0 and "warning:" not in result.stderr

    result = run_entry("embed", "--checkpoint", tmp_path / "model.pth", "--out", tmp_path / "emb",
                       tmp_path / "long.wav", tmp_path / "short.wav", tmp_path / "half.wav", "--use_cuda", "False")
    assert result.returncode == 0 and len(files_under(tmp_path / "emb")) == 5   # 3 embeddings, index, model.json
    assert [line for line in result.stderr.splitlines() if line.startswith("warning:")] == warned

    encoder = SpeakerEncoder.from_checkpoint(tmp_path / "model.pth", device="cpu")
    with pytest.warns(ShortRecording, match=r"array: only 0\.30 s of audio, below the 0\.5 s minimum"):
        encoder.embed(voice_like(0.3), sample_rate=16000)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ShortRecording)
        encoder.embed(voice_like(MIN_SECONDS), sample_rate=16000)
