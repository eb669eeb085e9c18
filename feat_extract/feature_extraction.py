"""Extract 40-d log-mel features for a whole corpus (the feature-extraction command).

    python feat_extract/feature_extraction.py --save_path DIR [--workers N --feat_dtype float16 --strict]
    python feat_extract/feature_extraction.py --wav_scp wav.scp --utt2spk utt2spk --out_dir FEATS
    python feat_extract/feature_extraction.py --save_path DIR --shard K/N     # 1/N of the files (a machine)
    python feat_extract/feature_extraction.py --save_path DIR --merge_index   # then: join the shard indexes
    python feat_extract/feature_extraction.py --save_path DIR --reindex       # rebuild the corpus index

Every wav under the wav folders of configure.SPLITS (or listed by a Kaldi wav.scp + utt2spk) becomes
a mirrored ``.npy`` in the feature folder (``feat_extract.fbank.log_mel_fbank``). Parallel, resumable
(complete outputs are skipped), atomic (temp file + rename), bad files listed in
``<feature folder>/extraction_report.txt``.
"""
import contextlib
import multiprocessing
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

import configure  # noqa: E402
from common.errors import UserInputError, run_main  # noqa: E402
from common.files import save_npy, write_text  # noqa: E402
from common.preflight import check_room  # noqa: E402
from feat_extract import corpus_index  # noqa: E402
from feat_extract.audio import read_audio  # noqa: E402
from feat_extract.audio_formats import SOUNDFILE_SUFFIXES  # noqa: E402
from feat_extract.fbank import N_MELS, SAMPLE_RATE, log_mel_fbank_int16  # noqa: E402
from feat_extract.features import is_complete_feature  # noqa: E402
from feat_extract.shards import parse_shard, select_shard  # noqa: E402

FEAT_DTYPES = ("float32", "float16")
REPORT_NAME = "extraction_report.txt"


@dataclass
class ExtractionSummary:
    extracted: int = 0
    skipped: int = 0                                  # complete outputs already present
    failed: list = field(default_factory=list)        # (audio path, reason)
    converted: list = field(default_factory=list)     # (audio path, "; ".join(notes))
    reports: list = field(default_factory=list)       # report files written
    written: list = field(default_factory=list)       # audio paths whose features this run wrote

    def merge(self, other: "ExtractionSummary") -> None:
        self.extracted += other.extracted
        self.skipped += other.skipped
        self.failed += other.failed
        self.converted += other.converted
        self.reports += other.reports
        self.written += other.written


def wav_tree_jobs(wav_root, feat_root) -> list:
    """(audio, npy) pairs mirroring ``wav_root/<spk>/<session>/<utt>.wav`` under ``feat_root``."""
    wav_root, feat_root = Path(wav_root), Path(feat_root)
    audio = sorted(p for p in wav_root.rglob("*") if p.suffix.lower() in SOUNDFILE_SUFFIXES and p.is_file())
    return [(str(p), str((feat_root / p.relative_to(wav_root)).with_suffix(".npy"))) for p in audio]


