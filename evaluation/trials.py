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

N_MISSING_SHOWN = 5


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


def read_trials(path) -> Trials:
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"trial list not found: {path}")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise UserInputError(f"{path}: not a text trial list ({error.reason} at byte {error.start})") from None
    rows = [parse_trial_line(line, number, path)
            for number, line in enumerate(text.splitlines(), start=1) if line.strip()]
    if not rows:
        raise UserInputError(f"{path}: the trial list has no trials")
    labels, enroll, test = zip(*rows)
    return Trials(np.array(labels, dtype=np.int64), list(enroll), list(test), path)


def feature_relpath(name: str) -> PurePosixPath:
    return PurePosixPath(name).with_suffix(".npy")


def voxceleb1_feature_roots(save_path) -> list:
    """VoxCeleb1 test then dev feature folders (those that exist); a clear error if neither does."""
    candidates = [configure.feature_dir(save_path, "voxceleb1", split) for split in ("test", "dev")]
    roots = [root for root in candidates if root.is_dir()]
    if not roots:
        raise UserInputError("no VoxCeleb1 features found: neither "
                             + " nor ".join(str(root) for root in candidates)
                             + " exists (run dataprep.py / feature extraction, or pass --save_path)")
    return roots


def locate_features(names, roots) -> dict:
    """{name: feature path}; raises listing the first few names that have no feature file."""
    located, missing = {}, []
    for name in names:
        relpath = feature_relpath(name)
        found = next((Path(root) / relpath for root in roots if (Path(root) / relpath).is_file()), None)
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
