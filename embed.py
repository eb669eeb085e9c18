"""Write a speaker embedding (.npy, 256 floats) for every recording in files, folders or a list.

    python embed.py --n_folder 0 --cp_num 100 --out embeddings my_recordings/
    python embed.py --checkpoint model.pth --out embeddings a.wav b.flac --list more_files.txt

Folders are searched recursively for .wav .flac .ogg (and .m4a .mp3 ... when ffmpeg is installed).
Outputs mirror the inputs: ``my_recordings/spk1/a.wav`` -> ``embeddings/spk1/a.npy`` (relative to
the folder given); a file given directly (or listed) keeps its relative path, or just its name when
it is absolute or outside the current folder. ``embeddings/index.tsv`` lists embedding, source and
duration in seconds. Unreadable files are reported and skipped; the command then exits with code 2
and lists them.
"""
import argparse
import shutil
import sys
from pathlib import Path, PurePosixPath

from tqdm import tqdm

import configure
from common.errors import UserInputError, run_main
from common.files import save_npy, write_text
from feat_extract.fbank import SAMPLE_RATE, log_mel_fbank
from common.preflight import check_room

SOUNDFILE_SUFFIXES = {".wav", ".flac", ".ogg"}
INDEX_NAME = "index.tsv"
EMBEDDING_BYTES = 4096  # 256 float32 + .npy header, on a 4 KB file-system block


def audio_suffixes() -> set:
    from feat_extract.audio import FFMPEG_SUFFIXES
    return SOUNDFILE_SUFFIXES | (FFMPEG_SUFFIXES if shutil.which("ffmpeg") else set())


def read_list(list_path) -> list:
    """Paths of a list file, one per line (CRLF, blank lines and '#' comments tolerated)."""
    try:
        lines = Path(list_path).read_text().splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise UserInputError(f"--list {list_path}: cannot read it ({error})") from None
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def output_key(path: Path) -> PurePosixPath:
    """Relative output name of a file given directly: its relative path, or its name if that escapes."""
    if not path.is_absolute() and ".." not in path.parts:
        return PurePosixPath(*path.parts)
    return PurePosixPath(path.name)


def collect_inputs(inputs, list_file=None) -> list:
    """[(source path, relative output key)] for files, folders (recursive) and a list file."""
    entries = [(Path(item), None) for item in inputs] + [(Path(item), "list") for item in
                                                          (read_list(list_file) if list_file else [])]
    suffixes, jobs = audio_suffixes(), []
    for path, origin in entries:
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
            if not found:
                raise UserInputError(f"{path}: no audio files ({', '.join(sorted(suffixes))}) in this folder")
            jobs += [(p, PurePosixPath(*p.relative_to(path).parts)) for p in found]
        elif path.exists():
            jobs.append((path, output_key(path)))
        else:
            where = f" (listed in {list_file})" if origin else ""
            raise UserInputError(f"{path}{where}: no such file or folder")
    if not jobs:
        raise UserInputError("nothing to embed: give audio files, folders, or --list FILE")
    return check_unique(jobs)


def check_unique(jobs) -> list:
    """Drop repeats of the same file; refuse two different files that map to one output name."""
    source_of, clashes = {}, []
    for source, key in jobs:
        if key not in source_of:
            source_of[key] = source
        elif source_of[key].resolve() != source.resolve():
            clashes.append(f"{source_of[key]} and {source} -> {key.with_suffix('.npy')}")
    if clashes:
        raise UserInputError(f"{len(clashes)} inputs would write the same embedding, e.g. "
                             f"{'; '.join(clashes[:3])}; embed them into different --out folders")
    return [(source, key) for key, source in source_of.items()]


def embed_all(encoder, jobs, out_dir: Path):
    """Embed every job; returns (index rows, failures). Bad files are skipped and reported."""
    from speaker_api import load_samples, short_recording_message
    rows, failures = [], []
    for source, key in tqdm(jobs, desc="embedding", unit="file", file=sys.stderr):
        try:
            samples, notes, _ = load_samples(source)
            embedding = encoder.embed_features(log_mel_fbank(samples))
        except UserInputError as error:
            failures.append(f"{source} ({error})")
            tqdm.write(f"skipped: {error}", file=sys.stderr)
            continue
        for note in notes:
            tqdm.write(f"note: {source}: {note}", file=sys.stderr)
        if short := short_recording_message(source, samples.size):
            tqdm.write(f"warning: {short}", file=sys.stderr)
        relative = key.with_suffix(".npy")
        save_npy(out_dir / relative, embedding)
        rows.append((str(relative), str(source), samples.size / SAMPLE_RATE))
    return rows, failures


def write_index(out_dir: Path, rows) -> Path:
    lines = ["embedding\tsource\tduration_s"] + [f"{emb}\t{src}\t{dur:.3f}" for emb, src, dur in rows]
    write_text(out_dir / INDEX_NAME, "\n".join(lines) + "\n")
    return out_dir / INDEX_NAME


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="*", help="audio files and/or folders (searched recursively)")
    parser.add_argument("--list", dest="list_file", default=None, help="text file with one audio path per line")
    parser.add_argument("--out", required=True, help="output folder for .npy embeddings and index.tsv")
    configure.add_checkpoint_arguments(parser)
    configure.add_common_arguments(parser)
    args = parser.parse_args(argv)
    configure.check_checkpoint_arguments(parser, args)
    if not args.inputs and not args.list_file:
        parser.error("give audio files/folders, or --list FILE")
    return configure.apply_common_arguments(args)


def main(argv=None):
    args = parse_args(argv)
    from speaker_api import SpeakerEncoder
    jobs = collect_inputs(args.inputs, args.list_file)
    encoder = SpeakerEncoder.from_checkpoint(args.checkpoint, args.n_folder, args.cp_num, device=args.device,
                                             model_dir=args.model_dir)
    out_dir = check_room(args.out, EMBEDDING_BYTES * (len(jobs) + 1), f"{len(jobs)} embeddings")
    rows, failures = embed_all(encoder, jobs, out_dir)
    index = write_index(out_dir, rows)
    print(f"wrote {len(rows)} embeddings and {index}", file=sys.stderr)
    if failures:
        shown = "; ".join(failures[:10]) + (f"; ... {len(failures) - 10} more" if len(failures) > 10 else "")
        raise UserInputError(f"{len(failures)} of {len(jobs)} files could not be embedded: {shown}")
    return rows


if __name__ == "__main__":
    run_main(main)