def read_kaldi_table(path) -> dict:
    """``key value`` lines of a Kaldi table (wav.scp, utt2spk) -> dict; CRLF and blank lines tolerated."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"{path}: file not found")
    table = {}
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        parts = line.strip().split(maxsplit=1)
        if not parts:
            continue
        if len(parts) != 2:
            raise UserInputError(f"{path}:{number}: expected '<key> <value>', got {line.strip()!r}")
        if parts[0] in table:
            raise UserInputError(f"{path}:{number}: duplicate key {parts[0]!r}")
        table[parts[0]] = parts[1].strip()
    return table


def safe_name(name: str, where: str) -> str:
    if not name or name.startswith(".") or "/" in name or "\\" in name or "\0" in name:
        raise UserInputError(f"{where}: {name!r} cannot be used as a file or folder name")
    return name


def kaldi_jobs(wav_scp, utt2spk, feat_root) -> list:
    """(audio, npy) pairs from a Kaldi ``wav.scp`` + ``utt2spk``: ``feat_root/<spk>/kaldi/<utt>.npy``.

    Piped entries (``cmd |``) are refused: running commands from a list file is not safe."""
    wavs, speakers = read_kaldi_table(wav_scp), read_kaldi_table(utt2spk)
    missing = sorted(set(wavs) - set(speakers))
    if missing:
        raise UserInputError(f"{utt2spk}: no speaker for {len(missing)} utterance(s) of {wav_scp}, "
                             f"e.g. {', '.join(missing[:5])}")
    jobs = []
    base = Path(wav_scp).resolve().parent
    for utt, location in sorted(wavs.items()):
        if location.endswith("|"):
            raise UserInputError(f"{wav_scp}: utterance {utt!r} is a piped command ({location!r}); "
                                 "only file paths are supported (commands are never run)")
        audio = Path(location) if Path(location).is_absolute() else base / location
        speaker = safe_name(speakers[utt], f"{utt2spk} ({utt})")
        npy = Path(feat_root) / speaker / "kaldi" / f"{safe_name(utt, str(wav_scp))}.npy"
        jobs.append((str(audio), str(npy)))
    return jobs


def extract_file(job):
    """Worker: (audio, npy, dtype) -> (audio, status, detail); status is ok/skipped/failed."""
    audio_path, npy_path, dtype = job
    if is_complete_feature(npy_path):
        return audio_path, "skipped", ""
    try:
        audio = read_audio(audio_path)
        features = log_mel_fbank_int16(audio.samples, audio.sample_rate).astype(dtype)
        if not np.all(np.isfinite(features)):
            raise UserInputError(f"{audio_path}: features are not finite after conversion to {dtype}")
    except UserInputError as error:
        return audio_path, "failed", str(error)
    save_npy(npy_path, features)
    return audio_path, "ok", "; ".join(audio.notes)


def remove_stale_temporaries(feat_root) -> int:
    """Delete temp files a killed run left (``.<name>.*.tmp.npy``, see files.atomic_path)."""
    stale = list(Path(feat_root).rglob(".*.tmp.npy")) if Path(feat_root).is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)


def single_blas_thread():
    """Limit this process's BLAS/OpenMP thread pools to one thread (a context manager; its constructor
    applies the limit at once). Extraction runs one process per core: numpy's OpenBLAS, by default one
    thread per core in every process, oversubscribes the cores and spins (measured on 2 cores: twice
    the CPU per file, no gain from a second worker). A no-op when threadpoolctl (a scikit-learn
    dependency) is missing; the features are the same either way."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=1)


def init_worker() -> None:
    """Pool initializer: one BLAS thread for the worker's lifetime (also under spawn/forkserver)."""
    single_blas_thread()


def extraction_pool(workers: int):
    """A pool of ``workers`` processes, forked where possible so that the modules the workers need
    (soundfile, scipy.signal via audio, imported at the top of this module) are inherited instead of
    imported again in every worker."""
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else None
    return multiprocessing.get_context(method).Pool(workers, initializer=init_worker)


def record(summary: ExtractionSummary, audio_path, status, detail, strict) -> None:
    """Count one worker result; ``strict`` turns a bad file into an error."""
    if status == "failed":
        summary.failed.append((audio_path, detail))
        if strict:
            raise UserInputError(f"{detail} (stopped by --strict)")
        return
    summary.extracted += status == "ok"
    if status == "ok":
        summary.written.append(audio_path)
    summary.skipped += status == "skipped"
    if detail:
        summary.converted.append((audio_path, detail))


