"""--input wav: crops cut from recordings equal the stored-feature crops; speed perturbation; the
augmentations (SNR, babble count, RIR alignment and energy, simulated rooms); purity of the draws;
the wav index and its errors."""
import numpy as np
import pytest
import soundfile as sf
import torch
from scipy.signal import resample_poly

from common.errors import UserInputError
from data_loading import augment
from data_loading.corpus import FeatureCorpus
from data_loading.episodes import EpisodeConfig, EpisodeDataset, crops_tensor
from data_loading.wav_index import WAV_INDEX_NAME, load_wav_index
from data_loading.waveforms import AUGMENT_STREAM, WaveCorpus
from feat_extract.fbank import INT16_SCALE, log_mel_fbank

# samples per recording: one frame exactly, a zero-padded last frame, shorter than a 200-frame crop
# (tiled), exactly 200 frames, and longer ones whose last frame is padded
LENGTHS = (400, 567, 16123, 32240, 40007, 48000, 23456, 36001)


def speech_like(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    signal = rng.standard_normal(n) * 2000 * (1.2 + np.sin(t / 700)) + 3000 * np.sin(t * 0.03 * (seed + 1))
    return signal.clip(-32768, 32767).astype(np.int16)


def write_wav(path, samples, rate=16000):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, samples, rate, subtype="PCM_16")


@pytest.fixture(scope="module")
def corpus_root(tmp_path_factory):
    """4 speakers x 2 recordings (wav/) and their features (feat/), as feature extraction writes them."""
    root = tmp_path_factory.mktemp("wavcorpus")
    for number, n in enumerate(LENGTHS):
        relative = f"id{number % 4:05d}/session{number % 2}/{number:05d}"
        samples = speech_like(n, number)
        write_wav(root / "wav" / f"{relative}.wav", samples)
        (root / "feat" / relative).parent.mkdir(parents=True, exist_ok=True)
        np.save(root / "feat" / f"{relative}.npy", log_mel_fbank(samples))
    return root


@pytest.fixture(scope="module")
def corpora(corpus_root):
    features = FeatureCorpus(corpus_root / "feat")
    return features, WaveCorpus(features, load_wav_index(features, corpus_root / "wav"))


