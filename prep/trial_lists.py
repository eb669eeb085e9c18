"""VoxCeleb1-O/E/H trial lists, original and cleaned, fetched for ``dataprep.py --download_lists``.

Each list is checked before it is put in place: every row is ``label enroll test`` with label 0 or 1
and VoxCeleb1 paths (``id1NNNN/<11-character YouTube id>/NNNNN.wav``), the number of trials is the
published one, and where the rows' SHA-256 is known, it matches. The SHA-256 is taken over the rows
as ``label enroll test\\n`` (fields joined by one space, LF line ends), so a copy with CRLF line ends
or no final newline verifies the same. Known: VoxCeleb1-O original (``veri_test.txt``, as shipped in
lists/). The other five could not be fetched where this was written; their values are None until
someone with the files fills them in (``python -c "from prep.trial_lists import rows_sha256; print(
rows_sha256('lists/veri_test2.txt'))"``); their trial counts are checked meanwhile.
"""
import hashlib
import re
from pathlib import Path

import configure
from common.errors import UserInputError
from prep.download import (Credentials, looks_like_html, open_part, partial_size, save_response, set_aside,
                           text_rows)

LISTS_URL = "https://www.robots.ox.ac.uk/~vgg/data/voxceleb/meta/"
# list file -> (trials, target trials, SHA-256 of the rows); None where not known yet. The counts are the
# published ones (the VoxCeleb pages; PaddleSpeech's examples/voxceleb/README.md tabulates them)
TRIAL_LISTS = {
    "veri_test.txt": (37_720, 18_860, "303b2b657042a27bf465d4c8aa84e12765373cdc01046665241ccd5783bd5976"),
    "veri_test2.txt": (37_611, 18_802, None),
    "list_test_all.txt": (581_480, 290_743, None),
    "list_test_all2.txt": (579_818, None, None),
    "list_test_hard.txt": (552_536, 276_270, None),
    "list_test_hard2.txt": (550_894, 275_488, None),
}
VOX1_PATH = re.compile(r"id1\d{4}/[A-Za-z0-9_-]{11}/\d{5}\.wav")


def trial_rows(path) -> list:
    """The rows of a trial list as ``label enroll test`` strings; the first malformed line is an error."""
    path = Path(path)
    if looks_like_html(path):
        raise UserInputError(f"{path}: an HTML page, not a trial list")
    rows = []
    for number, line, fields in text_rows(path):
        if (len(fields) != 3 or fields[0] not in ("0", "1")
                or not all(VOX1_PATH.fullmatch(field) for field in fields[1:])):
            raise UserInputError(f"{path}:{number}: expected 'label enroll test' (label 0 or 1, VoxCeleb1 "
                                 f"paths such as id10270/x6uYqmx31kE/00001.wav), got {line.strip()[:120]!r}")
        rows.append(" ".join(fields))
    return rows


def rows_digest(rows: list) -> str:
    return hashlib.sha256("".join(row + "\n" for row in rows).encode()).hexdigest()


def rows_sha256(path) -> str:
    """SHA-256 of a list's rows, independent of its line ends (see the module docstring)."""
    return rows_digest(trial_rows(path))


def check_list(path, name: str, expected: dict) -> None:
    """Format, trial count and (where known) rows' SHA-256 of list ``name``; raises otherwise."""
    n_trials, n_targets, sha256 = expected[name]
    rows = trial_rows(path)
    if len(rows) != n_trials:
        raise UserInputError(f"{path}: {len(rows)} trials, but {name} has {n_trials}")
    targets = sum(row.startswith("1") for row in rows)
    if n_targets is not None and targets != n_targets:
        raise UserInputError(f"{path}: {targets} target trials, but {name} has {n_targets}")
    digest = rows_digest(rows)
    if sha256 is not None and digest != sha256:
        raise UserInputError(f"{path}: SHA-256 of the rows is {digest}, expected {sha256} for {name}")


def download_list(name: str, lists_dir: Path, base_url: str, expected: dict) -> str:
    """One list into ``lists_dir`` (resumed from ``<name>.part``, checked, renamed): 'downloaded' or
    'already present'. An existing file that does not check is never replaced."""
    target, partial = lists_dir / name, lists_dir / f"{name}.part"
    if target.is_file():
        try:
            check_list(target, name, expected)
        except UserInputError as error:
            raise UserInputError(f"{error}; {target} exists and is not the published list: refusing to "
                                 "replace it (move it away and run again)") from None
        return "already present"
    url = base_url.rstrip("/") + "/" + name
    save_response(open_part(url, Credentials(), partial_size(partial)), partial, name)
    try:
        check_list(partial, name, expected)
    except UserInputError as error:
        raise UserInputError(f"{error} (downloaded from {url}); moved aside to "
                             f"{set_aside(partial, 'not-the-list')}") from None
    partial.replace(target)
    return "downloaded"


def download_lists(lists_dir=None, base_url: str = LISTS_URL, expected=None) -> dict:
    """Every list of ``configure.PROTOCOL_LISTS`` into ``lists_dir`` (default lists/): name -> outcome."""
    lists_dir = Path(lists_dir or configure.LISTS_DIR)
    lists_dir.mkdir(parents=True, exist_ok=True)
    expected = expected or TRIAL_LISTS
    return {name: download_list(name, lists_dir, base_url, expected)
            for name in configure.PROTOCOL_LISTS.values()}
