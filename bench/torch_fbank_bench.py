"""The PyTorch fbank (feat_extract/torch_fbank.py) against python_speech_features' ``log_mel_fbank``:
processing seconds per second of audio, on one CPU core (one torch thread, one BLAS thread), for a
batch of 8 s signals like training crops / VoxCeleb utterances; and on the GPU when the device is one.

Before timing, the outputs are asserted equal to 1e-4 (float64, the default) and the float32 error is
measured and shown in the note. The baseline is python_speech_features one signal at a time, as
``feature_extraction.py`` runs it.
"""
import numpy as np
import torch

from bench.report import Result
from bench.timing import median_seconds
from feat_extract.fbank import SAMPLE_RATE, log_mel_fbank
from feat_extract.feature_extraction import single_blas_thread
from feat_extract.torch_fbank import TorchFbank


def speech_like_signals(n_signals: int, seconds: float, seed: int = 0) -> np.ndarray:
    """(n, samples) int16: white noise through a random two-pole resonance, gated into
    bursts and pauses of exact zeros (the range of energies a fbank sees in speech)."""
    from scipy.signal import lfilter
    rng = np.random.default_rng(seed)
    n_samples = int(seconds * SAMPLE_RATE)
    signals = np.empty((n_signals, n_samples))
    for row in range(n_signals):
        pole = 0.97 * np.exp(1j * rng.uniform(0.05, 1.5))
        resonance = lfilter([1.0], [1.0, -2 * pole.real, abs(pole) ** 2], rng.standard_normal(n_samples))
        gate = np.sin(np.linspace(0, 20 * np.pi, n_samples) + rng.uniform(0, 6)) > -0.3
        signals[row] = resonance * gate
    return np.round(signals * 20000 / np.abs(signals).max(axis=1, keepdims=True)).astype(np.int16)


def max_difference(fbank: TorchFbank, signals: np.ndarray, expected: list) -> float:
    with torch.no_grad():
        ours = fbank(torch.from_numpy(signals)).cpu().numpy()
    return max(float(np.abs(a - b).max()) for a, b in zip(ours, expected))


def timed_torch(fbank: TorchFbank, batch: torch.Tensor, repeats: int) -> float:
    def run():
        with torch.no_grad():
            fbank(batch)
        if batch.is_cuda:
            torch.cuda.synchronize()
    run()  # warm-up (allocations, CUDA plans)
    return median_seconds(run, repeats)


def torch_fbank_results(n_signals: int, seconds: float, repeats: int, device) -> list:
    signals = speech_like_signals(n_signals, seconds)
    audio_seconds = n_signals * seconds
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with single_blas_thread():
            expected = [log_mel_fbank(signal) for signal in signals]
            baseline = median_seconds(lambda: [log_mel_fbank(signal) for signal in signals], repeats)
        results = []
        for dtype, name in ((torch.float64, "float64"), (torch.float32, "float32")):
            fbank = TorchFbank(dtype=dtype)
            error = max_difference(fbank, signals, expected)
            if dtype == torch.float64:
                assert error < 1e-4, f"torch fbank differs from log_mel_fbank by {error}"
            seconds_taken = timed_torch(fbank, torch.from_numpy(signals), repeats)
            results.append(Result(f"torch_fbank_cpu_1_core_{name}", seconds_taken / audio_seconds,
                                  "s per audio s", baseline / audio_seconds, False, None,
                                  f"baseline = python_speech_features, 1 core; batch of {n_signals} x "
                                  f"{seconds:g} s; max abs difference {error:.2g} dB; medians of {repeats}"))
    finally:
        torch.set_num_threads(threads)
    if device.type == "cuda":
        results += gpu_results(signals, expected, audio_seconds, baseline, repeats, device)
    return results


def gpu_results(signals, expected, audio_seconds, baseline, repeats, device) -> list:
    results = []
    for dtype, name in ((torch.float64, "float64"), (torch.float32, "float32")):
        fbank = TorchFbank(dtype=dtype).to(device)
        error = max_difference(fbank, signals, expected)
        if dtype == torch.float64:
            assert error < 1e-4, f"torch fbank on {device} differs from log_mel_fbank by {error}"
        batch = torch.from_numpy(signals).to(device)
        seconds_taken = timed_torch(fbank, batch, repeats)
        results.append(Result(f"torch_fbank_{device.type}_{name}", seconds_taken / audio_seconds,
                              "s per audio s", baseline / audio_seconds, False, None,
                              f"baseline = python_speech_features, 1 CPU core; signals already on the "
                              f"device; max abs difference {error:.2g} dB; medians of {repeats}"))
    return results
