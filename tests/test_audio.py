"""read_audio on real bad and unusual files: each is refused with its reason or converted with a note."""
import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf

from common.errors import UserInputError
from feat_extract.audio import read_audio
from feat_extract.fbank import log_mel_fbank_int16

RATE = 16000


def sine(rate, seconds=1.0, frequency=440.0, amplitude=0.5):
    t = np.arange(int(rate * seconds)) / rate
    return amplitude * np.sin(2 * np.pi * frequency * t)


def write(path, data, rate, subtype="PCM_16"):
    sf.write(str(path), data, rate, subtype=subtype)
    return path


@pytest.mark.parametrize("content, reason", [
    (b"", "empty file"),
    (b"this is a text file, not audio\n" * 20, "cannot read audio"),
])
def test_empty_and_non_audio_refused(tmp_path, content, reason):
    path = tmp_path / "bad.wav"
    path.write_bytes(content)
    with pytest.raises(UserInputError, match=reason) as error:
        read_audio(path)
    assert str(path) in str(error.value)


def test_truncated_header_refused(tmp_path):
    whole = write(tmp_path / "whole.wav", sine(RATE), RATE).read_bytes()
    (tmp_path / "cut.wav").write_bytes(whole[:20])
    with pytest.raises(UserInputError, match="cannot read audio"):
        read_audio(tmp_path / "cut.wav")


@pytest.mark.parametrize("rate", [8000, 44100])
def test_other_rates_resampled_with_note(tmp_path, rate):
    audio = read_audio(write(tmp_path / "x.wav", sine(rate), rate))
    assert audio.sample_rate == RATE and audio.samples.size == RATE
    assert audio.notes == [f"resampled {rate} Hz to 16000 Hz"]
    middle = slice(1000, 15000)
    expected = sine(RATE)[middle] * 32768
    assert np.max(np.abs(audio.samples[middle] - expected)) < 0.01 * 0.5 * 32768


def test_stereo_mixed_to_mono_with_note(tmp_path):
    left = sine(RATE)
    audio = read_audio(write(tmp_path / "st.wav", np.stack([left, 0.5 * left], axis=1), RATE))
    assert audio.notes == ["mixed 2 channels to mono"]
    np.testing.assert_allclose(audio.samples, 0.75 * left * 32768, atol=1.5)


def test_float32_wav_matches_int16_wav(tmp_path):
    signal = sine(RATE, frequency=300) + 0.1 * np.random.default_rng(0).standard_normal(RATE) * 0.1
    as_float = read_audio(write(tmp_path / "f.wav", signal, RATE, "FLOAT"))
    as_int = read_audio(write(tmp_path / "i.wav", signal, RATE, "PCM_16"))
    assert as_float.notes == [] and as_int.notes == []
    np.testing.assert_allclose(as_float.samples, as_int.samples, atol=1.0)   # int16 rounding
    np.testing.assert_allclose(log_mel_fbank_int16(as_float.samples), log_mel_fbank_int16(as_int.samples), atol=0.05)


def test_flac_is_lossless(tmp_path):
    signal = np.round(sine(RATE) * 32767).astype(np.int16)
    wav = read_audio(write(tmp_path / "a.wav", signal, RATE))
    flac = read_audio(write(tmp_path / "a.flac", signal, RATE))
    np.testing.assert_array_equal(wav.samples, flac.samples)


def test_silent_refused(tmp_path):
    with pytest.raises(UserInputError, match="silent"):
        read_audio(write(tmp_path / "zero.wav", np.zeros(RATE), RATE))


def test_shorter_than_one_frame_refused(tmp_path):
    with pytest.raises(UserInputError, match=r"too short \(399 samples"):
        read_audio(write(tmp_path / "short.wav", sine(RATE)[1:400], RATE))
    assert read_audio(write(tmp_path / "frame.wav", sine(RATE)[1:401], RATE)).samples.size == 400


def test_nan_float_wav_refused(tmp_path):
    signal = sine(RATE)
    signal[100] = np.nan
    with pytest.raises(UserInputError, match="NaN"):
        read_audio(write(tmp_path / "nan.wav", signal, RATE, "FLOAT"))


def test_missing_file(tmp_path):
    with pytest.raises(UserInputError, match="not found"):
        read_audio(tmp_path / "nope.wav")


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed (CI installs it)")
def test_m4a_decoded_with_ffmpeg(tmp_path):
    source = write(tmp_path / "s.wav", np.stack([sine(44100)] * 2, axis=1), 44100)
    m4a = tmp_path / "s.m4a"
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(source), str(m4a)], check=True)
    audio = read_audio(m4a)
    assert audio.notes == ["decoded .m4a with ffmpeg"] and audio.sample_rate == RATE
    assert abs(audio.samples.size - RATE) < 2048            # AAC adds priming/padding frames
    rms = np.sqrt(np.mean(audio.samples[2000:14000] ** 2))
    assert rms == pytest.approx(0.5 * 32768 / np.sqrt(2), rel=0.1)
