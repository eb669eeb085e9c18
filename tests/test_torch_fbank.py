"""The PyTorch fbank against python_speech_features (the reference) and the original's features."""
import numpy as np
import pytest
import soundfile as sf
import torch
from python_speech_features import fbank as psf_fbank
from python_speech_features.base import get_filterbanks

from feat_extract.fbank import log_mel_fbank
from feat_extract.torch_fbank import TorchFbank, frame_geometry, mel_filterbank, n_frames, torch_log_mel_fbank

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("rate", [16000, 8000, 44100])
def test_filterbank_is_python_speech_features(rate):
    np.testing.assert_array_equal(mel_filterbank(rate), get_filterbanks(40, 512, rate))


def test_frame_geometry_rounds_half_up():
    assert frame_geometry(16000) == (400, 160)
    assert frame_geometry(44100) == (1103, 441)          # 1102.5 -> 1103, as python_speech_features


@pytest.mark.parametrize("device", DEVICES)
def test_reference_wav(reference, device):
    signal, rate = sf.read(reference / "golden.wav", dtype="int16")
    features = torch_log_mel_fbank(signal, rate, device=device)
    expected = np.load(reference / "feat.npy")
    assert features.dtype == np.float32 and features.shape == expected.shape == (369, 40)
    np.testing.assert_allclose(features, expected, atol=1e-4, rtol=0)
    np.testing.assert_allclose(features, log_mel_fbank(signal, rate), atol=1e-4, rtol=0)
    as_float, _ = sf.read(reference / "golden.wav", dtype="float32")
    np.testing.assert_allclose(torch_log_mel_fbank(as_float, rate, device=device), expected, atol=1e-4, rtol=0)


def random_signals(n_rows, n_samples, seed):
    """int16 noise at random levels, with runs of exact zeros (silence, zero frames, zero tails)."""
    rng = np.random.default_rng(seed)
    signals = rng.integers(-32768, 32768, (n_rows, n_samples)) * rng.uniform(1e-4, 1, (n_rows, 1))
    signals = np.round(signals).astype(np.int16)
    for row in signals:
        start = int(rng.integers(0, n_samples))
        row[start:start + int(rng.integers(0, 2000))] = 0
    if n_samples > 900:
        signals[0, -700:] = 0                      # the zero-padded last frames are all zero
        signals[-1, 100:900] = 0                   # whole frames of exact zeros in the middle
    return signals


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("n_samples", [1, 150, 399, 400, 401, 559, 560, 561, 3210, 16000, 20001])
def test_batched_random_signals_match_log_mel_fbank(n_samples, device):
    signals = random_signals(3, n_samples, seed=n_samples)
    with torch.no_grad():
        batched = TorchFbank().to(device)(torch.from_numpy(signals)).cpu().numpy()
    assert batched.shape == (3, n_frames(n_samples), 40)
    for row, features in zip(signals, batched):
        np.testing.assert_allclose(features, log_mel_fbank(row), atol=1e-4, rtol=0)


def test_all_zero_signal_is_the_floor_everywhere():
    silent = np.zeros(1600, dtype=np.int16)
    raw = TorchFbank(normalise=False)(torch.from_numpy(silent)).numpy()
    assert raw.shape == (n_frames(1600), 40) == (9, 40)
    np.testing.assert_array_equal(raw, np.full((9, 40), -100.0, dtype=np.float32))   # 20 log10(1e-5)
    np.testing.assert_array_equal(log_mel_fbank(silent), TorchFbank()(torch.from_numpy(silent)).numpy())


def test_unnormalised_is_20_log10_of_python_speech_features_fbank():
    signal = random_signals(1, 4321, seed=7)[0].astype(np.float64)
    energies, _ = psf_fbank(signal, samplerate=16000, nfilt=40, winlen=0.025, winstep=0.01, nfft=512,
                            preemph=0.97, winfunc=np.hamming)
    expected = 20 * np.log10(np.maximum(energies, 1e-5))
    ours = TorchFbank(normalise=False)(torch.from_numpy(signal)).numpy()
    np.testing.assert_allclose(ours, expected, atol=1e-4, rtol=0)


def test_leading_dimensions_and_float32_error_is_small():
    signals = random_signals(4, 8000, seed=3)
    with torch.no_grad():
        grid = TorchFbank()(torch.from_numpy(signals).view(2, 2, 8000))
        single = TorchFbank(dtype=torch.float32)(torch.from_numpy(signals))
    assert grid.shape == (2, 2, 49, 40)
    np.testing.assert_array_equal(grid.reshape(4, 49, 40).numpy(), TorchFbank()(torch.from_numpy(signals)).numpy())
    expected = np.stack([log_mel_fbank(row) for row in signals])
    assert np.abs(single.numpy() - expected).max() < 0.05      # float32: FFT rounding in weak filters


def test_empty_signal_refused():
    with pytest.raises(ValueError, match="empty signal"):
        TorchFbank()(torch.zeros(2, 0))


def test_bench_rows_compare_with_python_speech_features():
    from bench.torch_fbank_bench import speech_like_signals, torch_fbank_results
    signals = speech_like_signals(2, 1.0)
    assert signals.dtype == np.int16 and signals.shape == (2, 16000) and (signals == 0).sum() > 1000
    rows = torch_fbank_results(2, 1.0, 1, torch.device("cpu"))
    assert [row.name for row in rows] == ["torch_fbank_cpu_1_core_float64", "torch_fbank_cpu_1_core_float32"]
    assert all(row.value > 0 and row.baseline > 0 for row in rows)
    assert "max abs difference 0 dB" in rows[0].note or "e-0" in rows[0].note
