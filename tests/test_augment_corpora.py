"""dataprep.py --download_augment / --extract_augment / --split_musan against a local HTTP server, with
small real archives under the real names (musan.tar.gz, rirs_noises.zip) and their computed MD5s."""
import hashlib
import io
import tarfile
import zipfile

import numpy as np
import pytest
import soundfile as sf

import dataprep
from common.errors import UserInputError, run_main
from prep import augment_corpora, download
from tests.test_dataprep import no_disk, server  # noqa: F401  (the local HTTP server fixture)

RATE = 16000
RNG = np.random.default_rng(15)
MUSAN = {"musan/noise/free-sound/noise-free-sound-0000.wav": RNG.integers(-900, 900, 11 * RATE, dtype=np.int16),
         "musan/music/fma/music-fma-0000.wav": RNG.integers(-900, 900, 3 * RATE, dtype=np.int16),
         "musan/speech/librivox/speech-librivox-0000.wav": RNG.integers(-900, 900, 8 * RATE + 5, dtype=np.int16)}
RIRS = {"RIRS_NOISES/simulated_rirs/smallroom/Room001/Room001-00001.wav": RNG.integers(-900, 900, 4000, dtype=np.int16),
        "RIRS_NOISES/simulated_rirs/mediumroom/Room002/Room002-00003.wav": RNG.integers(-900, 900, 6000, dtype=np.int16),
        "RIRS_NOISES/real_rirs_isotropic_noises/RVB2014_type1_rir_largeroom1_near_angla.wav":
            RNG.integers(-900, 900, 3000, dtype=np.int16)}
# (segment start in s, samples) expected from --split_musan: 5 s windows every 3 s, short files whole
SEGMENTS = {"musan_split/noise/free-sound/noise-free-sound-0000": (0, 3, 6),
            "musan_split/music/fma/music-fma-0000": (0,),
            "musan_split/speech/librivox/speech-librivox-0000": (0, 3)}


