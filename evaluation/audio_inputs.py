"""Which recordings a command was given: files, folders (searched recursively) and list files, each
with the relative output name it maps to (``embed.py`` mirrors it; ``verify.py --gallery`` reads the
speaker sub-folder from it; ``score.py --cohort`` embeds an audio folder)."""
import os
import shutil
import stat
from pathlib import Path, PurePosixPath

from common.errors import UserInputError
from feat_extract.audio_formats import FFMPEG_SUFFIXES, SOUNDFILE_SUFFIXES


def audio_suffixes() -> set:
    return set(SOUNDFILE_SUFFIXES) | (FFMPEG_SUFFIXES if shutil.which("ffmpeg") else set())


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


def path_kind(path, where: str = ""):
    """"dir", "file" or None (nothing there) for ``path``; a name the system cannot even look up (longer
    than the file-name limit, a NUL byte) is one UserInputError, not a traceback."""
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, ValueError) as error:
        reason = getattr(error, "strerror", None) or str(error)
        raise UserInputError(f"{str(path)[:80]}{'...' if len(str(path)) > 80 else ''}{where}: not a usable "
                             f"path ({reason})") from None
    return "dir" if stat.S_ISDIR(mode) else "file"


def collect_inputs(inputs, list_file=None) -> list:
    """[(source path, relative output key)] for files, folders (recursive) and a list file."""
    entries = [(Path(item), None) for item in inputs] + [(Path(item), "list") for item in
                                                          (read_list(list_file) if list_file else [])]
    suffixes, jobs = audio_suffixes(), []
    for path, origin in entries:
        kind = path_kind(path, f" (listed in {list_file})" if origin else "")
        if kind == "dir":
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
            if not found:
                raise UserInputError(f"{path}: no audio files ({', '.join(sorted(suffixes))}) in this folder")
            jobs += [(p, PurePosixPath(*p.relative_to(path).parts)) for p in found]
        elif kind == "file":
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
