"""Verification trial lists (``label enroll test`` per line, VoxCeleb1-O/E/H format) read robustly.

CRLF or LF line ends, blank lines and a missing final newline are accepted; a malformed line is
reported with its line number. Names like ``id10270/x6uYqmx31kE/00001.wav`` map to the feature file
``<root>/id10270/x6uYqmx31kE/00001.npy`` in the first feature root that has it (VoxCeleb1 test, then
dev, so the larger -E and -H lists work too). Missing features are reported, listing the first few,
before any embedding work starts.
"""
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

import configure
from common.errors import UserInputError
from evaluation.audio_inputs import path_kind

N_MISSING_SHOWN = 5
LABELS = {"1": 1, "0": 0, "target": 1, "nontarget": 0}      # what a lenient (score.py) list may write


@dataclass
class Trials:
    labels: np.ndarray   # (n,) int64, 1 = target
    enroll: list         # utterance names as the list writes them
    test: list
    path: Path

    def __len__(self) -> int:
        return len(self.labels)

    def utterances(self) -> list:
        """Every utterance the list needs, once, in order of first appearance."""
        return list(dict.fromkeys(name for pair in zip(self.enroll, self.test) for name in pair))


def parse_trial_line(line: str, number: int, path) -> tuple:
    fields = line.split()
    if len(fields) != 3 or fields[0] not in ("0", "1"):
        raise UserInputError(f"{path}, line {number}: expected 'label enroll test' with label 0 or 1, "
                             f"found {line.strip()[:80]!r}")
    return int(fields[0]), check_name(fields[1], number, path), check_name(fields[2], number, path)


def check_name(name: str, number: int, path) -> str:
    parts = PurePosixPath(name).parts
    if len(parts) != 3 or name.startswith("/") or ".." in parts:
        raise UserInputError(f"{path}, line {number}: utterance name {name!r} is not "
                             f"'speaker/session/utterance.wav'")
    return name


def parse_lenient_rows(rows: list, path) -> tuple:
    """(labels or None, enroll, test) of ``label enroll test`` (label 1/0 or target/nontarget) or
    ``enroll test`` lines, the same width on every line; entries of any form."""
    width = len(rows[0][1].split())
    for number, line in rows:
        fields = line.split()
        if len(fields) != width or width not in (2, 3) or (width == 3 and fields[0].lower() not in LABELS):
            raise UserInputError(f"{path}, line {number}: expected 'label enroll test' (label 1/0 or "
                                 f"target/nontarget) or 'enroll test' on every line, found {' '.join(fields)[:80]!r}")
    split = [line.split() for _, line in rows]
    labels = np.array([LABELS[f[0].lower()] for f in split], np.int64) if width == 3 else None
    return labels, [f[-2] for f in split], [f[-1] for f in split]


def read_trials(path, strict: bool = True) -> Trials:
    """The trial list at ``path`` (CRLF or LF, blank lines and a missing final newline accepted).

    ``strict`` (EER_full.py, EER_short.py, validation: VoxCeleb lists): every line ``label enroll
    test`` with label 0 or 1 and names ``speaker/session/utterance.wav``. Not strict (score.py: users'
    lists): labels 1/0 or target/nontarget, or no labels at all (``labels`` None), entries of any form."""
    path = Path(path)
    if path_kind(path, " (--trials)") != "file":
        raise UserInputError(f"trial list not found: {path}")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise UserInputError(f"{path}: not a text trial list ({error.reason} at byte {error.start})") from None
    rows = [(number, line) for number, line in enumerate(text.splitlines(), start=1) if line.strip()]
    if not rows:
        raise UserInputError(f"{path}: the trial list has no trials")
    if not strict:
        return Trials(*parse_lenient_rows(rows, path), path)
    labels, enroll, test = zip(*(parse_trial_line(line, number, path) for number, line in rows))
    return Trials(np.array(labels, dtype=np.int64), list(enroll), list(test), path)


def feature_relpath(name: str) -> PurePosixPath:
    return PurePosixPath(name).with_suffix(".npy")


def voxceleb1_feature_roots(save_path) -> list:
    """VoxCeleb1 test then dev feature folders (those that exist); a clear error if neither does."""
    return configure.feature_roots(save_path, configure.VOXCELEB1_SPLITS, "any", "VoxCeleb1 features")


def locate_features(names, roots) -> dict:
    """{name: feature path}; raises listing the first few names that have no feature file."""
    located, missing = {}, []
    for name in names:
        relpath = feature_relpath(name)
        found = next((Path(root) / relpath for root in roots
                      if path_kind(Path(root) / relpath, " (a trial-list entry)") == "file"), None)
        if found is None:
            missing.append(name)
        else:
            located[name] = found
    if missing:
        raise UserInputError(f"{len(missing)} of {len(located) + len(missing)} utterances in the trial "
                             f"list have no features under {', '.join(map(str, roots))}: {first_names(missing)}")
    return located


def first_names(names: list) -> str:
    """The first few of ``names``, comma-separated, for an error message."""
    return ", ".join(names[:N_MISSING_SHOWN]) + (", ..." if len(names) > N_MISSING_SHOWN else "")
