"""speaker_api, verify.py and embed.py on real audio files of several formats, rates and channel counts."""
import json
import shutil
import subprocess
import sys
import warnings
from math import gcd
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import torch
from scipy.signal import resample_poly

import configure
import embed as embed_cmd
import verify as verify_cmd
from common.errors import UserInputError, run_main
from feat_extract.fbank import log_mel_fbank_int16
from model.checkpoint import model_fields, save_checkpoint
import speaker_api
from speaker_api import ConversionNote, SpeakerEncoder
from tests.conftest import TINY_MODEL_ARGS, tiny_encoder

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------- helpers
def tiny_model(seed=0, num_classes=5, name="background_resnet"):
    """A tiny encoder (tests/conftest.py: its tiny width) with non-trivial BatchNorm statistics, in eval mode."""
    return tiny_encoder(name, num_classes, seed)


def tiny_checkpoint(path, seed=0, epoch=3, name="background_resnet"):
    model = tiny_model(seed, name=name)
    save_checkpoint(path, epoch=epoch, state_dict=model.state_dict(), optimizer={}, **model_fields(model))
    return model


def test_every_registered_model_has_a_tiny_width():
    from model.registry import MODELS
    assert set(TINY_MODEL_ARGS) == set(MODELS)


def voice_like(seconds=0.8, rate=16000, pitch=140.0, seed=0, channels=1):
    """Float samples in [-1, 1]: a harmonic tone plus noise, one slightly different take per channel."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    takes = []
    for channel in range(channels):
        f0 = pitch * (1 + 0.07 * channel)
        tone = sum(np.sin(2 * np.pi * f0 * k * t + k) / k for k in range(1, 6) if f0 * k < rate / 2)
        takes.append(0.3 * tone / 2.3 + 0.05 * rng.standard_normal(t.size))
    signal = np.stack(takes, axis=1)
    return signal[:, 0] if channels == 1 else signal


def as_int16(signal):
    return np.round(np.clip(signal, -1, 1 - 1 / 32768) * 32767).astype(np.int16)


def hand_embedding(model, int16_scale_samples):
    """model(log_mel_fbank_int16(samples)) with the layout written out by hand."""
    features = log_mel_fbank_int16(int16_scale_samples)
    with torch.no_grad():
        return model(torch.from_numpy(features.T.copy())[None, None])[0].numpy()


def run_script(*args, cwd=ROOT):
    """A command in a fresh interpreter (exit code, stdout, stderr as the user sees them)."""
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          timeout=120)


def run_in_process(main, capsys, *args):
    """``main`` wrapped by ``run_main`` as the script runs it, without a new interpreter."""
    try:
        run_main(lambda: main([str(arg) for arg in args]))
        code = 0
    except SystemExit as stop:
        code = stop.code
    captured = capsys.readouterr()
    return SimpleNamespace(returncode=code, stdout=captured.out, stderr=captured.err)


@pytest.fixture
def checkpoint(tmp_path, model_name):
    """(path, model) of a tiny checkpoint: once per registered model (tests/conftest.py)."""
    path = tmp_path / "models" / "checkpoint_003.pth"
    return path, tiny_checkpoint(path, name=model_name)


@pytest.fixture
def encoder(checkpoint):
    return SpeakerEncoder.from_checkpoint(checkpoint[0], device="cpu")


# ------------------------------------------------------------------------------------------- the API
def test_wav_embedding_is_model_of_log_mel(checkpoint, encoder, tmp_path):
    samples = as_int16(voice_like())
    sf.write(tmp_path / "a.wav", samples, 16000, subtype="PCM_16")
    embedding = encoder.embed(tmp_path / "a.wav")
    assert embedding.shape == (256,) and embedding.dtype == np.float32
    np.testing.assert_allclose(embedding, hand_embedding(checkpoint[1], samples), rtol=1e-5, atol=1e-4)
    assert encoder.epoch == 3 and encoder.checkpoint_path == checkpoint[0]


def test_int16_and_float_inputs_agree(encoder, tmp_path):
    samples = as_int16(voice_like(seed=1))
    sf.write(tmp_path / "int16.wav", samples, 16000, subtype="PCM_16")
    sf.write(tmp_path / "float.wav", samples / 32768.0, 16000, subtype="FLOAT")
    reference = encoder.embed(tmp_path / "int16.wav")
    for other in (encoder.embed(tmp_path / "float.wav"), encoder.embed(samples, sample_rate=16000),
                  encoder.embed(samples.astype(np.float32) / 32768, sample_rate=16000)):
        np.testing.assert_allclose(other, reference, rtol=1e-5, atol=1e-4)


def test_stereo_44k_file_equals_hand_mix_and_resample(checkpoint, encoder, tmp_path):
    stereo = voice_like(seconds=0.7, rate=44100, channels=2, seed=2)
    sf.write(tmp_path / "stereo.wav", stereo.astype(np.float32), 44100, subtype="FLOAT")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        embedding = encoder.embed(tmp_path / "stereo.wav")
    notes = [str(w.message) for w in caught if issubclass(w.category, ConversionNote)]
    assert any("2 channels to mono" in n for n in notes) and any("44100 Hz to 16000 Hz" in n for n in notes)
    mono = stereo.astype(np.float32).astype(np.float64).mean(axis=1)
    by_hand = resample_poly(mono, 160, 441) * 32768.0
    np.testing.assert_allclose(embedding, hand_embedding(checkpoint[1], by_hand), rtol=1e-5, atol=1e-4)
    # the same content as an array, channels-first or channels-last, gives the same embedding
    for array in (stereo.astype(np.float32), stereo.astype(np.float32).T):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConversionNote)
            np.testing.assert_allclose(encoder.embed(array, sample_rate=44100), embedding, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("fmt, subtype, rate", [("FLAC", "PCM_16", 8000), ("OGG", "VORBIS", 44100)])
def test_flac_and_ogg_at_other_rates(checkpoint, encoder, tmp_path, fmt, subtype, rate):
    path = tmp_path / f"clip.{fmt.lower()}"
    sf.write(path, voice_like(seconds=0.6, rate=rate, seed=3), rate, format=fmt, subtype=subtype)
    decoded, _ = sf.read(path, dtype="float64")      # lossy ogg: compare against what it decodes to
    by_hand = resample_poly(decoded, 16000 // gcd(rate, 16000), rate // gcd(rate, 16000)) * 32768.0
    with pytest.warns(ConversionNote, match=f"resampled {rate} Hz"):
        embedding = encoder.embed(path)
    np.testing.assert_allclose(embedding, hand_embedding(checkpoint[1], by_hand), rtol=1e-5, atol=1e-4)


def test_score_is_cosine_of_embeddings(encoder, tmp_path):
    sf.write(tmp_path / "a.wav", as_int16(voice_like(seed=4)), 16000)
    sf.write(tmp_path / "b.wav", as_int16(voice_like(pitch=210.0, seed=5)), 16000)
    a, b = encoder.embed(tmp_path / "a.wav"), encoder.embed(tmp_path / "b.wav")
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    by_hand = float(np.dot(a64, b64) / np.sqrt(np.dot(a64, a64) * np.dot(b64, b64)))
    assert encoder.score(a, b) == pytest.approx(by_hand, abs=1e-9)
    assert encoder.score(tmp_path / "a.wav", str(tmp_path / "b.wav")) == pytest.approx(by_hand, abs=1e-6)
    assert encoder.score(a, a) == pytest.approx(1.0, abs=1e-9)
    with pytest.raises(UserInputError, match=r"shape \(256,\)"):
        encoder.score(a, np.zeros(12000))


def test_bad_arrays_are_refused_clearly(encoder):
    with pytest.raises(UserInputError, match="sample_rate is required"):
        encoder.embed(np.zeros(16000, np.float32))
    with pytest.raises(UserInputError, match=r"\[-1, 1\]"):
        encoder.embed(np.full(16000, 300.0), sample_rate=16000)
    with pytest.raises(UserInputError, match="too short"):
        encoder.embed(np.full(100, 0.1), sample_rate=16000)
    with pytest.raises(UserInputError, match="silent"):
        encoder.embed(np.zeros(16000, np.int16), sample_rate=16000)


def test_cp_num_resolution(tmp_path):
    model = tiny_checkpoint(configure.checkpoint_path(2, 7, tmp_path), epoch=7)
    encoder = SpeakerEncoder.from_checkpoint(n_folder=2, cp_num=7, device="cpu", model_dir=tmp_path)
    loaded = encoder.model.state_dict()
    assert all(torch.equal(loaded[key], value) for key, value in model.state_dict().items())
    with pytest.raises(UserInputError, match=r"--cp_num 8.*: 7$"):
        SpeakerEncoder.from_checkpoint(n_folder=2, cp_num=8, model_dir=tmp_path)
    if not torch.cuda.is_available():
        with pytest.raises(UserInputError, match="no CUDA GPU is available"):
            SpeakerEncoder.from_checkpoint(n_folder=2, cp_num=7, device="cuda", model_dir=tmp_path)
    other = tmp_path / "elsewhere"           # the one-call API caches by checkpoint file, not by flags
    tiny_checkpoint(configure.checkpoint_path(2, 7, other), seed=9, epoch=7)
    a = speaker_api.embed(np.sin(np.arange(16000) / 9.0), 16000, n_folder=2, cp_num=7, model_dir=tmp_path)
    b = speaker_api.embed(np.sin(np.arange(16000) / 9.0), 16000, n_folder=2, cp_num=7, model_dir=other)
    assert not np.allclose(a, b)


# ------------------------------------------------------------------------------------------- verify.py
def write_pair(folder):
    sf.write(folder / "enroll.wav", as_int16(voice_like(seed=6)), 16000)
    sf.write(folder / "test.flac", as_int16(voice_like(seed=7, seconds=1.1)), 16000, format="FLAC")
    return folder / "enroll.wav", folder / "test.flac"


def test_verify_uses_saved_eer_threshold(checkpoint, encoder, tmp_path):
    enroll, test = write_pair(tmp_path)
    expected = encoder.score(enroll, test)
    threshold_file = checkpoint[0].parent / "eer_full_cp003.json"
    threshold_file.write_text(json.dumps({"eer": 4.2, "threshold": expected - 0.01}))
    result = run_script("verify.py", "--checkpoint", checkpoint[0], enroll, test)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"score: {expected:.6f}"
    assert lines[1] == f"threshold: {expected - 0.01:.6f} (EER threshold saved by EER_full.py in {threshold_file})"
    assert lines[2] == "decision: ACCEPT (same speaker)"


def test_verify_threshold_override_and_n_folder(tmp_path, capsys):
    saved = tmp_path / "saved"
    tiny_checkpoint(configure.checkpoint_path(1, 5, saved), epoch=5)
    (configure.run_folder(1, saved) / "eer_full_cp005.json").write_text('{"threshold": -1.0}')
    enroll, test = write_pair(tmp_path)
    score, threshold, accepted = verify_cmd.main(["--n_folder", "1", "--cp_num", "5", "--model_dir", str(saved),
                                                  "--threshold", "0.999999", str(enroll), str(test)])
    assert (threshold, accepted) == (0.999999, score >= 0.999999) and not accepted
    out = capsys.readouterr().out
    assert "threshold: 0.999999 (--threshold)" in out and "REJECT" in out
    score_default, threshold, accepted = verify_cmd.main(["--n_folder", "1", "--cp_num", "5", "--model_dir",
                                                          str(saved), str(enroll), str(test)])
    assert score_default == pytest.approx(score) and threshold == -1.0 and accepted


def test_verify_without_threshold_is_a_clear_error(checkpoint, tmp_path):
    enroll, test = write_pair(tmp_path)
    result = run_script("verify.py", "--checkpoint", checkpoint[0], enroll, test)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        f"error: no decision threshold for {checkpoint[0]} (looked for "
        f"{checkpoint[0].parent / 'eer_full_cp003.json'}): run EER_full.py for this checkpoint, or pass --threshold"]
    corrupt = checkpoint[0].parent / "eer_full_cp003.json"
    corrupt.write_text('{"eer": 3.0}')
    with pytest.raises(UserInputError, match="cannot read the saved EER threshold"):
        verify_cmd.main(["--checkpoint", str(checkpoint[0]), str(enroll), str(test)])


def test_verify_notes_conversions_and_refuses_bad_audio(checkpoint, tmp_path, capsys):
    sf.write(tmp_path / "e.wav", voice_like(rate=8000, channels=2).astype(np.float32), 8000, subtype="FLOAT")
    (tmp_path / "t.wav").write_bytes(b"this is not audio at all")
    result = run_in_process(verify_cmd.main, capsys, "--checkpoint", checkpoint[0], "--threshold", "0.5",
                            tmp_path / "e.wav", tmp_path / "t.wav")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert f"note: {tmp_path / 'e.wav'}: mixed 2 channels to mono" in lines
    assert f"note: {tmp_path / 'e.wav'}: resampled 8000 Hz to 16000 Hz" in lines
    assert lines[-1].startswith(f"error: {tmp_path / 't.wav'}: cannot read audio")


# ------------------------------------------------------------------------------------------- embed.py
def test_embed_command_mirrors_folders_and_writes_index(checkpoint, encoder, tmp_path, capsys):
    corpus = tmp_path / "recordings"
    (corpus / "alice" / "day1").mkdir(parents=True)
    (corpus / "bob").mkdir()
    sf.write(corpus / "alice" / "day1" / "a.wav", as_int16(voice_like(seconds=0.5, seed=8)), 16000)
    sf.write(corpus / "bob" / "b.flac", as_int16(voice_like(seconds=1.0, rate=8000, seed=9)), 8000, format="FLAC")
    sf.write(corpus / "bob" / "c.ogg", voice_like(seconds=0.75, seed=10), 16000, format="OGG")
    (corpus / "bob" / "notes.txt").write_text("not audio, not an audio suffix: ignored")
    single = tmp_path / "single.wav"
    sf.write(single, as_int16(voice_like(seconds=0.3, seed=11)), 16000)
    (tmp_path / "files.txt").write_text(f"{single}\r\n\r\n# comment\r\n{single}")
    out = tmp_path / "emb"
    result = run_in_process(embed_cmd.main, capsys, "--checkpoint", checkpoint[0], "--out", out, corpus,
                            "--list", tmp_path / "files.txt")
    assert result.returncode == 0, result.stderr
    index = (out / "index.tsv").read_text().splitlines()
    assert index == ["embedding\tsource\tduration_s",
                     f"alice/day1/a.npy\t{corpus / 'alice/day1/a.wav'}\t0.500",
                     f"bob/b.npy\t{corpus / 'bob/b.flac'}\t1.000",
                     f"bob/c.npy\t{corpus / 'bob/c.ogg'}\t0.750",
                     f"single.npy\t{single}\t0.300"]
    for line in index[1:]:
        relative, source, _ = line.split("\t")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConversionNote)
            one_by_one = encoder.embed(source)   # embed.py batches the files (padded + masked)
        np.testing.assert_allclose(np.load(out / relative), one_by_one, rtol=0, atol=1e-6 * np.abs(one_by_one).max())
    assert f"note: {corpus / 'bob/b.flac'}: resampled 8000 Hz to 16000 Hz" in result.stderr
    assert not [p for p in out.rglob("*") if p.name.startswith(".")], "temporary files left behind"


def test_embed_command_skips_bad_files_and_fails_at_the_end(checkpoint, tmp_path, capsys):
    folder = tmp_path / "mixed"
    folder.mkdir()
    sf.write(folder / "good.wav", as_int16(voice_like(seed=12)), 16000)
    (folder / "empty.wav").write_bytes(b"")
    (folder / "garbage.flac").write_bytes(b"\x00\x01 definitely not flac" * 10)
    sf.write(folder / "silent.wav", np.zeros(16000, np.int16), 16000)
    out = tmp_path / "emb"
    result = run_in_process(embed_cmd.main, capsys, "--checkpoint", checkpoint[0], "--out", out, folder)
    assert result.returncode == 2
    assert sorted(p.name for p in out.iterdir()) == ["good.npy", "index.tsv", "model.json"]
    assert (out / "index.tsv").read_text().splitlines()[1:] == [f"good.npy\t{folder / 'good.wav'}\t0.800"]
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("error: 3 of 4 files could not be embedded: ")
    for name in ("empty.wav", "garbage.flac", "silent.wav"):
        assert str(folder / name) in error
        assert any(line.startswith(f"skipped: {folder / name}") for line in result.stderr.splitlines())


def test_embed_inputs_are_checked_before_any_work(checkpoint, tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    for folder in ("x", "y"):
        sf.write(tmp_path / folder / "same.wav", as_int16(voice_like()), 16000)
    with pytest.raises(UserInputError, match=r"1 inputs would write the same embedding.*same\.npy"):
        embed_cmd.main(["--checkpoint", str(checkpoint[0]), "--out", str(tmp_path / "o"),
                        str(tmp_path / "x"), str(tmp_path / "y")])
    (tmp_path / "list.txt").write_text(f"{tmp_path / 'x' / 'same.wav'}\n{tmp_path / 'missing.wav'}\n")
    with pytest.raises(UserInputError, match=r"missing\.wav \(listed in .*list\.txt\): no such file"):
        embed_cmd.main(["--checkpoint", str(checkpoint[0]), "--out", str(tmp_path / "o"),
                        "--list", str(tmp_path / "list.txt")])
    assert not (tmp_path / "o").exists()


def test_verify_threshold_file_named_as_eer_full_names_it(checkpoint, tmp_path, capsys):
    """EER_full.py --checkpoint X --cp_num k writes eer_full_cp{k}.json beside X; --out_dir elsewhere."""
    enroll, test = write_pair(tmp_path)
    renamed = tmp_path / "published.pth"
    renamed.write_bytes(checkpoint[0].read_bytes())
    (tmp_path / "eer_full_cp042.json").write_text('{"threshold": 2.0}')
    _, threshold, accepted = verify_cmd.main(["--checkpoint", str(renamed), "--cp_num", "42",
                                              str(enroll), str(test)])
    assert (threshold, accepted) == (2.0, False)
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "eer_full_cp100.json").write_text('{"threshold": -2.0}')
    _, threshold, accepted = verify_cmd.main(["--checkpoint", str(renamed), "--threshold_file",
                                              str(tmp_path / "results" / "eer_full_cp100.json"),
                                              str(enroll), str(test)])
    assert (threshold, accepted) == (-2.0, True)
    assert f"(EER threshold from {tmp_path / 'results' / 'eer_full_cp100.json'})" in capsys.readouterr().out
    with pytest.raises(UserInputError, match=r"no decision threshold for .*published\.pth: run EER_full"):
        verify_cmd.main(["--checkpoint", str(renamed), str(enroll), str(test)])


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed (scripts/setup_env.sh installs it)")
def test_embed_command_finds_mp3_through_ffmpeg(checkpoint, encoder, tmp_path, capsys):
    folder = tmp_path / "phone"
    folder.mkdir()
    sf.write(tmp_path / "source.wav", as_int16(voice_like(seconds=1.0, rate=22050, seed=13)), 22050)
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(tmp_path / "source.wav"),
                    str(folder / "memo.mp3")], check=True, capture_output=True)
    result = run_in_process(embed_cmd.main, capsys, "--checkpoint", checkpoint[0], "--out", tmp_path / "emb", folder)
    assert result.returncode == 0, result.stderr
    assert f"note: {folder / 'memo.mp3'}: decoded .mp3 with ffmpeg" in result.stderr
    row = (tmp_path / "emb" / "index.tsv").read_text().splitlines()[1].split("\t")
    assert row[:2] == ["memo.npy", str(folder / "memo.mp3")] and abs(float(row[2]) - 1.0) < 0.06
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConversionNote)
        np.testing.assert_allclose(np.load(tmp_path / "emb" / "memo.npy"), encoder.embed(folder / "memo.mp3"),
                                   atol=1e-6)
