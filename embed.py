"""Write a speaker embedding (.npy, 256 floats) for every recording in files, folders or a list.

    python embed.py --n_folder 0 --cp_num 100 --out embeddings my_recordings/
    python embed.py --checkpoint model.pth --out embeddings a.wav b.flac --list more_files.txt
    python embed.py --checkpoint model.pth --out embeddings --out_format ark --batch_size 32 my_recordings/

Many recordings share a forward (``--batch_size``, exact padding + masking); a recording longer
than ``--chunk_seconds`` is read in blocks of ``--block_seconds`` (twice: the features' mean, then
the features) straight into exact overlapping chunks (equal to the one-pass embedding), so neither
its waveform nor its features are held whole and memory does not grow with its length. A rerun skips recordings whose ``.npy`` exists (resume).
``--out_format matrix`` adds ``embeddings.npy`` + ``keys.txt``, ``ark`` adds Kaldi
``embeddings.ark`` + ``embeddings.scp`` (keys: relative paths without suffix).

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

import numpy as np
from tqdm import tqdm

import configure
from common.errors import UserInputError, run_main
from common.files import save_npy, write_text
from common.preflight import check_room
from evaluation.long_recordings import DEFAULT_CHUNK_FRAMES
from feat_extract.audio_stream import BLOCK_SECONDS
from feat_extract.fbank import SAMPLE_RATE
from evaluation.embedding_files import (INDEX_NAME, OUT_FORMATS, existing_outputs, key_of, read_index,
                                        write_collection)

SOUNDFILE_SUFFIXES = {".wav", ".flac", ".ogg"}
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


def embed_all(encoder, jobs, out_dir: Path, batch_size: int = 16, chunk_frames: int = DEFAULT_CHUNK_FRAMES,
              block_seconds: float = BLOCK_SECONDS):
    """Embed every job whose ``.npy`` is not there yet; returns (index rows, failures).

    Each embedding is saved (atomically) as soon as it is computed, so an interrupted run resumes
    where it stopped. Bad files are skipped and reported."""
    from evaluation.recordings import embed_recordings
    from speaker_api import short_recording_message
    relatives = [str(key.with_suffix(".npy")) for _, key in jobs]
    done, previous = existing_outputs(out_dir, relatives), read_index(out_dir)
    todo = [i for i, rel in enumerate(relatives) if rel not in done]
    if done:
        print(f"resuming: {len(done)} of {len(jobs)} embeddings already in {out_dir}", file=sys.stderr)
    durations, failures = {}, []
    results = embed_recordings(encoder.model, [jobs[i][0] for i in todo], encoder.device, batch_size, chunk_frames,
                               block_seconds)
    for item in tqdm(results, total=len(todo), desc="embedding", unit="file", file=sys.stderr):
        source, key = jobs[todo[item.index]]
        if item.error:
            failures.append(f"{source} ({item.error})")
            tqdm.write(f"skipped: {item.error}", file=sys.stderr)
            continue
        for note in item.notes:
            tqdm.write(f"note: {source}: {note}", file=sys.stderr)
        if short := short_recording_message(source, round(item.duration_s * SAMPLE_RATE)):
            tqdm.write(f"warning: {short}", file=sys.stderr)
        save_npy(out_dir / relatives[todo[item.index]], item.embedding)
        durations[relatives[todo[item.index]]] = item.duration_s
    rows = [(rel, str(source), durations.get(rel, previous.get(rel, ("", float("nan")))[1]))
            for (source, _), rel in zip(jobs, relatives) if rel in durations or rel in done]
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
    parser.add_argument("--out_format", choices=OUT_FORMATS, default="npy",
                        help="also write one matrix + keys.txt (matrix) or Kaldi ark/scp (ark)")
    parser.add_argument("--batch_size", type=int, default=16, help="recordings per forward pass")
    parser.add_argument("--chunk_seconds", type=float, default=150.0,
                        help="longer recordings are embedded in exact overlapping chunks of this length")
    parser.add_argument("--block_seconds", type=float, default=BLOCK_SECONDS,
                        help="audio is read (and features computed) this many seconds at a time")
    configure.add_checkpoint_arguments(parser)
    configure.add_common_arguments(parser)
    args = parser.parse_args(argv)
    configure.check_checkpoint_arguments(parser, args)
    if not args.inputs and not args.list_file:
        parser.error("give audio files/folders, or --list FILE")
    if args.batch_size < 1 or not args.chunk_seconds >= 1 or not args.block_seconds >= 0.1:
        parser.error("--batch_size must be >= 1, --chunk_seconds >= 1 and --block_seconds >= 0.1")
    return configure.apply_common_arguments(args)


def main(argv=None):
    args = parse_args(argv)
    from speaker_api import SpeakerEncoder
    jobs = collect_inputs(args.inputs, args.list_file)
    encoder = SpeakerEncoder.from_checkpoint(args.checkpoint, args.n_folder, args.cp_num, device=args.device,
                                             model_dir=args.model_dir)
    out_dir = check_room(args.out, EMBEDDING_BYTES * (len(jobs) + 1), f"{len(jobs)} embeddings")
    rows, failures = embed_all(encoder, jobs, out_dir, args.batch_size, int(args.chunk_seconds * 100),
                               args.block_seconds)
    index = write_index(out_dir, rows)
    written = write_collection(out_dir, [key_of(rel) for rel, _, _ in rows],
                               [np.load(out_dir / rel) for rel, _, _ in rows], args.out_format)
    print(f"wrote {len(rows)} embeddings and {', '.join(map(str, [index, *written]))}", file=sys.stderr)
    if failures:
        shown = "; ".join(failures[:10]) + (f"; ... {len(failures) - 10} more" if len(failures) > 10 else "")
        raise UserInputError(f"{len(failures)} of {len(jobs)} files could not be embedded: {shown}")
    return rows


if __name__ == "__main__":
    run_main(main)
