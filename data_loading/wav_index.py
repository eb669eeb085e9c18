"""The wav index: the sample count of the recording behind every feature file, for ``--input wav``.

Training from waveforms cuts each crop from the recording its feature file was extracted from: the
same relative path ``<speaker>/<session>/<utt>`` under the wav root, with ``.wav``, ``.flac`` or
``.ogg``. Crops need no sample count (a read past the end returns the samples there are), but two
things do: the check, before any training, that every feature utterance has its recording and that
the recording gives exactly the stored number of frames (the wrong ``--wav_dir`` is caught here,
not as silently mismatched training data), and speed perturbation, whose utterances have
``ceil(n_samples * up / down)`` samples. ``n_samples`` cannot be derived from the stored frame count:
python_speech_features makes ``1 + ceil((n - 400) / 160)`` frames, so 160 sample counts give the
same frames.

Reading a million audio headers at every start-up would take minutes, so the counts are kept in
``<feature root>/wav_index.npz`` beside the corpus index (the feature root is where the project
already writes its index; a wav root is often a read-only dataset mount), one row per corpus
utterance in corpus order:

    n_samples  int64  samples of the recording (16 kHz)
    suffix     uint8  row of ``feat_extract.audio_formats.SOUNDFILE_SUFFIXES`` ('.wav', '.flac', '.ogg')

plus ``wav_dir`` (the absolute wav root it describes), ``wav_fingerprint`` (the wav root's speaker
folders and their modification times, as the corpus index fingerprints its store) and
``corpus_digest`` (``FeatureCorpus.digest()``: which feature files, in which order). When any of the
three differs, the index is rebuilt (headers read in parallel, with a progress bar); ``--reindex``
rebuilds it too. Like the corpus index it is an uncompressed ``.npz`` read without pickle.
"""
import contextlib
import multiprocessing
import os
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from common.cached_index import load_or_build
from common.errors import UserInputError
from common.files import atomic_path
from feat_extract.corpus_index import store_fingerprint
from feat_extract.audio_formats import SOUNDFILE_SUFFIXES
from feat_extract.fbank import SAMPLE_RATE
from feat_extract.torch_fbank import frame_geometry

WAV_INDEX_NAME = "wav_index.npz"
VERSION = 1
CHUNK = 1024
SERIAL_BELOW = 4096


@dataclass
class WavIndex:
    wav_dir: str
    wav_fingerprint: str
    corpus_digest: str
    n_samples: np.ndarray
    suffix: np.ndarray

    def path(self, relpath_stem: str, row: int) -> str:
        return os.path.join(self.wav_dir, relpath_stem + SOUNDFILE_SUFFIXES[int(self.suffix[row])])


