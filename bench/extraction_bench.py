"""Feature extraction real-time factor (processing seconds per second of audio) with 1 worker and with
all cores, through the project's own extractor (feat_extract.feature_extraction.extract_jobs).

Both runs are what a user gets: the extractor itself limits BLAS to one thread per process
(``single_blas_thread``), so "1 core" means one core and the worker processes do not oversubscribe
the cores (before that fix, measured here: 2 workers used twice the CPU per file, ~1.1x on 2 cores;
this benchmark used to hide it by limiting BLAS itself). Each run
writes a fresh folder (extraction skips outputs that already exist). Files are 4-12 s (mean 8 s) like
VoxCeleb; the 1-core and all-core runs alternate, and each value is the median of its runs. The pool's
start-up (fork + the workers' first task) is inside the timing; it is also measured apart and shown in
the note, since a real corpus (hours of audio) amortises it completely.
"""
import os
import shutil
import statistics
from pathlib import Path

from bench.report import Result
from bench.synthetic import write_wavs
from bench.timing import median_seconds
from feat_extract.feature_extraction import extract_jobs, extraction_pool, wav_tree_jobs


def extract_once(wav_root: Path, feat_root: Path, workers: int) -> None:
    shutil.rmtree(feat_root, ignore_errors=True)
    summary = extract_jobs(wav_tree_jobs(wav_root, feat_root), feat_root, workers=workers)
    assert summary.extracted > 0 and not summary.failed, f"extraction failed: {summary.failed[:1]}"


def audio_seconds_of(paths) -> float:
    import soundfile as sf
    return sum(sf.info(str(path)).duration for path in paths)


def interleaved_medians(actions, repeats: int) -> list:
    """Median seconds of each action, run alternately so that load changes hit them alike."""
    times = [[] for _ in actions]
    for _ in range(repeats):
        for action, seconds in zip(actions, times):
            seconds.append(median_seconds(action, 1))
    return [statistics.median(seconds) for seconds in times]


def pool_startup_seconds(workers: int) -> float:
    """Seconds to start the extractor's pool and get a trivial answer from every worker."""
    def start_and_stop():
        pool = extraction_pool(workers)
        pool.map(abs, range(workers), 1)
        pool.terminate()
        pool.join()
    return median_seconds(start_and_stop, 3)


def extraction_results(work_dir, n_files: int, seconds: float, repeats: int) -> list:
    """RTF with 1 worker and with every core on wavs of 4-12 s (mean ``seconds``); the pool's start-up
    is inside the timing (and measured apart for the note)."""
    wav_root, feat_root = Path(work_dir) / "wav", Path(work_dir) / "feat"
    audio_seconds = audio_seconds_of(write_wavs(wav_root, n_files, seconds, spread=0.5))
    all_cores = os.cpu_count() or 1
    extract_once(wav_root, feat_root, all_cores)  # warm the page cache and imports
    one, many = interleaved_medians([lambda: extract_once(wav_root, feat_root, 1),
                                     lambda: extract_once(wav_root, feat_root, all_cores)], repeats)
    startup = pool_startup_seconds(all_cores) if all_cores > 1 else 0.0
    one, many = one / audio_seconds, many / audio_seconds
    return [Result(f"extraction_rtf_{all_cores}_cores", many, "s per audio s", one, False,
                   1.8 if all_cores >= 2 else None,
                   f"baseline = 1 core; {n_files} wavs of 4-12 s ({audio_seconds:.0f} s); RTF 1 core {one:.4f}; "
                   f"medians of {repeats} interleaved runs; BLAS 1 thread per process; pool start-up "
                   f"{startup:.3f} s included ({startup / (many * audio_seconds):.0%} of the run)")]