def run_jobs(jobs, dtype, workers, strict, desc) -> ExtractionSummary:
    """Extract ``jobs`` over a process pool with a progress bar; ``strict`` stops at the first bad file."""
    summary = ExtractionSummary()
    tasks = [(audio, npy, dtype) for audio, npy in jobs]
    chunksize = max(1, min(64, len(tasks) // (max(workers, 1) * 16)))
    with single_blas_thread():
        pool = extraction_pool(workers) if workers > 1 else None
        results = pool.imap_unordered(extract_file, tasks, chunksize) if pool else map(extract_file, tasks)
        try:
            for audio_path, status, detail in tqdm(results, total=len(tasks), desc=desc, unit="file"):
                record(summary, audio_path, status, detail, strict)
        finally:
            if pool:
                pool.terminate()
                pool.join()
    return summary


def feature_bytes(jobs, feat_dtype: str) -> int:
    """Disk the features of ``jobs`` not extracted yet will take: per second of audio (its 16-bit
    16 kHz size; a compressed file counted as if it were a wav) 100 frames x 40 filters, on 4 KB blocks."""
    itemsize = np.dtype(feat_dtype).itemsize
    total = 0
    for audio_path, npy_path in jobs:
        if not Path(npy_path).exists():
            with contextlib.suppress(OSError):
                frames = os.stat(audio_path).st_size / 2 / SAMPLE_RATE * 100
                total += (int(frames * N_MELS * itemsize) + 128) // 4096 * 4096 + 4096
    return total


def write_report(feat_root, summary: ExtractionSummary, shard: tuple = None) -> Path:
    lines = [f"# feature extraction: {summary.extracted} extracted, {summary.skipped} already done, "
             f"{len(summary.failed)} bad, {len(summary.converted)} converted",
             "# status<TAB>audio file<TAB>reason"]
    lines += [f"bad\t{audio}\t{reason}" for audio, reason in sorted(summary.failed)]
    lines += [f"converted\t{audio}\t{notes}" for audio, notes in sorted(summary.converted)]
    name = REPORT_NAME if shard is None else REPORT_NAME.replace(".txt", ".shard-{}-of-{}.txt".format(*shard))
    report = Path(feat_root) / name
    write_text(report, "\n".join(lines) + "\n")
    return report


def extract_jobs(jobs, feat_root, workers=None, feat_dtype="float32", strict=False,
                 desc="features", shard=None) -> ExtractionSummary:
    """Extract (audio, npy) ``jobs`` (those of ``shard`` (K, N) when given) into ``feat_root``, then
    write its report and corpus index. Outputs the index already lists (with their size) are skipped
    without being opened."""
    if feat_dtype not in FEAT_DTYPES:
        raise UserInputError(f"--feat_dtype must be one of {', '.join(FEAT_DTYPES)}, got {feat_dtype!r}")
    workers = workers or os.cpu_count() or 1
    remove_stale_temporaries(feat_root)
    prefix = str(Path(feat_root)) + os.sep
    relative = {npy: npy[len(prefix):] for _, npy in jobs}
    jobs = select_shard(jobs, lambda job: relative[job[1]], shard)
    complete = corpus_index.indexed_complete_files(feat_root)
    todo = [job for job in jobs if relative[job[1]] not in complete]
    check_room(feat_root, feature_bytes(todo, feat_dtype), f"the features of {len(todo)} files")
    summary = run_jobs(todo, feat_dtype, workers, strict, desc + (" shard {}/{}".format(*shard) if shard else ""))
    summary.skipped += len(jobs) - len(todo)
    summary.reports.append(write_report(feat_root, summary, shard))
    npy_of = dict(jobs)
    written = {relative[npy_of[audio]] for audio in summary.written}
    failed = {relative[npy_of[audio]] for audio, _ in summary.failed}
    done = [relative[npy] for _, npy in jobs if relative[npy] not in failed]
    known = {rel: entry for rel, entry in complete.items() if rel not in written}
    corpus_index.index_extraction(feat_root, done, known, shard, workers)
    return summary


def extract_corpus(save_path, workers=None, feat_dtype="float32", strict=False, shard=None) -> ExtractionSummary:
    """Extract every split of configure.SPLITS whose wav folder exists under ``save_path``."""
    total = ExtractionSummary()
    found, empty = False, []
    for (dataset, split), (wav_folder, feat_folder) in configure.SPLITS.items():
        wav_root = Path(save_path) / wav_folder
        if not wav_root.is_dir():
            continue
        found = True
        jobs = wav_tree_jobs(wav_root, Path(save_path) / feat_folder)
        if not jobs:  # an empty wav folder: nothing to extract (and no report) for this split
            empty.append(str(wav_root))
            continue
        total.merge(extract_jobs(jobs, Path(save_path) / feat_folder, workers, feat_dtype, strict,
                                 desc=f"{dataset}/{split}", shard=shard))
    if not found:
        folders = ", ".join(wav for wav, _ in configure.SPLITS.values())
        raise UserInputError(f"no wav folder under {save_path} (looked for {folders}); "
                             "run dataprep.py first (or --synthetic for a demo corpus)")
    if not total.reports:
        raise UserInputError(f"no audio files ({', '.join(SOUNDFILE_SUFFIXES)}) in {', '.join(empty)}; "
                             "run dataprep.py first (or --synthetic for a demo corpus)")
    return total


def print_summary(summary: ExtractionSummary) -> None:
    print(f"extracted {summary.extracted} files, {summary.skipped} already done, "
          f"{len(summary.failed)} bad, {len(summary.converted)} converted", file=sys.stderr)
    if summary.converted:
        print(f"warning: {len(summary.converted)} file(s) were resampled/down-mixed/decoded "
              f"(e.g. {summary.converted[0][0]}: {summary.converted[0][1]})", file=sys.stderr)
    if summary.failed:
        print(f"warning: {len(summary.failed)} bad file(s) skipped (e.g. {summary.failed[0][1]})",
              file=sys.stderr)
    for report in summary.reports:
        print(f"report: {report}", file=sys.stderr)


def parse_args(argv=None):
    parser = configure.argument_parser("Extract 40-d log-mel features for a whole corpus.")
    configure.add_save_path_argument(parser)
    parser.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    parser.add_argument("--feat_dtype", choices=FEAT_DTYPES, default="float32",
                        help="stored feature precision (float16 halves the disk space)")
    parser.add_argument("--strict", action="store_true",
                        help="stop with an error at the first bad audio file instead of reporting it")
    parser.add_argument("--wav_scp", default=None, help="Kaldi wav.scp (with --utt2spk and --out_dir)")
    parser.add_argument("--utt2spk", default=None, help="Kaldi utt2spk")
    parser.add_argument("--out_dir", default=None, help="feature folder for --wav_scp input")
    parser.add_argument("--shard", default=None, metavar="K/N",
                        help="extract only shard K of N (1 <= K <= N; a deterministic split by file name) "
                             "and write a shard index; machines or a SLURM array share a corpus this way")
    parser.add_argument("--merge_index", action="store_true",
                        help="only join the shard indexes of the feature folders into their corpus index")
    parser.add_argument("--reindex", action="store_true",
                        help="only rebuild the corpus index of the feature folders from their files")
    return parser.parse_args(argv)


def feature_roots(args) -> list:
    """The feature folders a command works on: --out_dir, or those of configure.SPLITS that exist."""
    if args.out_dir:
        return [Path(args.out_dir)]
    return configure.feature_roots(args.save_path or configure.save_path)


def index_only(args) -> None:
    """--merge_index / --reindex: (re)write the corpus index of each feature folder, extracting nothing."""
    roots = feature_roots(args)
    if not roots:
        raise UserInputError("no feature folder found (give --save_path or --out_dir)")
    for root in roots:
        if args.merge_index:
            index = corpus_index.merge_shard_indexes(root, args.workers)
        else:
            index = corpus_index.load_index(root, reindex=True, workers=args.workers)
        print(f"index: {root / corpus_index.INDEX_NAME}: {len(index)} utterances of "
              f"{len(index.speakers)} speakers", file=sys.stderr)


def main(argv=None) -> ExtractionSummary:
    args = parse_args(argv)
    if args.merge_index or args.reindex:
        index_only(args)
        return None
    shard = parse_shard(args.shard)
    if args.wav_scp or args.utt2spk or args.out_dir:
        if not (args.wav_scp and args.utt2spk and args.out_dir):
            raise UserInputError("--wav_scp, --utt2spk and --out_dir go together")
        jobs = kaldi_jobs(args.wav_scp, args.utt2spk, args.out_dir)
        summary = extract_jobs(jobs, args.out_dir, args.workers, args.feat_dtype, args.strict, "kaldi", shard)
    else:
        summary = extract_corpus(args.save_path or configure.save_path, args.workers,
                                 args.feat_dtype, args.strict, shard)
    print_summary(summary)
    return summary


if __name__ == "__main__":
    # run the package's copy of this module, so that pool workers find its functions by that name
    from feat_extract.feature_extraction import main as package_main
    run_main(package_main)
