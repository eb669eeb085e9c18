"""VoxCeleb download (HTTP Range resume, MD5), archive concatenation and safe zip extraction, and
m4a -> 16 kHz mono 16-bit wav conversion with ffmpeg. Library code behind ``dataprep.py``.

Safety: credentials travel only in an ``Authorization`` header or a ``key`` query parameter and are
never printed (URLs are shown without their ``key``); no shell is ever used; a file whose MD5 does not
match is moved aside as ``<name>.md5-mismatch``; zip members that would land outside the target
folder are refused; free disk space is checked before each step.
"""
import base64
import getpass
import hashlib
import os
import re
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass, field
from multiprocessing.pool import ThreadPool
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from common.errors import UserInputError
from common.files import atomic_path, write_text
from feat_extract.fbank import SAMPLE_RATE
from feat_extract.shards import select_shard

DEFAULT_BASE_URL = "https://www.robots.ox.ac.uk/~vgg/data/voxceleb/vox1a/"   # folder: BASE/<part>
KEYED_BASE_URL = "https://cn01.mmai.io/download/voxceleb"   # with a key: BASE?file=<part>&key=<key>
CHUNK = 1 << 20
SPEAKER_FOLDER = re.compile(r"^id\d+$")
WAV_BYTES_PER_AAC_BYTE = 4       # 16 kHz 16-bit wav vs ~64 kbit/s AAC: an estimate for the space check


# ------------------------------------------------------------------------------------------ lists
def read_list(path, n_fields: int) -> list:
    """Whitespace-separated rows of ``n_fields`` fields; CRLF, blank lines, no final newline are fine."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"{path}: list not found")
    rows = []
    for number, line, fields in text_rows(path):
        if len(fields) != n_fields or not re.fullmatch(r"[0-9a-fA-F]{32}", fields[-1]):
            raise UserInputError(f"{path}:{number}: expected {n_fields} fields ending in an MD5, "
                                 f"got {line.strip()!r}")
        rows.append(tuple(fields[:-1]) + (fields[-1].lower(),))
    return rows


def text_rows(path):
    """(line number, line, whitespace-separated fields) of each non-blank line of a text file."""
    for number, line in enumerate(Path(path).read_text(errors="replace").splitlines(), start=1):
        fields = line.split()
        if fields:
            yield number, line, fields


def read_parts_list(path) -> list:
    """``lists/fileparts.txt``: (part name, md5) rows."""
    return read_list(path, 2)


def read_archives_list(path) -> list:
    """``lists/files.txt``: (glob of parts, archive name, md5) rows."""
    return read_list(path, 3)


# ------------------------------------------------------------------------------------ small tools
def md5_of(path, desc=None) -> str:
    return digest_of(path, "md5", desc)


def sha256_of(path, desc=None) -> str:
    return digest_of(path, "sha256", desc)


def digest_of(path, algorithm: str, desc=None) -> str:
    """Hex digest of a file, read in blocks (a progress bar when ``desc`` is given)."""
    digest = hashlib.new(algorithm)
    size = Path(path).stat().st_size
    with open(path, "rb") as handle, tqdm(total=size, unit="B", unit_scale=True, desc=desc,
                                          disable=desc is None, leave=False) as bar:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
            bar.update(len(block))
    return digest.hexdigest()


def check_free_space(folder, needed: int, what: str) -> None:
    """Refuse to start ``what`` when ``folder``'s file system has less than ``needed`` bytes free."""
    folder = Path(folder)
    probe = folder
    while not probe.exists():
        probe = probe.parent
    available = shutil.disk_usage(probe).free
    if needed > available:
        raise UserInputError(f"not enough disk space for {what} in {folder}: needs {gib(needed)}, "
                             f"{gib(available)} available")


def gib(n_bytes: int) -> str:
    return f"{n_bytes / 2 ** 30:.2f} GiB"


def looks_like_html(path) -> bool:
    """A web page (an error or login page saved under a data file's name)."""
    with open(path, "rb") as handle:
        return handle.read(512).lstrip()[:1] == b"<"


def set_aside(path: Path, reason: str = "md5-mismatch") -> Path:
    """Move a file whose checksum is wrong to ``<name>.<reason>`` (kept for inspection)."""
    bad = path.with_name(path.name.removesuffix(".part") + f".{reason}")
    os.replace(path, bad)
    return bad


