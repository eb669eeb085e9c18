"""Audio read in blocks: a recording of any length without holding its waveform, same samples as
``read_audio``.

An ``AudioStream`` reads a file ``block_seconds`` at a time (soundfile ``SoundFile.read(frames)``, or
ffmpeg's output pipe for the formats only ffmpeg decodes) and yields consecutive blocks of 16 kHz
mono samples on the int16 scale. Channels are mixed and samples scaled by the functions
``read_audio`` uses (``mono_int16_scale``); another sample rate is converted by ``BlockResampler``,
which gives what scipy's ``resample_poly`` gives for the whole signal (blocks overlap by the
filter's reach; tested to 1e-9 of the int16 scale). ffmpeg resamples on its own, as ``read_audio``
lets it. ``ArrayStream`` serves samples already in memory the same way.

``blocks()`` can be called again: each call is a new pass over the recording (a second read of the
file). Every pass refuses non-finite samples and counts ``n_samples`` and ``peak`` (the largest
|sample|), so ``check_level()`` can refuse silent or too-short audio after a pass. A file that stops
decoding part of the way through (a truncated FLAC, a broken ffmpeg stream) is refused with one
``UserInputError`` naming the file and how far it got.
"""
import math
import subprocess
import tempfile

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from feat_extract.audio import (cannot_read, channel_note, check_audio_file, check_finite_samples,
                                check_length_and_level, decoded_by_ffmpeg, ffmpeg_command, ffmpeg_failure, ffmpeg_note,
                                mono_int16_scale, resampling_factors, resampling_note)
from feat_extract.fbank import SAMPLE_RATE

BLOCK_SECONDS = 60.0


class BlockResampler:
    """scipy ``resample_poly(x, up, down)`` of a signal that arrives in consecutive blocks.

    Output sample ``k`` is the FIR filter (half length ``10 * max(up, down)`` at the up-sampled rate)
    centred on input position ``k * down / up``, so it depends only on inputs within ``reach`` of
    it. Each call resamples the inputs still needed (kept from a multiple of ``down``, so local and
    global output indices differ by a whole number) and keeps the outputs whose inputs have all
    arrived; at the end of the signal both see the same zero padding."""

    def __init__(self, rate: int, target_rate: int = SAMPLE_RATE):
        self.up, self.down = resampling_factors(rate, target_rate)
        self.reach = math.ceil(10 * max(self.up, self.down) / self.up) + 1   # input samples

    def resample(self, blocks):
        history, history_start, received, emitted = np.zeros(0), 0, 0, 0
        for block in blocks:
            history = np.concatenate([history, block])
            received += len(block)
            ready = max(0, (received - self.reach) * self.up // self.down)
            if ready > emitted:
                yield self.outputs(history, history_start, emitted, ready)
                emitted = ready
                keep_from = max(0, (emitted * self.down // self.up - self.reach) // self.down * self.down)
                history, history_start = history[keep_from - history_start:], keep_from
        total = -(-received * self.up // self.down)
        if total > emitted:
            yield self.outputs(history, history_start, emitted, total)

    def outputs(self, history, history_start: int, first: int, last: int) -> np.ndarray:
        """Global output samples [first, last) from the inputs held from ``history_start`` on."""
        offset = history_start * self.up // self.down
        return resample_poly(history, self.up, self.down)[first - offset:last - offset]


class SampleStream:
    """Base: ``blocks()`` passes over 16 kHz int16-scale mono samples, checked and counted."""

    source: str = "audio"
    notes: list
    n_samples: int = 0
    peak: float = 0.0

    def blocks(self):
        self.n_samples, self.peak = 0, 0.0
        for block in self.raw_blocks():
            check_finite_samples(self.source, block)
            if block.size:
                self.n_samples += block.size
                self.peak = max(self.peak, float(np.max(np.abs(block))))
                yield block

    def raw_blocks(self):
        raise NotImplementedError

    def check_level(self) -> None:
        """After a pass: refuse audio shorter than one frame or digitally silent (as ``read_audio``)."""
        check_length_and_level(self.source, self.n_samples, self.peak, SAMPLE_RATE)

    @property
    def duration_s(self) -> float:
        return self.n_samples / SAMPLE_RATE


class ArrayStream(SampleStream):
    """Samples already in memory (16 kHz, mono, int16 scale), served in blocks."""

    def __init__(self, samples: np.ndarray, source: str = "array", notes=(), block_seconds: float = BLOCK_SECONDS):
        self.samples, self.source, self.notes = np.asarray(samples, np.float64), source, list(notes)
        self.block = max(1, int(block_seconds * SAMPLE_RATE))

    def raw_blocks(self):
        for start in range(0, self.samples.size, self.block):
            yield self.samples[start:start + self.block]


class AudioStream(SampleStream):
    """An audio file (any format ``read_audio`` reads) in blocks of ``block_seconds``."""

    def __init__(self, path, block_seconds: float = BLOCK_SECONDS):
        self.path = check_audio_file(path)
        self.source, self.block_seconds = str(self.path), block_seconds
        self.ffmpeg = decoded_by_ffmpeg(self.path)
        if self.ffmpeg:
            self.rate, self.notes = SAMPLE_RATE, [ffmpeg_note(self.path)]
            return
        try:
            info = sf.info(str(self.path))
        except Exception as error:
            raise cannot_read(self.path, error) from None
        self.rate = int(info.samplerate)
        self.notes = channel_note(info.channels)
        if self.rate != SAMPLE_RATE:
            self.notes.append(resampling_note(self.rate, SAMPLE_RATE))

    def raw_blocks(self):
        blocks = self.ffmpeg_blocks() if self.ffmpeg else self.soundfile_blocks()
        if self.rate != SAMPLE_RATE:
            blocks = BlockResampler(self.rate).resample(blocks)
        return blocks

    def soundfile_blocks(self):
        frames, read = max(1, int(self.block_seconds * self.rate)), 0
        try:
            with sf.SoundFile(str(self.path)) as audio:
                while True:
                    data = audio.read(frames, dtype="float64", always_2d=True)
                    if not len(data):
                        return
                    read += len(data)
                    yield mono_int16_scale(data)
        except (sf.LibsndfileError, RuntimeError, ValueError) as error:
            where = f" after {read / self.rate:.1f} s" if read else ""
            raise cannot_read(self.path, error, where) from None

    def ffmpeg_blocks(self):
        n_bytes = 2 * max(1, int(self.block_seconds * SAMPLE_RATE))
        with tempfile.TemporaryFile() as errors:
            process = subprocess.Popen(ffmpeg_command(self.path, SAMPLE_RATE), stdout=subprocess.PIPE,
                                       stderr=errors, stdin=subprocess.DEVNULL)
            try:
                while chunk := process.stdout.read(n_bytes):
                    yield np.frombuffer(chunk[:len(chunk) // 2 * 2], dtype="<i2").astype(np.float64)
                if process.wait() != 0:
                    errors.seek(0)
                    raise ffmpeg_failure(self.path, errors.read())
            finally:
                if process.poll() is None:
                    process.kill()
                process.wait()
                process.stdout.close()
