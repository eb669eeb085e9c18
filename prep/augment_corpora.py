"""The augmentation corpora MUSAN (noise, music, speech; OpenSLR 17) and RIRS_NOISES (simulated and
real room impulse responses; OpenSLR 28): download, unpack, and MUSAN cut into 5 s segments.
Library code behind ``dataprep.py --download_augment / --extract_augment / --split_musan``.

The download is VoxCeleb's (prep/download.py): resumed with HTTP Range, MD5-checked against
``lists/augment.txt`` (``URL md5`` rows), a mismatching file moved aside, free space checked first;
no credentials. Unpacking writes every file atomically and skips files already there with the right
size, so an interrupted run simply runs again; members that would land outside ``save_path`` are
refused and links are not created. Layout under ``save_path``::

    musan/{noise,music,speech}/<source>/<name>.wav            as in musan.tar.gz
    musan_split/{noise,music,speech}/<source>/<name>/<SSSSS>.wav   --split_musan: 5 s every 3 s
    RIRS_NOISES/simulated_rirs/{smallroom,mediumroom,largeroom}/RoomNNN/RoomNNN-NNNNN.wav
"""
import gzip
import os
import shutil
import tarfile
import zlib
from multiprocessing import Pool
from pathlib import Path

import soundfile as sf
from tqdm import tqdm

from common.errors import UserInputError
from common.files import atomic_path
from prep import download

TOP_FOLDERS = {"musan.tar.gz": "musan", "rirs_noises.zip": "RIRS_NOISES"}   # what each archive holds
TAR_EXPANSION = 1.15      # wav barely compresses: MUSAN unpacks to ~12.5 GB from 11 GB; estimated 1.15x
SEGMENT_SECONDS, HOP_SECONDS = 5, 3     # voxceleb_trainer's musan_split: 5 s windows every 3 s
SPLIT_FOLDER = "musan_split"


def read_augment_list(path) -> list:
    """``lists/augment.txt``: (URL, md5) rows."""
    entries = download.read_list(path, 2)
    for url, _ in entries:
        if not url.startswith(("http://", "https://")):
            raise UserInputError(f"{path}: expected 'URL md5' rows, got {url!r} (an http:// or https:// URL)")
    return entries


def download_augment(entries: list, save_path) -> dict:
    """Download every archive of ``entries`` into ``save_path``; counts of downloaded and skipped."""
    return download.download_all("", entries, save_path, download.Credentials())


def extract_augment(entries: list, save_path) -> dict:
    """Unpack each downloaded archive (zip or tar[.gz]) into ``save_path``; archive -> files written."""
    save_path, written = Path(save_path), {}
    for name, _ in entries:
        archive = save_path / download.part_file_name(name)
        if not archive.is_file():
            raise UserInputError(f"{archive}: archive not found; run with --download_augment first")
        if archive.name.endswith(".zip"):
            written[archive.name] = download.extract_archive(archive, save_path, download.tree_destination)
        elif archive.name.endswith((".tar.gz", ".tgz", ".tar")):
            written[archive.name] = extract_tar(archive, save_path)
        else:
            raise UserInputError(f"{archive}: cannot unpack (expected .zip, .tar.gz, .tgz or .tar)")
    return written


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else 0


def extract_tar(archive, target) -> int:
    """Stream a tar[.gz] into ``target``, regular files only, each atomically; returns files written.
    Free space is checked against an estimate (the unpacked size is unknown until the end)."""
    archive, target = Path(archive), Path(target)
    done = folder_bytes(target / TOP_FOLDERS[archive.name]) if archive.name in TOP_FOLDERS else 0
    download.check_free_space(target, max(0, int(archive.stat().st_size * TAR_EXPANSION) - done),
                              f"extracting {archive.name} (estimated)")
    written = 0
    with open(archive, "rb") as raw, tqdm(total=archive.stat().st_size, unit="B", unit_scale=True,
                                          desc=f"extract {archive.name}") as bar:
        try:
            with tarfile.open(fileobj=raw, mode="r:*") as tar:
                for member in tar:
                    written += extract_member(tar, member, target, archive)
                    bar.update(raw.tell() - bar.n)
        except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as error:
            raise UserInputError(f"{archive}: not a readable tar archive or damaged ({error}); delete it "
                                 "and run --download_augment again") from None
    return written


def extract_member(tar, member, target: Path, archive: Path) -> int:
    """Write one regular file of ``tar`` below ``target`` unless it is already there whole; 1 if written."""
    destination = download.tree_destination(member.name, target, archive)
    if destination is None or not member.isfile():
        return 0                                   # folders are made on demand; links are not followed
    if destination.is_file() and destination.stat().st_size == member.size:
        return 0
    with tar.extractfile(member) as source, atomic_path(destination) as tmp, \
            open(tmp, "wb") as out:
        shutil.copyfileobj(source, out, download.CHUNK)
    return 1


# ------------------------------------------------------------------------------------ musan split
def segment_starts(n_frames: int, rate: int) -> list:
    """Start frames of the 5 s segments taken every 3 s; a recording shorter than 5 s is one segment
    (voxceleb_trainer drops those; they are few and still useful as noise)."""
    length, hop = SEGMENT_SECONDS * rate, HOP_SECONDS * rate
    return [0] if n_frames <= length else list(range(0, n_frames - length + 1, hop))


def split_file(pair) -> int:
    """(recording, its segment folder) -> segments written; segments already there are kept."""
    source, folder = pair
    info = sf.info(str(source))
    todo = [(start, folder / f"{start // info.samplerate:05d}.wav")
            for start in segment_starts(info.frames, info.samplerate)]
    todo = [(start, path) for start, path in todo if not path.is_file()]
    if todo:
        audio, rate = sf.read(str(source), dtype="int16", always_2d=True)
        for start, path in todo:
            with atomic_path(path) as tmp:
                sf.write(str(tmp), audio[start:start + SEGMENT_SECONDS * rate], rate,
                         subtype="PCM_16", format="WAV")
    return len(todo)


def split_musan(save_path, workers=None) -> dict:
    """``musan/<category>/<source>/<name>.wav`` -> ``musan_split/<category>/<source>/<name>/<start s>.wav``."""
    source_root, split_root = Path(save_path) / "musan", Path(save_path) / SPLIT_FOLDER
    if not source_root.is_dir():
        raise UserInputError(f"{source_root}: no such folder; run with --extract_augment first")
    recordings = sorted(source_root.rglob("*.wav"))
    if not recordings:
        raise UserInputError(f"{source_root}: no .wav files; run with --extract_augment first")
    pairs = [(wav, (split_root / wav.relative_to(source_root)).with_suffix("")) for wav in recordings]
    todo = [pair for pair in pairs if not pair[1].is_dir()]
    overlap = SEGMENT_SECONDS / HOP_SECONDS
    download.check_free_space(split_root, int(overlap * sum(wav.stat().st_size for wav, _ in todo)),
                              "splitting MUSAN (estimated)")
    bar = dict(total=len(pairs), desc="split MUSAN", unit="file")
    try:
        with Pool(workers or os.cpu_count() or 1) as pool:
            written = sum(tqdm(pool.imap_unordered(split_file, pairs, chunksize=8), **bar))
    except (RuntimeError, sf.LibsndfileError) as error:
        raise UserInputError(f"splitting MUSAN failed: {error}") from None
    return {"recordings": len(pairs), "segments_written": written, "split_root": split_root}
