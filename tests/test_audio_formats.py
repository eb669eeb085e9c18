"""feat_extract/audio_formats.py is the one list of audio suffixes: feature extraction, the wav index
(--input wav), augmentation folders and the embedding commands all find the same files."""
import numpy as np
import soundfile as sf

from data_loading.augment import list_audio
from data_loading.wav_index import audio_header
from evaluation.audio_inputs import audio_suffixes
from feat_extract.audio_formats import FFMPEG_SUFFIXES, SOUNDFILE_SUFFIXES
from feat_extract.feature_extraction import wav_tree_jobs


def test_every_reader_takes_the_same_suffixes(tmp_path):
    assert SOUNDFILE_SUFFIXES == (".wav", ".flac", ".ogg")   # rows of wav_index.npz: order is part of the format
    assert set(SOUNDFILE_SUFFIXES) <= audio_suffixes() <= set(SOUNDFILE_SUFFIXES) | FFMPEG_SUFFIXES
    folder = tmp_path / "wav" / "id0" / "s"
    folder.mkdir(parents=True)
    samples = np.zeros(1600)
    for suffix, subtype in ((".wav", "PCM_16"), (".flac", "PCM_16"), (".ogg", "VORBIS")):
        sf.write(folder / f"u{suffix}", samples, 16000, subtype=subtype)
    (folder / "notes.txt").write_text("not audio")
    names = sorted(path.rsplit("/", 1)[1] for path in list_audio(tmp_path / "wav"))
    assert names == ["u.flac", "u.ogg", "u.wav"]
    jobs = wav_tree_jobs(tmp_path / "wav", tmp_path / "feat")
    assert sorted(audio.rsplit("/", 1)[1] for audio, _ in jobs) == names
    # a recording's stem is looked up in SOUNDFILE_SUFFIXES order; the row is what the index stores
    code, n_samples, rate, problem = audio_header(str(folder / "u"))
    assert (SOUNDFILE_SUFFIXES[code], n_samples, rate, problem) == (".wav", 1600, 16000, "")
    (folder / "u.wav").unlink()
    assert SOUNDFILE_SUFFIXES[audio_header(str(folder / "u"))[0]] == ".flac"