def wav_bytes(samples) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, samples, RATE, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def tar_gz(members: dict, extra=()) -> bytes:
    """A gzipped tar of ``members`` (path -> bytes) plus ``extra`` TarInfo (folders, links)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for info in extra:
            archive.addfile(info)
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def zip_of(members: dict) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("RIRS_NOISES/", b"")
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def musan_archive() -> bytes:
    folder = tarfile.TarInfo("musan/noise")
    folder.type = tarfile.DIRTYPE
    return tar_gz({**{k: wav_bytes(v) for k, v in MUSAN.items()}, "musan/README": b"MUSAN\n"}, [folder])


def serve(server, tmp_path, archives: dict, md5s=None):  # noqa: F811
    """Serve ``archives`` (name -> bytes) under OpenSLR-like paths; write the list file; its argv."""
    lines = []
    for name, body in archives.items():
        path = f"resources/{17 if 'musan' in name else 28}/{name}"
        server.files[path] = body
        lines.append(f"{server.url}{path} {(md5s or {}).get(name) or hashlib.md5(body).hexdigest()}")
    (tmp_path / "augment.txt").write_text("\n".join(lines) + "\n")
    return ["--augment_list", str(tmp_path / "augment.txt")]


def test_download_extract_split_then_nothing_again(server, tmp_path, capsys):  # noqa: F811
    archives = {"rirs_noises.zip": zip_of({k: wav_bytes(v) for k, v in RIRS.items()}),
                "musan.tar.gz": musan_archive()}
    argv = ["--save_path", str(tmp_path / "data"), "--download_augment", "--extract_augment", "--split_musan",
            "--workers", "1"] + serve(server, tmp_path, archives)
    dataprep.main(argv)
    save = tmp_path / "data"
    assert [entry["path"] for entry in server.log] == ["/resources/28/rirs_noises.zip",
                                                        "/resources/17/musan.tar.gz"]
    assert all(entry["auth"] is None and entry["range"] is None for entry in server.log)
    for name, body in archives.items():
        assert (save / name).read_bytes() == body
    for name, samples in {**MUSAN, **RIRS}.items():
        read, rate = sf.read(save / name, dtype="int16")
        assert rate == RATE
        np.testing.assert_array_equal(read, samples)
    assert (save / "musan/README").read_bytes() == b"MUSAN\n"
    for folder, starts in SEGMENTS.items():
        source = MUSAN[folder.replace("musan_split", "musan") + ".wav"]
        assert sorted(p.name for p in (save / folder).iterdir()) == [f"{s:05d}.wav" for s in starts]
        for start in starts:
            read, _ = sf.read(save / folder / f"{start:05d}.wav", dtype="int16")
            np.testing.assert_array_equal(read, source[start * RATE:(start + 5) * RATE])
    assert not list(save.rglob("*.tmp*"))
    out = capsys.readouterr().out
    assert "download: 2 archives downloaded, 0 already verified" in out
    assert "extract: rirs_noises.zip: 3 files written" in out and "extract: musan.tar.gz: 4 files written" in out
    assert "split: 3 MUSAN recordings, 6 segments written" in out
    dataprep.main(argv)                                   # everything verified and in place: no work
    assert len(server.log) == 2
    out = capsys.readouterr().out
    assert "download: 0 archives downloaded, 2 already verified" in out
    assert "rirs_noises.zip: 0 files written" in out and "musan.tar.gz: 0 files written" in out
    assert "6 segments written" not in out and "0 segments written" in out


def test_resume_with_range(server, tmp_path):  # noqa: F811
    body = musan_archive()
    argv = serve(server, tmp_path, {"musan.tar.gz": body})
    save = tmp_path / "data"
    save.mkdir()
    (save / "musan.tar.gz.part").write_bytes(body[:1000])
    dataprep.main(["--save_path", str(save), "--download_augment"] + argv)
    assert [(e["path"], e["range"]) for e in server.log] == [("/resources/17/musan.tar.gz", "bytes=1000-")]
    assert (save / "musan.tar.gz").read_bytes() == body and not (save / "musan.tar.gz.part").exists()


def test_bad_md5_is_one_error_line_and_nothing_unpacked(server, tmp_path, capsys):  # noqa: F811
    body = musan_archive()
    argv = serve(server, tmp_path, {"musan.tar.gz": body}, md5s={"musan.tar.gz": "0" * 32})
    save = tmp_path / "data"
    with pytest.raises(SystemExit) as exit_:
        run_main(lambda: dataprep.main(["--save_path", str(save), "--download_augment", "--extract_augment"]
                                       + argv))
    assert exit_.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"error: musan.tar.gz: MD5 mismatch after download (expected {'0' * 32}); the file was moved "
        f"aside to {save / 'musan.tar.gz.md5-mismatch'}; delete it and run again")
    assert sorted(p.name for p in save.iterdir()) == ["musan.tar.gz.md5-mismatch"]


@pytest.mark.parametrize("name", ["../evil.wav", "/tmp/evil_abs.wav", "musan/../../evil.wav"])
def test_tar_members_outside_are_refused(tmp_path, name):
    (tmp_path / "musan.tar.gz").write_bytes(tar_gz({name: b"owned"}))
    with pytest.raises(UserInputError, match="refusing member"):
        augment_corpora.extract_tar(tmp_path / "musan.tar.gz", tmp_path / "data")
    assert not any(p.name.startswith("evil") for p in tmp_path.rglob("*"))


def test_links_are_not_created(tmp_path):
    link = tarfile.TarInfo("musan/noise/link.wav")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    (tmp_path / "musan.tar.gz").write_bytes(tar_gz({"musan/noise/a.wav": b"RIFF"}, [link]))
    assert augment_corpora.extract_tar(tmp_path / "musan.tar.gz", tmp_path) == 1
    assert not (tmp_path / "musan/noise/link.wav").exists() and (tmp_path / "musan/noise/a.wav").is_file()


def test_damaged_archive_is_one_clear_error_and_leaves_only_whole_files(tmp_path):
    body = musan_archive()
    (tmp_path / "musan.tar.gz").write_bytes(body[:len(body) * 2 // 3])
    with pytest.raises(UserInputError, match=r"musan.tar.gz: not a readable tar archive or damaged .*run "
                                             r"--download_augment again$"):
        augment_corpora.extract_augment([("musan.tar.gz", "0" * 32)], tmp_path)
    for path in (p for p in tmp_path.rglob("*") if p.is_file() and p.name != "musan.tar.gz"):
        assert path.read_bytes() == wav_bytes(MUSAN[path.relative_to(tmp_path).as_posix()])
    (tmp_path / "rirs_noises.zip").write_bytes(b"not a zip")
    with pytest.raises(UserInputError, match="rirs_noises.zip: not a readable zip file"):
        augment_corpora.extract_augment([("rirs_noises.zip", "0" * 32)], tmp_path)


def test_steps_out_of_order_and_no_space(tmp_path, monkeypatch):
    with pytest.raises(UserInputError, match=r"musan.tar.gz: archive not found; run with --download_augment"):
        augment_corpora.extract_augment([("https://host/resources/17/musan.tar.gz", "0" * 32)], tmp_path)
    with pytest.raises(UserInputError, match=r"musan: no such folder; run with --extract_augment first"):
        augment_corpora.split_musan(tmp_path)
    (tmp_path / "musan.tar.gz").write_bytes(musan_archive())
    no_disk(monkeypatch)
    with pytest.raises(UserInputError, match=r"disk space for extracting musan.tar.gz \(estimated\)"):
        augment_corpora.extract_tar(tmp_path / "musan.tar.gz", tmp_path)
    assert not (tmp_path / "musan").exists()


def test_segment_starts():
    assert augment_corpora.segment_starts(5 * RATE, RATE) == [0]
    assert augment_corpora.segment_starts(2 * RATE, RATE) == [0]
    assert augment_corpora.segment_starts(11 * RATE, RATE) == [0, 3 * RATE, 6 * RATE]
    assert augment_corpora.segment_starts(11 * RATE - 1, RATE) == [0, 3 * RATE]


def test_shipped_list_names_the_openslr_archives():
    entries = augment_corpora.read_augment_list(dataprep.parse_args([]).augment_list)
    assert entries == [("https://www.openslr.org/resources/28/rirs_noises.zip", "e6f48e257286e05de56413b4779d8ffb"),
                       ("https://www.openslr.org/resources/17/musan.tar.gz", "0c472d4fc0c5141eca47ad1ffeb2a7df")]
    assert sorted(download.part_file_name(url) for url, _ in entries) == sorted(augment_corpora.TOP_FOLDERS)


def test_bad_list_and_unreadable_recording_are_named(tmp_path, capsys):
    (tmp_path / "augment.txt").write_text("musan.tar.gz 0c472d4fc0c5141eca47ad1ffeb2a7df\n")
    with pytest.raises(SystemExit) as exit_:
        run_main(lambda: dataprep.main(["--save_path", str(tmp_path), "--download_augment",
                                        "--augment_list", str(tmp_path / "augment.txt")]))
    assert exit_.value.code == 2 and capsys.readouterr().err == (
        f"error: {tmp_path / 'augment.txt'}: expected 'URL md5' rows, got 'musan.tar.gz' (an http:// or "
        "https:// URL)\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["augment.txt"]
    bad = tmp_path / "musan/noise/free-sound/noise-free-sound-0001.wav"
    bad.parent.mkdir(parents=True)
    bad.write_text("not audio")
    with pytest.raises(UserInputError, match=r"^splitting MUSAN failed: .*noise-free-sound-0001.wav"):
        augment_corpora.split_musan(tmp_path, workers=1)
    assert not (tmp_path / "musan_split").exists() or not list((tmp_path / "musan_split").rglob("*.wav"))
