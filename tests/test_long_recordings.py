"""embed.py at scale: blockwise features and chunked embeddings equal the one-pass ones, batched
embeddings equal one-by-one, resume, and the matrix / Kaldi ark outputs read back exactly."""
import os
import warnings

import kaldiio
import numpy as np
import pytest
import soundfile as sf
import torch

import embed as embed_cmd
from evaluation.long_recordings import chunk_plan, embed_long
from feat_extract.fbank import log_mel_fbank, log_mel_fbank_int16
from feat_extract.long_audio import log_mel_fbank_blocks
from model.encoder import ChunkGeometry
from speaker_api import ConversionNote, SpeakerEncoder
from tests.test_api import as_int16, run_in_process, tiny_checkpoint, tiny_model, voice_like


def one_pass(model, features):
    x = torch.from_numpy(np.ascontiguousarray((features - features.mean(axis=0)).T))[None, None]
    with torch.no_grad():
        return model(x)[0].numpy()


@pytest.mark.parametrize("n_samples", [400, 401, 560, 16000 * 7 + 37])
def test_blockwise_features_equal_one_pass_bit_for_bit(n_samples):
    samples = np.round(np.random.default_rng(n_samples).standard_normal(n_samples) * 3000)
    np.testing.assert_array_equal(log_mel_fbank_blocks(samples, block_frames=97), log_mel_fbank_int16(samples))


def test_receptive_field_of_resnet34_by_hand():
    # stem 7x7: 3; layer1 6 convs: +6 -> 9; layer2: 8 convs at stride 2 after the first: +1 +7*2 -> 24;
    # layer3: +2 +11*4 -> 70; layer4: +4 +5*8 -> 114. Three stride-2 stages: 8.
    assert tiny_model(name="background_resnet").chunk_geometry() == ChunkGeometry(stride=8, radius=114)


def test_chunked_embedding_equals_one_pass_on_a_long_recording(monkeypatch, model_name):
    model = tiny_model(name=model_name)
    features = log_mel_fbank(as_int16(voice_like(seconds=31.0, seed=3)))  # 3,099 frames
    reference = one_pass(model, features)
    for chunk_frames in (800, 1000, 3096):
        np.testing.assert_allclose(embed_long(model, features, "cpu", chunk_frames), reference, rtol=0, atol=1e-4)
    geometry = model.chunk_geometry()
    if geometry is None:      # not chunkable exactly (model/encoder.py): one forward, equal above
        return
    margin = -(-geometry.radius // geometry.stride) * geometry.stride       # 120 for ResNet-34
    plan = chunk_plan(model, len(features), 800)
    assert len(plan) == 4 and plan[0][:2] == (0, 800 + margin) and plan[1][:2] == (800 - margin, 1600 + margin)
    assert sum(core for *_, core in plan) == -(-len(features) // geometry.stride)  # the cores tile the output
    # the overlap is what makes it exact: chunks without the receptive-field margin are far off
    monkeypatch.setattr(model, "chunk_geometry", lambda: ChunkGeometry(geometry.stride, 0))
    assert np.abs(embed_long(model, features, "cpu", 800) - reference).max() > 1e-2


@pytest.fixture
def recordings(tmp_path):
    folder = tmp_path / "rec"
    (folder / "alice").mkdir(parents=True)
    for index, seconds in enumerate([0.6, 1.3, 2.2, 0.9]):
        sf.write(folder / "alice" / f"s{index}.wav", as_int16(voice_like(seconds, seed=20 + index)), 16000)
    sf.write(folder / "long.wav", as_int16(voice_like(seconds=23.0, seed=30)), 16000)   # 4 chunks of 6 s
    return folder


def test_embed_batched_and_chunked_equal_one_by_one_then_resume(tmp_path, recordings, capsys, model_name):
    checkpoint = tmp_path / "cp.pth"
    tiny_checkpoint(checkpoint, name=model_name)
    encoder = SpeakerEncoder.from_checkpoint(checkpoint, device="cpu")
    out = tmp_path / "emb"
    args = ["--checkpoint", checkpoint, "--out", out, "--batch_size", 3, "--chunk_seconds", 6, recordings]
    result = run_in_process(embed_cmd.main, capsys, *args)
    assert result.returncode == 0, result.stderr
    sources = sorted(recordings.rglob("*.wav"))
    for source in sources:
        relative = source.relative_to(recordings).with_suffix(".npy")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConversionNote)
            alone = encoder.embed(source)          # one file, one forward over the whole recording
        np.testing.assert_allclose(np.load(out / relative), alone, rtol=0, atol=1e-4)
    stamps = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.rglob("*.npy")}
    (out / "long.npy").unlink()
    result = run_in_process(embed_cmd.main, capsys, *args, "--out_format", "ark")
    assert result.returncode == 0 and f"resuming: 4 of 5 embeddings already in {out}" in result.stderr
    assert all((p.stat().st_ino, p.stat().st_mtime_ns) == stamps[p] for p in stamps if p.name != "long.npy")
    assert len((out / "index.tsv").read_text().splitlines()) == 6


def test_matrix_and_kaldi_ark_round_trip(tmp_path, recordings, capsys):
    checkpoint = tmp_path / "cp.pth"
    tiny_checkpoint(checkpoint)
    for out_format in ("matrix", "ark"):
        out = tmp_path / out_format
        result = run_in_process(embed_cmd.main, capsys, "--checkpoint", checkpoint, "--out", out,
                                "--out_format", out_format, recordings)
        assert result.returncode == 0, result.stderr
    keys = (tmp_path / "matrix" / "keys.txt").read_text().split()
    assert keys == ["alice/s0", "alice/s1", "alice/s2", "alice/s3", "long"]
    matrix = np.load(tmp_path / "matrix" / "embeddings.npy")
    table = kaldiio.load_scp(str(tmp_path / "ark" / "embeddings.scp"))
    assert list(table) == keys
    for key, row in zip(keys, matrix):
        one = np.load(tmp_path / "matrix" / f"{key}.npy")
        np.testing.assert_array_equal(row, one)
        np.testing.assert_array_equal(table[key], one)          # float32, bit for bit
    ark = dict(kaldiio.load_ark(str(tmp_path / "ark" / "embeddings.ark")))
    assert list(ark) == keys and not [p for p in tmp_path.rglob(".*.tmp*")]