def test_wav_crops_equal_feature_crops_at_both_ends_and_tiled(corpora):
    features, waves = corpora
    assert np.array_equal(waves.n_frames, features.n_frames)
    checked = set()
    for length in (200, 137, 1):
        for row in range(len(features)):
            total = int(features.n_frames[row])
            # first, last and a middle start; a start past the end (read_crop restarts at 0 and tiles)
            for start in sorted({0, max(total - length, 0), max(total - length, 0) // 2, total - 1}):
                expected = crops_tensor(features, np.array([row]), np.array([start]), length)
                got = waves.crops(np.array([row]), np.array([start]), length, np.array([0]), (0, 1, 0))
                assert got.shape == expected.shape == (1, 1, 40, length)
                assert (got - expected).abs().max().item() < 1e-4, (length, row, start)
                checked.add("tiled" if total < length else "end" if start + length == total else "inside")
    assert checked == {"tiled", "end", "inside"}


def test_wav_episodes_equal_feature_episodes(corpora):
    features, waves = corpora
    config = EpisodeConfig(n_way=3, n_shot=1, n_query=1, variable_query=True)
    from_features, from_waves = EpisodeDataset(features, config, 4, 5), EpisodeDataset(waves, config, 4, 5)
    for epoch in (1, 2):
        from_features.set_epoch(epoch)
        from_waves.set_epoch(epoch)
        for index in range(4):
            a, b = from_features[index], from_waves[index]
            assert torch.equal(a["label_g"], b["label_g"])
            for part in ("support", "query"):
                assert a[part].shape == b[part].shape
                assert (a[part] - b[part]).abs().max().item() < 1e-4


def test_speed_perturbed_stretches_equal_the_whole_recording_resampled(corpus_root, corpora):
    features, _ = corpora
    waves = WaveCorpus(features, load_wav_index(features, corpus_root / "wav"), speed_perturb=True)
    n = len(features)
    assert len(waves) == 3 * n and waves.n_speakers == 3 * features.n_speakers
    assert waves.speakers[features.n_speakers] == f"{features.speakers[0]}@speed0.9"
    assert np.array_equal(waves.labels, np.concatenate([features.labels + k * features.n_speakers for k in range(3)]))
    assert [len(waves.by_speaker[label]) for label in range(waves.n_speakers)] == \
        [len(utts) for utts in features.by_speaker] * 3
    for row in range(n, 3 * n):
        base = int(waves.base[row])
        up, down = (10, 9) if row < 2 * n else (10, 11)
        whole = resample_poly(sf.read(waves.wav_path(base), dtype="float64")[0] * INT16_SCALE, up, down)
        assert waves.n_samples[row] == len(whole)
        assert waves.n_frames[row] == len(log_mel_fbank(whole / INT16_SCALE))
        size = len(whole)
        for first, stop in ((0, 700), (size // 3, size // 3 + 5000), (max(size - 900, 0), size + 400)):
            stretch = waves.read_samples(row, first, stop)
            assert len(stretch) == len(whole[first:stop])
            assert np.abs(stretch - whole[first:stop]).max() < 1e-6 * INT16_SCALE


@pytest.fixture
def noise_dir(tmp_path):
    """MUSAN layout: noise/ and music/ with one recording each, speech/ with 8 pure tones (babble)."""
    folder = tmp_path / "musan"
    write_wav(folder / "noise" / "free-sound" / "noise-0000.wav", speech_like(12000, 40))
    write_wav(folder / "music" / "jamendo" / "music-0000.wav", speech_like(50000, 41))
    t = np.arange(20000)
    for k in range(8):   # tone k at 250 * (k + 1) Hz: FFT bin 250 * (k + 1) of a 16000-sample stretch
        write_wav(folder / "speech" / "librivox" / f"speech-{k:04d}.wav",
                  (8000 * np.sin(2 * np.pi * 250 * (k + 1) * t / 16000)).astype(np.int16))
    return folder


def test_noise_is_added_at_the_drawn_snr(tmp_path):
    """SNR as voxceleb_trainer and WeSpeaker define it: 10 log10 of the powers (each + 1e-4 on the
    [-1, 1] scale) of the crop and of the noise before scaling, minus the gain. A square wave of
    amplitude 12000 has the same power in every stretch, so the gain can be read off the mixture."""
    square = np.where(np.arange(30000) % 50 < 25, 12000, -12000).astype(np.int16)
    write_wav(tmp_path / "musan" / "noise" / "x" / "square.wav", square)
    files = augment.NoiseFiles(augment.list_audio(tmp_path / "musan" / "noise"))
    crop = speech_like(16000, 3).astype(np.float64)
    for snr in (0.0, 5.0, 12.5):
        kind = augment.NoiseKind("noise", (snr, snr), (1, 1))
        noise = augment.add_noise(crop, files, kind, np.random.default_rng(0)) - crop
        gain_db = 10 * np.log10(np.mean(noise ** 2) / 12000 ** 2)
        assert abs(augment.power_db(crop) - augment.power_db(square.astype(float)) - gain_db - snr) < 1e-9
        plain = 10 * np.log10(np.mean(crop ** 2) / np.mean(noise ** 2))
        assert abs(plain - snr) < 0.05            # the floors hardly matter at speech levels
    assert augment.NOISE_KINDS["noise"].snr_db == (0.0, 15.0) and augment.NOISE_KINDS["music"].snr_db == (5.0, 15.0)
    assert augment.NOISE_KINDS["babble"] == augment.NoiseKind("speech", (13.0, 20.0), (3, 7))


def test_babble_mixes_three_to_seven_talkers(noise_dir):
    files = augment.NoiseFiles(augment.list_audio(noise_dir / "speech"))
    crop = np.zeros(16000)
    counts = set()
    for seed in range(30):
        babble = augment.add_noise(crop, files, augment.NOISE_KINDS["babble"], np.random.default_rng(seed))
        spectrum = np.abs(np.fft.rfft(babble))
        tones = [k for k in range(8) if spectrum[250 * (k + 1)] > 0.05 * spectrum.max()]
        counts.add(len(tones))
    assert counts <= {3, 4, 5, 6, 7} and len(counts) >= 3


def test_room_responses_are_aligned_on_the_direct_path_and_unit_energy(tmp_path):
    write_wav(tmp_path / "rirs" / "smallroom" / "Room001" / "Room001-00001.wav",
              np.array([0, 0, 0, 20000, 0, 10000, 0], dtype=np.int16))
    rirs = augment.RirFolder(augment.list_audio(tmp_path / "rirs"))
    rir = rirs[0]
    assert np.allclose(rir, np.array([2, 0, 1, 0]) / np.sqrt(5))
    crop = np.arange(1.0, 11.0)
    expected = (crop + np.concatenate([[0, 0], crop[:-2]]) / 2) * 2 / np.sqrt(5)
    assert np.allclose(augment.reverberate(crop, rir), expected)


def test_simulated_rooms_are_a_pure_function_of_seed_and_number():
    rooms, again, other = augment.SimulatedRirs(3), augment.SimulatedRirs(3), augment.SimulatedRirs(4)
    augment.SimulatedRirs.__getitem__.cache_clear()
    first = rooms[5]
    augment.SimulatedRirs.__getitem__.cache_clear()
    assert np.array_equal(again[5], first)
    assert np.argmax(np.abs(first)) == 0 and abs(np.sum(first ** 2) - 1) < 1e-9
    assert len(first) > 1000                       # a reverberant tail of at least 60 ms
    assert not np.array_equal(other[5], first)


def test_augmented_crops_are_a_pure_function_of_seed_epoch_episode_and_position(corpus_root, corpora, noise_dir):
    features, _ = corpora
    augmenter = augment.Augmenter(noise_dir, None, seed=0, quiet=True)
    assert augmenter.kinds == ("none", "reverb", "noise", "music", "babble")
    waves = WaveCorpus(features, load_wav_index(features, corpus_root / "wav"), augmenter=augmenter)
    rows, starts = np.array([2, 3, 5]), np.array([10, 0, 40])
    first = waves.crops(rows, starts, 150, np.array([0, 1, 2]), (0, 1, 2))
    assert torch.equal(first, waves.crops(rows, starts, 150, np.array([0, 1, 2]), (0, 1, 2)))
    # a crop depends on its own position only: a rank that makes crops 1 and 2 alone gets the same
    assert torch.equal(first[1:], waves.crops(rows[1:], starts[1:], 150, np.array([1, 2]), (0, 1, 2)))
    for other_key in ((0, 2, 2), (0, 1, 3), (1, 1, 2)):
        assert not torch.equal(first, waves.crops(rows, starts, 150, np.array([0, 1, 2]), other_key))
    clean = crops_tensor(features, rows, starts, 150)
    kinds = [augmenter.kinds[int(np.random.default_rng([0, 1, 2, AUGMENT_STREAM, p]).integers(5))] for p in range(3)]
    for number, kind in enumerate(kinds):   # "none" leaves the crop as it is; anything else changes it
        changed = (first[number] - clean[number]).abs().max().item()
        assert (changed < 1e-4) == (kind == "none"), (kind, changed)


def test_wav_index_is_saved_reused_and_rebuilt_when_the_recordings_change(corpus_root, tmp_path):
    features = FeatureCorpus(corpus_root / "feat")
    index = load_wav_index(features, corpus_root / "wav")
    saved = corpus_root / "feat" / WAV_INDEX_NAME
    assert saved.is_file()
    assert index.n_samples.tolist() == [LENGTHS[int(key[-5:])] for key in features.keys()]
    stamp = saved.stat().st_mtime_ns
    load_wav_index(features, corpus_root / "wav")
    assert saved.stat().st_mtime_ns == stamp      # fresh: read, not rebuilt
    copy = tmp_path / "copy"
    import shutil
    shutil.copytree(corpus_root / "wav", copy)
    assert load_wav_index(features, copy).wav_dir == str(copy.resolve())   # another wav root: rebuilt


def test_wav_index_errors_name_the_problem(corpus_root, tmp_path):
    import shutil
    features = FeatureCorpus(corpus_root / "feat")
    broken = tmp_path / "wav"
    shutil.copytree(corpus_root / "wav", broken)
    (broken / "id00001/session1/00001.wav").unlink()
    with pytest.raises(UserInputError, match=r"1 of 8 training utterances have no audio under .*id00001/session1/00001"):
        load_wav_index(features, broken)
    shutil.rmtree(broken)
    shutil.copytree(corpus_root / "wav", broken)
    write_wav(broken / "id00001/session1/00001.wav", speech_like(567 + 160, 1))
    with pytest.raises(UserInputError, match=r"00001.wav: 727 samples make 4 frames, but its features .* have 3"):
        load_wav_index(features, broken)
    write_wav(broken / "id00001/session1/00001.wav", speech_like(567, 1), rate=8000)
    with pytest.raises(UserInputError, match=r"8000 Hz audio; --input wav needs the 16 kHz"):
        load_wav_index(features, broken)
    with pytest.raises(UserInputError, match=r"--wav_dir .*nowhere: no such folder"):
        load_wav_index(features, tmp_path / "nowhere")


def test_a_ranks_share_of_an_augmented_episode_is_the_same_crops(corpus_root, corpora, noise_dir):
    """torchrun: each rank makes only its classes' crops; with augmentation they equal the rows of the
    whole episode made in one process (each crop's draws depend on its position, not on the rank)."""
    from training.distributed import DistContext, ShardedEpisodeDataset, shard_rows
    features, _ = corpora
    augmenter = augment.Augmenter(noise_dir, None, seed=0, quiet=True)
    waves = WaveCorpus(features, load_wav_index(features, corpus_root / "wav"), augmenter=augmenter)
    config = EpisodeConfig(n_way=4, n_shot=1, n_query=1, variable_query=True)
    whole = EpisodeDataset(waves, config, 2, 9)[1]
    share = ShardedEpisodeDataset(waves, config, 2, 9, DistContext(1, 2, 1))[1]
    rows = shard_rows(4, 1, 2, 4)
    assert torch.equal(share["support"], whole["support"][rows])
    assert torch.equal(share["query"], whole["query"][rows])


def test_features_computed_on_the_device_equal_those_of_the_workers(corpus_root, corpora):
    """--wav_fbank device: the worker sends samples (and the tiled crops' features); ``to(device)``
    computes the rest there (here the CPU stands in for the GPU)."""
    features, waves = corpora
    on_device = WaveCorpus(features, load_wav_index(features, corpus_root / "wav"), fbank_on="device")
    rows = np.arange(len(features))                     # includes utterances shorter than 200 frames
    starts = np.zeros(len(rows), dtype=np.int64)
    for length in (200, 250):
        expected = waves.crops(rows, starts, length, rows, (0, 1, 0))
        sent = on_device.crops(rows, starts, length, rows, (0, 1, 0))
        assert sent.shape == expected.shape and 0 < len(sent.rows) < len(rows)
        got = sent.to(torch.device("cpu"), non_blocking=True, memory_format=torch.contiguous_format)
        assert torch.equal(got, expected)   # float32 carries int16 samples exactly: the same float64 sums