# ------------------------------------------------------------------------------------ credentials
@dataclass
class Credentials:
    user: str = None
    password: str = field(default=None, repr=False)
    key: str = field(default=None, repr=False)

    def headers(self) -> dict:
        if self.user is None:
            return {}
        token = base64.b64encode(f"{self.user}:{self.password or ''}".encode()).decode()
        return {"Authorization": f"Basic {token}"}


def resolve_credentials(user=None, password=None, key=None, prompt=getpass.getpass) -> Credentials:
    """Flags first, then $VOXCELEB_PASSWORD / $VOXCELEB_KEY, then (for --user) a password prompt."""
    key = key or os.environ.get("VOXCELEB_KEY") or None
    if user and not password:
        password = os.environ.get("VOXCELEB_PASSWORD") or prompt(f"VoxCeleb password for {user}: ")
    return Credentials(user, password, key)


def default_base_url(credentials: Credentials) -> str:
    """VoxCeleb's hosts serve keyed downloads from one endpoint, user/password ones from a folder."""
    return KEYED_BASE_URL if credentials.key else DEFAULT_BASE_URL


def part_url(base_url: str, name: str, credentials: Credentials) -> str:
    """With a key, ``base_url?file=<name>&key=<key>`` (VoxCeleb's keyed endpoint or a mirror of it);
    without, ``base_url/name``. A list entry that is itself a full URL is used as is (plus ``key=``)."""
    if "://" in name:
        url, query = name, {"key": credentials.key} if credentials.key else {}
    elif credentials.key:
        url, query = base_url, {"file": name, "key": credentials.key}
    else:
        return base_url.rstrip("/") + "/" + urllib.parse.quote(name)
    return url + ("&" if "?" in url else "?") + urllib.parse.urlencode(query) if query else url


def part_file_name(name: str) -> str:
    """Local file name of a list entry (the last path component of a URL entry)."""
    return PurePosixPath(urllib.parse.urlsplit(name).path).name if "://" in name else name


def shown(url: str) -> str:
    """A URL safe to print: the ``key`` parameter removed from its query (the rest, e.g. ``file=``, kept)."""
    parts = urllib.parse.urlsplit(url)
    query = [(name, value) for name, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
             if name != "key"]
    return parts._replace(query=urllib.parse.urlencode(query)).geturl()


# --------------------------------------------------------------------------------------- download
def open_part(url: str, credentials: Credentials, offset: int):
    request = urllib.request.Request(url, headers=credentials.headers())
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        return urllib.request.urlopen(request, timeout=60)
    except urllib.error.HTTPError as error:
        if error.code == 416:
            return None          # nothing left to send: the partial file is already whole
        signed = credentials.user or credentials.key
        hint = " (check --user/--password or --key)" if error.code in (401, 403) and signed else ""
        raise UserInputError(f"download of {shown(url)} failed: HTTP {error.code} {error.reason}{hint}") from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise UserInputError(f"cannot reach {shown(url)}: {reason}") from None


def download_part(base_url: str, name: str, md5: str, folder, credentials: Credentials) -> str:
    """Download one part into ``folder``; returns 'skipped' (already verified) or 'downloaded'.

    Bytes go to ``<name>.part`` and are resumed from its size with an HTTP Range request; only after
    the MD5 matches is it renamed to ``<name>``."""
    folder, url = Path(folder), part_url(base_url, name, credentials)
    name = part_file_name(name)
    final, partial = folder / name, folder / f"{name}.part"
    if final.is_file():
        if md5_of(final, desc=f"verify {name}") == md5:
            return "skipped"
        raise UserInputError(f"{final}: MD5 mismatch, moved aside to {set_aside(final)}")
    folder.mkdir(parents=True, exist_ok=True)
    save_response(open_part(url, credentials, partial_size(partial)), partial, name)
    if md5_of(partial, desc=f"verify {name}") != md5:
        bad = set_aside(partial)
        raise UserInputError(f"{name}: MD5 mismatch after download (expected {md5}); the file was "
                             f"moved aside to {bad}; delete it and run again")
    os.replace(partial, final)
    return "downloaded"


def partial_size(partial: Path) -> int:
    """Bytes already downloaded into ``partial`` (the offset of the next Range request)."""
    return partial.stat().st_size if partial.is_file() else 0


