"""Feature extraction real-time factor (processing seconds per second of audio) with 1 worker and with
all cores, through the project's own extractor (feat_extract.feature_extraction.extract_jobs).

BLAS is limited to one thread per process so "1 core" means one core. Each run writes a fresh folder
(extraction skips outputs that already exist).
"""
import os
import shutil
import time
from pathlib import Path

from threadpoolctl import threadpool_limits

from bench.report import Result
from bench.synthetic import write_wavs
from bench.timing import median_seconds
from feat_extract.feature_extraction import extract_jobs, wav_tree_jobs


def extract_once(wav_root: Path, feat_root: Path, workers: int) -> None:
    shutil.rmtree(feat_root, ignore_errors=True)
    summary = extract_jobs(wav_tree_jobs(wav_root, feat_root), feat_root, workers=workers)
    assert summary.extracted > 0 and not summary.failed, f"extraction failed: {summary.failed[:1]}"


def extraction_results(work_dir, n_files: int, seconds: float, repeats: int) -> list:
    wav_root, feat_root = Path(work_dir) / "wav", Path(work_dir) / "feat"
    write_wavs(wav_root, n_files, seconds)
    audio_seconds = n_files * seconds
    all_cores = os.cpu_count() or 1
    with threadpool_limits(limits=1):
        one = median_seconds(lambda: extract_once(wav_root, feat_root, 1), repeats) / audio_seconds
        many = median_seconds(lambda: extract_once(wav_root, feat_root, all_cores), repeats) / audio_seconds
    return [Result(f"extraction_rtf_{all_cores}_cores", many, "s per audio s", one, False,
                   1.8 if all_cores >= 2 else None,
                   f"baseline = 1 core; {n_files} wavs x {seconds:g} s; RTF 1 core {one:.4f}")]