def frames_of(n_samples) -> np.ndarray:
    """python_speech_features' frame count for each sample count (vectorised ``n_frames``)."""
    length, step = frame_geometry()
    n_samples = np.asarray(n_samples, dtype=np.int64)
    return np.where(n_samples <= length, 1, 1 + -(-(n_samples - length) // step))


# ---------------------------------------------------------------- reading headers
def audio_header(stem: str) -> tuple:
    """(suffix code, samples, rate, or an error string) of the first existing ``stem + suffix``."""
    for code, suffix in enumerate(SOUNDFILE_SUFFIXES):
        path = stem + suffix
        if os.path.isfile(path):
            try:
                info = sf.info(path)
            except Exception as error:  # soundfile raises its own types for unreadable files
                return code, -1, 0, f"{path}: cannot read audio ({str(error).strip().splitlines()[0]})"
            return code, int(info.frames), int(info.samplerate), ""
    return -1, -1, 0, ""


def audio_headers(stems: list) -> list:
    return [audio_header(stem) for stem in stems]


def read_headers(stems: list, workers: int) -> list:
    """``audio_header`` of every stem, over ``workers`` forked processes when there are many."""
    chunks = [stems[start:start + CHUNK] for start in range(0, len(stems), CHUNK)]
    serial = workers <= 1 or len(stems) < SERIAL_BELOW or "fork" not in multiprocessing.get_all_start_methods()
    headers = []
    with contextlib.ExitStack() as stack:
        if serial:
            results = map(audio_headers, chunks)
        else:
            results = stack.enter_context(multiprocessing.get_context("fork").Pool(workers)).imap(audio_headers, chunks)
        with tqdm(total=len(stems), desc="indexing audio", unit="file", disable=len(stems) < SERIAL_BELOW) as bar:
            for chunk in results:
                headers += chunk
                bar.update(len(chunk))
    return headers


def check_headers(corpus, wav_dir: str, headers: list) -> None:
    """Every feature utterance has 16 kHz audio giving exactly its stored frames; else one error."""
    stems = corpus_stems(corpus)
    missing = [stem for stem, (code, *_rest) in zip(stems, headers) if code < 0]
    if missing:
        raise UserInputError(
            f"{len(missing)} of {len(stems)} training utterances have no audio under {wav_dir} "
            f"(looked for <speaker>/<session>/<utt>{'|'.join(SOUNDFILE_SUFFIXES)}), e.g. {missing[0]}; "
            "--input wav needs the recordings the features were extracted from (--wav_dir)")
    for row, (code, n_samples, rate, problem) in enumerate(headers):
        where = os.path.join(wav_dir, stems[row] + SOUNDFILE_SUFFIXES[code])
        if problem:
            raise UserInputError(problem)
        if rate != SAMPLE_RATE:
            raise UserInputError(f"{where}: {rate} Hz audio; --input wav needs the 16 kHz recordings "
                                 "(dataprep.py --convert writes them)")
        stored = int(corpus.n_frames[row])
        if frames_of(n_samples) != stored:
            raise UserInputError(
                f"{where}: {n_samples} samples make {int(frames_of(n_samples))} frames, but its features "
                f"{corpus.path_str(row)} have {stored}: is --wav_dir the audio these features were "
                "extracted from?")


def corpus_stems(corpus) -> list:
    """``speaker/session/utt`` of every corpus utterance (its feature path without ``.npy``)."""
    return corpus.keys()


# ---------------------------------------------------------------- the index file
def write_wav_index(path, index: WavIndex) -> None:
    with atomic_path(path, ".npz") as tmp:
        np.savez(tmp, version=np.int64(VERSION), wav_dir=np.bytes_(os.fsencode(index.wav_dir)),
                 wav_fingerprint=np.bytes_(index.wav_fingerprint), corpus_digest=np.bytes_(index.corpus_digest),
                 n_samples=index.n_samples, suffix=index.suffix)


def read_wav_index(path):
    """The stored index, or None when there is none or it cannot be used (it is then rebuilt)."""
    try:
        with np.load(path, allow_pickle=False) as stored:
            if int(stored["version"]) != VERSION:
                return None
            return WavIndex(os.fsdecode(stored["wav_dir"].item()), stored["wav_fingerprint"].item().decode(),
                            stored["corpus_digest"].item().decode(), stored["n_samples"].astype(np.int64),
                            stored["suffix"].astype(np.uint8))
    except (OSError, ValueError, KeyError, EOFError, UnicodeDecodeError, zipfile.BadZipFile):
        return None


def fresh(index, wav_dir: str, fingerprint: str, digest: str, n_rows: int) -> bool:
    return (index is not None and index.wav_dir == wav_dir and index.wav_fingerprint == fingerprint
            and index.corpus_digest == digest and len(index.n_samples) == n_rows
            and len(index.suffix) == n_rows and int(index.suffix.max(initial=0)) < len(SOUNDFILE_SUFFIXES))


def build_wav_index(corpus, wav_dir: str, fingerprint: str, digest: str, workers: int = None) -> WavIndex:
    stems = [os.path.join(wav_dir, stem) for stem in corpus_stems(corpus)]
    if len(stems) >= SERIAL_BELOW:
        print(f"note: {wav_dir}: reading the headers of {len(stems):,} recordings for {WAV_INDEX_NAME} "
              "(once; later runs start from it)", file=sys.stderr, flush=True)
    headers = read_headers(stems, workers or os.cpu_count() or 1)
    check_headers(corpus, wav_dir, headers)
    return WavIndex(wav_dir, fingerprint, digest, np.array([h[1] for h in headers], dtype=np.int64),
                    np.array([h[0] for h in headers], dtype=np.uint8))


def save_wav_index(path, index: WavIndex) -> WavIndex:
    try:
        write_wav_index(path, index)
    except OSError as error:
        print(f"warning: could not save {path} ({error}); using the wav index in memory", file=sys.stderr)
    return index


def load_wav_index(corpus, wav_dir, reindex: bool = False, builder: bool = True) -> WavIndex:
    """The wav index of ``corpus`` (a FeatureCorpus of one root) under ``wav_dir``, built and saved
    when missing or stale; a process that is not the ``builder`` (torchrun ranks > 0) waits for it."""
    wav_dir = str(Path(wav_dir).resolve())
    if not Path(wav_dir).is_dir():
        raise UserInputError(f"--wav_dir {wav_dir}: no such folder (--input wav reads the training "
                             "recordings from it)")
    path = Path(corpus.roots[0]) / WAV_INDEX_NAME
    fingerprint, digest = store_fingerprint(wav_dir), corpus.digest()

    def read_fresh() -> tuple:
        index = read_wav_index(path)
        if fresh(index, wav_dir, fingerprint, digest, len(corpus)):
            return index, None
        return None, f"{WAV_INDEX_NAME} missing or stale"

    def build(reason: str) -> WavIndex:
        return save_wav_index(path, build_wav_index(corpus, wav_dir, fingerprint, digest))

    return load_or_build(read_fresh, build, corpus.roots[0], path, reindex=reindex, builder=builder)