def save_response(response, partial: Path, name: str) -> None:
    """Append a 206 (partial content) response to ``partial``, or replace it with a 200 one;
    None (HTTP 416: nothing left to send) leaves it as it is. The free space is checked first."""
    if response is None:
        return
    with response:
        resumed = response.status == 206
        offset = partial_size(partial) if resumed else 0
        remaining = int(response.headers.get("Content-Length") or 0)
        check_free_space(partial.parent, remaining, f"downloading {name}")
        write_stream(response, partial, "ab" if resumed else "wb", offset, offset + remaining, name)


def write_stream(response, path: Path, mode: str, offset: int, total: int, name: str) -> None:
    with open(path, mode) as handle, tqdm(total=total or None, initial=offset, unit="B",
                                          unit_scale=True, desc=name) as bar:
        for block in iter(lambda: response.read(CHUNK), b""):
            handle.write(block)
            bar.update(len(block))
        handle.flush()
        os.fsync(handle.fileno())


def download_all(base_url: str, parts: list, folder, credentials: Credentials) -> dict:
    """Download every (name, md5) of ``parts``; counts of downloaded and skipped parts."""
    counts = {"downloaded": 0, "skipped": 0}
    for name, md5 in tqdm(parts, desc="parts", unit="part"):
        counts[download_part(base_url, name, md5, folder, credentials)] += 1
    return counts


# ------------------------------------------------------------------------------ concatenate/extract
def concatenate_archives(folder, archives: list) -> list:
    """Join parts matching each (glob, archive, md5) into the archive, MD5-checked; returns archives."""
    folder, made = Path(folder), []
    for pattern, archive, md5 in archives:
        target = folder / archive
        made.append(target)
        if target.is_file() and md5_of(target, desc=f"verify {archive}") == md5:
            continue
        parts = sorted(p for p in folder.glob(pattern) if p.suffix not in (".part", ".md5-mismatch"))
        if not parts:
            raise UserInputError(f"no parts matching {pattern} in {folder}; run with --download first")
        check_free_space(folder, sum(p.stat().st_size for p in parts), f"concatenating {archive}")
        with atomic_path(target) as tmp, open(tmp, "wb") as out:
            for part in tqdm(parts, desc=f"join {archive}", unit="part"):
                with open(part, "rb") as handle:
                    shutil.copyfileobj(handle, out, CHUNK)
        if md5_of(target, desc=f"verify {archive}") != md5:
            raise UserInputError(f"{archive}: MD5 mismatch after concatenation (expected {md5}); "
                                 f"moved aside to {set_aside(target)}")
    return made


def archive_target(save_path, archive: str) -> Path:
    """Where an archive's speaker folders belong: voxceleb1/dev/wav, ..., voxceleb2/dev/aac."""
    name = archive.lower()
    dataset = "voxceleb2" if "vox2" in name else "voxceleb1"
    split = "test" if "test" in name else "dev"
    return Path(save_path) / dataset / split / ("aac" if "aac" in name else "wav")


def member_parts(member: str, target: Path, archive) -> tuple:
    """The path components of an archive member; absolute, drive-letter and ``..`` members are refused."""
    parts = PurePosixPath(member.replace("\\", "/")).parts
    if member.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", member) or ".." in parts:
        raise UserInputError(f"{archive}: refusing member {member!r}: it would land outside {target}")
    return parts


def inside(destination: Path, target: Path, member: str, archive) -> Path:
    if not destination.resolve().is_relative_to(target.resolve()):
        raise UserInputError(f"{archive}: refusing member {member!r}: it would land outside {target}")
    return destination


def member_destination(member: str, target: Path, archive) -> Path:
    """Destination of a zip member below ``target`` (from its ``idNNNNN`` folder on), or None for
    members outside any speaker folder; members escaping the target are refused."""
    parts = member_parts(member, target, archive)
    starts = [i for i, part in enumerate(parts) if SPEAKER_FOLDER.match(part)]
    if not starts or member.endswith("/"):
        return None
    return inside(target.joinpath(*parts[starts[0]:]), target, member, archive)


def tree_destination(member: str, target: Path, archive) -> Path:
    """Destination of an archive member at its own path below ``target`` (None for folders);
    members escaping the target are refused."""
    parts = member_parts(member, target, archive)
    if not parts or member.endswith(("/", "\\")):
        return None
    return inside(target.joinpath(*parts), target, member, archive)


