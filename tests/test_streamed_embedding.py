"""Recordings streamed in audio blocks into exact chunks: the same samples, features and embeddings
as reading the whole recording, with only a block of audio and a chunk of frames held at a time, and
a file that breaks part of the way through refused cleanly."""
import tracemalloc

import numpy as np
import pytest
import soundfile as sf
import torch
from scipy.signal import resample_poly

import embed as embed_cmd
import score as score_cmd
import verify as verify_cmd
from common.errors import UserInputError
from evaluation import recordings
from evaluation.long_recordings import chunk_plan
from evaluation.recordings import embed_recording, scan
from feat_extract.audio import read_audio, resampling_factors
from feat_extract.audio_stream import ArrayStream, AudioStream, BlockResampler
from feat_extract.fbank import log_mel_fbank_int16
from feat_extract.long_audio import log_energy_blocks, log_mel_fbank_blocks
from speaker_api import SpeakerEncoder
from tests.test_api import as_int16, run_in_process, tiny_checkpoint, tiny_model, voice_like


def one_pass(model, int16_scale_samples):
    """The whole recording's features, one forward: the embedding streaming must reproduce."""
    features = log_mel_fbank_int16(int16_scale_samples)
    with torch.no_grad():
        return model(torch.from_numpy(features.T.copy())[None, None])[0].numpy()


@pytest.mark.parametrize("rate, blocks", [(8000, (5, 1000)), (22050, (441, 9999)), (44100, (29, 4410)),
                                          (48000, (31, 7777))])
def test_block_resampler_equals_resample_poly_of_the_whole_signal(rate, blocks):
    signal = np.random.default_rng(rate).standard_normal(rate + 17) * 3000
    whole = resample_poly(signal, *resampling_factors(rate, 16000))
    for block in blocks:                                # 5, 29, 31: smaller than the filter's reach
        pieces = [signal[i:i + block] for i in range(0, signal.size, block)]
        streamed = np.concatenate(list(BlockResampler(rate).resample(pieces)))
        np.testing.assert_array_equal(streamed, whole)


@pytest.mark.parametrize("n_samples", [400, 401, 639, 640, 16000 * 3 + 37])
def test_fbank_of_sample_blocks_equals_one_pass_bit_for_bit(n_samples):
    samples = np.round(np.random.default_rng(n_samples).standard_normal(n_samples) * 3000)
    for block in (37, 400, 1601):                       # blocks shorter than a frame, too
        pieces = [samples[i:i + block] for i in range(0, n_samples, block)]
        energies = np.concatenate(list(log_energy_blocks(pieces, block_frames=7)))
        np.testing.assert_array_equal((energies - energies.mean(axis=0)).astype(np.float32),
                                      log_mel_fbank_int16(samples))


def test_file_blocks_mix_scale_and_resample_like_read_audio(tmp_path):
    stereo = voice_like(seconds=3.1, rate=44100, channels=2, seed=5)
    sf.write(tmp_path / "st.wav", stereo.astype(np.float32), 44100, subtype="FLOAT")
    sf.write(tmp_path / "low.flac", as_int16(voice_like(seconds=2.2, rate=8000, seed=6)), 8000)
    for name in ("st.wav", "low.flac"):
        stream = AudioStream(tmp_path / name, block_seconds=0.3)
        blocks = list(stream.blocks())
        audio = read_audio(tmp_path / name)
        assert len(blocks) > 5 and stream.notes == audio.notes
        np.testing.assert_array_equal(np.concatenate(blocks), audio.samples)
        assert stream.n_samples == audio.samples.size and stream.peak == np.abs(audio.samples).max()


@pytest.mark.skipif(not __import__("shutil").which("ffmpeg"), reason="needs ffmpeg")
def test_ffmpeg_pipe_blocks_equal_decoding_the_whole_file(tmp_path):
    import subprocess
    sf.write(tmp_path / "a.wav", as_int16(voice_like(seconds=2.0, rate=44100, seed=7)), 44100)
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(tmp_path / "a.wav"),
                    str(tmp_path / "a.mp3")], check=True)
    stream = AudioStream(tmp_path / "a.mp3", block_seconds=0.25)
    np.testing.assert_array_equal(np.concatenate(list(stream.blocks())), read_audio(tmp_path / "a.mp3").samples)


def test_streamed_embedding_of_many_blocks_and_chunks_equals_one_pass(tmp_path, monkeypatch):
    model = tiny_model()
    samples = as_int16(voice_like(seconds=31.0, seed=3))            # 3,099 frames
    sf.write(tmp_path / "long.wav", samples, 16000)
    stereo44 = voice_like(seconds=20.0, rate=44100, channels=2, seed=4).astype(np.float32)
    sf.write(tmp_path / "long44.wav", stereo44, 44100, subtype="FLOAT")
    resampled = resample_poly(stereo44.astype(np.float64).mean(axis=1), 160, 441) * 32768.0
    trunk_inputs, sample_blocks = [], []
    frame_maps, blocks = model.frame_maps, AudioStream.blocks
    monkeypatch.setattr(model, "frame_maps", lambda x: trunk_inputs.append(x.shape[-1]) or frame_maps(x))
    monkeypatch.setattr(AudioStream, "blocks", lambda self: (sample_blocks.append(len(b)) or b for b in blocks(self)))
    for name, reference in (("long.wav", samples), ("long44.wav", resampled)):
        expected = one_pass(model, reference)
        trunk_inputs.clear(), sample_blocks.clear()
        item = embed_recording(model, tmp_path / name, "cpu", chunk_frames=800, block_seconds=2.3)
        np.testing.assert_allclose(item.embedding, expected, rtol=0, atol=1e-4)
        n_frames = -(-(len(reference) - 400) // 160) + 1
        assert len(trunk_inputs) == len(chunk_plan(model, n_frames, 800)) >= 3
        assert max(trunk_inputs) <= 800 + 2 * 120 < n_frames     # a chunk and its margins, never the whole
        assert len(sample_blocks) >= 2 * 8 and max(sample_blocks) <= 2.3 * 16000 + 1   # two passes of blocks
    # the API streams arrays and files alike
    encoder = SpeakerEncoder(model, "cpu")
    encoder.chunk_frames, encoder.block_seconds = 800, 2.3
    np.testing.assert_allclose(encoder.embed(samples, sample_rate=16000), one_pass(model, samples), rtol=0, atol=1e-4)


def test_first_pass_holds_a_block_not_the_recording(tmp_path):
    """Pass 1 over a 3-min file in 2 s blocks allocates a small part of what reading it whole does
    (the float64 waveform alone: 23 MB)."""
    sf.write(tmp_path / "three_min.wav", as_int16(voice_like(seconds=180.0, seed=8)), 16000)
    stream = AudioStream(tmp_path / "three_min.wav", block_seconds=2.0)
    peaks = []
    for work in (lambda: scan(stream, keep_frames=1000),
                 lambda: log_mel_fbank_blocks(read_audio(tmp_path / "three_min.wav").samples)):
        tracemalloc.start()
        try:
            result = work()
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
        del result
    waveform = 180 * 16000 * 8
    assert peaks[1] > waveform and peaks[0] < 0.25 * waveform, [f"{p / 2 ** 20:.1f} MB" for p in peaks]
    assert stream.n_samples == 180 * 16000


def test_short_recordings_keep_the_bit_identical_one_pass_features(tmp_path):
    samples = as_int16(voice_like(seconds=4.0, seed=9))
    scanned = scan(ArrayStream(samples.astype(np.float64), block_seconds=0.7), keep_frames=1000)
    np.testing.assert_array_equal(scanned.features, log_mel_fbank_int16(samples))


def test_a_recording_that_changes_between_passes_is_refused():
    class Shrinking(ArrayStream):
        passes = 0

        def raw_blocks(self):
            self.passes += 1
            yield self.samples if self.passes == 1 else self.samples[:-1600]
    stream = Shrinking(as_int16(voice_like(seconds=12.0, seed=10)).astype(np.float64), "shrinking.wav")
    with pytest.raises(UserInputError, match=r"shrinking.wav: changed while being read \(1199 frames .* 1189"):
        embed_recording(tiny_model(), stream, "cpu", chunk_frames=400)


@pytest.fixture
def truncated_flac(tmp_path):
    """A FLAC whose header is whole but whose data stops part of the way (a cut download)."""
    sf.write(tmp_path / "whole.flac", as_int16(voice_like(seconds=20.0, seed=11)), 16000)
    data = (tmp_path / "whole.flac").read_bytes()
    (tmp_path / "rec").mkdir()
    (tmp_path / "rec" / "cut.flac").write_bytes(data[:len(data) * 2 // 3])
    sf.write(tmp_path / "rec" / "good.wav", as_int16(voice_like(seconds=1.0, seed=12)), 16000)
    return tmp_path / "rec" / "cut.flac"


def test_audio_that_breaks_mid_stream_is_one_error_naming_the_file(tmp_path, truncated_flac, capsys):
    stream = AudioStream(truncated_flac, block_seconds=2.0)     # the header reads fine
    with pytest.raises(UserInputError, match=rf"^{truncated_flac}: cannot read audio after 1[0-4]\.0 s \("):
        list(stream.blocks())
    checkpoint = tmp_path / "cp.pth"
    tiny_checkpoint(checkpoint)
    out = tmp_path / "emb"
    result = run_in_process(embed_cmd.main, capsys, "--checkpoint", checkpoint, "--out", out,
                            "--block_seconds", 2, truncated_flac.parent)
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(error_lines) == 1
    assert f"1 of 2 files could not be embedded: {truncated_flac} ({truncated_flac}: cannot read audio after" \
        in error_lines[0]
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == ["good.npy", "index.tsv", "model.json"]   # nothing half written for the cut file
    encoder = SpeakerEncoder.from_checkpoint(checkpoint, device="cpu")
    with pytest.raises(UserInputError, match=rf"^{truncated_flac}: cannot read audio"):
        encoder.embed(truncated_flac)
    good = truncated_flac.parent / "good.wav"
    (tmp_path / "trials.txt").write_text(f"{good.name} {truncated_flac.name}\n")   # unlabelled: no metrics needed
    for main, args in ((verify_cmd.main, ["--threshold", 0.5, good, truncated_flac]),
                       (score_cmd.main, ["--trials", tmp_path / "trials.txt", "--audio_root", good.parent,
                                         "--out_dir", tmp_path / "scores"])):
        result = run_in_process(main, capsys, "--checkpoint", checkpoint, *args)
        error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert result.returncode == 2 and len(error_lines) == 1 and f"{truncated_flac}: cannot read audio" \
            in error_lines[0] and "Traceback" not in result.stderr, result.stderr
    assert not (tmp_path / "scores").exists()


def test_embed_command_streams_long_files_with_small_blocks(tmp_path, capsys, monkeypatch):
    """embed.py --chunk_seconds / --block_seconds reach the streamed path and give the one-pass embedding."""
    folder = tmp_path / "rec"
    folder.mkdir()
    samples = as_int16(voice_like(seconds=14.0, seed=13))
    sf.write(folder / "long.wav", samples, 16000)
    checkpoint = tmp_path / "cp.pth"
    model = tiny_checkpoint(checkpoint)
    seen, embed_frame_blocks = [], recordings.embed_frame_blocks
    monkeypatch.setattr(recordings, "embed_frame_blocks",
                        lambda *args: seen.append((args[2], args[4])) or embed_frame_blocks(*args))
    result = run_in_process(embed_cmd.main, capsys, "--checkpoint", checkpoint, "--out", tmp_path / "emb",
                            "--chunk_seconds", 4, "--block_seconds", 1.5, folder)
    assert result.returncode == 0, result.stderr
    assert seen == [(1399, 400)]            # streamed: 1,399 frames in chunks of 400
    np.testing.assert_allclose(np.load(tmp_path / "emb" / "long.npy"), one_pass(model, samples), rtol=0, atol=1e-4)


def test_ecapa_gets_streamed_audio_and_one_forward_over_all_frames(tmp_path):
    """ECAPA-TDNN looks at the whole recording inside the network: no chunks, but the same embedding."""
    from model.ecapa_tdnn import EcapaEncoder
    torch.manual_seed(0)
    model = EcapaEncoder(num_classes=3, channels=16).eval()
    samples = as_int16(voice_like(seconds=9.0, seed=14))
    sf.write(tmp_path / "e.wav", samples, 16000)
    item = embed_recording(model, tmp_path / "e.wav", "cpu", chunk_frames=300, block_seconds=1.1)
    np.testing.assert_allclose(item.embedding, one_pass(model, samples), rtol=0, atol=1e-4)