def extract_archive(archive, target, place=member_destination) -> int:
    """Extract a zip into ``target`` (each file atomically; by default its speaker folders, ``place``
    maps (member, target, archive) to a destination or None); returns files written."""
    archive, target = Path(archive), Path(target)
    try:
        zipped = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as error:
        raise UserInputError(f"{archive}: not a readable zip file ({error})") from None
    with zipped:
        members = [(info, place(info.filename, target, archive)) for info in zipped.infolist()]
        todo = [(info, dest) for info, dest in members
                if dest is not None and not (dest.is_file() and dest.stat().st_size == info.file_size)]
        check_free_space(target, sum(info.file_size for info, _ in todo), f"extracting {archive.name}")
        for info, destination in tqdm(todo, desc=f"extract {archive.name}", unit="file"):
            with zipped.open(info) as source, atomic_path(destination) as tmp, \
                    open(tmp, "wb") as out:
                shutil.copyfileobj(source, out, CHUNK)
    return len(todo)


def extract_all(save_path, download_folder, parts: list, archives: list) -> dict:
    """Concatenate multi-part archives, then extract them and the single-file zips into place."""
    zips = concatenate_archives(download_folder, archives)
    zips += [Path(download_folder) / part_file_name(name) for name, _ in parts if name.endswith(".zip")]
    written = {}
    for archive in zips:
        if not archive.is_file():
            raise UserInputError(f"{archive}: archive not found; run with --download first")
        written[archive.name] = extract_archive(archive, archive_target(save_path, archive.name))
    return written


# ---------------------------------------------------------------------------------------- convert
def ffmpeg_command(source, destination) -> list:
    return ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(source),
            "-ac", "1", "-ar", str(SAMPLE_RATE), "-sample_fmt", "s16", str(destination)]


def convert_file(pair) -> tuple:
    """(m4a, wav) -> (m4a, error or ''); the wav appears only when ffmpeg succeeded."""
    source, destination = pair
    try:
        with atomic_path(destination, ".wav") as tmp:
            subprocess.run(ffmpeg_command(source, tmp), check=True, capture_output=True)
    except subprocess.CalledProcessError as error:
        lines = error.stderr.decode(errors="replace").strip().splitlines()
        return str(source), lines[-1] if lines else f"ffmpeg exit code {error.returncode}"
    return str(source), ""


def convert_aac(save_path, workers=None, source_folder="voxceleb2/dev/aac",
                target_folder="voxceleb2/dev/wav", shard=None) -> dict:
    """Every ``.m4a`` under ``source_folder`` (those of ``shard`` (K, N) when given, see
    feat_extract/shards.py) -> 16 kHz mono 16-bit ``.wav`` under ``target_folder``."""
    if shutil.which("ffmpeg") is None:
        raise UserInputError("ffmpeg is needed for --convert but is not installed "
                             "(Debian/Ubuntu: sudo apt-get install ffmpeg)")
    source_root, target_root = Path(save_path) / source_folder, Path(save_path) / target_folder
    if not source_root.is_dir():
        raise UserInputError(f"{source_root}: no such folder; run with --extract first")
    pairs = [(m4a, (target_root / m4a.relative_to(source_root)).with_suffix(".wav"))
             for m4a in sorted(source_root.rglob("*.m4a"))]
    pairs = select_shard(pairs, lambda pair: pair[0].relative_to(source_root).as_posix(), shard)
    todo = [(m4a, wav) for m4a, wav in pairs if not wav.is_file()]
    check_free_space(target_root, WAV_BYTES_PER_AAC_BYTE * sum(m.stat().st_size for m, _ in todo),
                     "converting to wav (estimated)")
    failed = []
    with ThreadPool(workers or os.cpu_count() or 1) as pool:
        for source, error in tqdm(pool.imap_unordered(convert_file, todo), total=len(todo),
                                  desc="convert m4a", unit="file"):
            if error:
                failed.append((source, error))
    if failed:
        name = "conversion_report.txt" if shard is None else "conversion_report.shard-{}-of-{}.txt".format(*shard)
        write_text(target_root / name,
                   "".join(f"bad\t{source}\t{error}\n" for source, error in sorted(failed)))
    return {"converted": len(todo) - len(failed), "skipped": len(pairs) - len(todo), "failed": failed}
