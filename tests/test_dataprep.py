"""dataprep.py against real pieces: a local HTTP server with Range support, real zips, real ffmpeg."""
import base64
import hashlib
import io
import os
import shutil
import subprocess
import threading
import urllib.parse
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import soundfile as sf

import dataprep
from prep import download
from common.errors import UserInputError


class RangeHandler(BaseHTTPRequestHandler):
    """Serves ``server.files`` (name -> bytes; Content-Type from ``server.types``, default
    application/octet-stream), honouring ``Range: bytes=N-``; logs every request."""

    def do_GET(self):  # noqa: N802
        path, _, query = self.path.partition("?")
        name = dict(urllib.parse.parse_qsl(query)).get("file") or path.lstrip("/")   # keyed: ?file=<part>
        self.server.log.append({"path": self.path, "range": self.headers.get("Range"),
                                "auth": self.headers.get("Authorization")})
        if name not in self.server.files:
            self.send_error(404)
            return
        body, start = self.server.files[name], 0
        if self.headers.get("Range"):
            start = int(self.headers["Range"].removeprefix("bytes=").rstrip("-"))
            if start >= len(body):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.send_header("Content-Type", self.server.types.get(name, "application/octet-stream"))
        self.end_headers()
        self.wfile.write(body[start:])

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    httpd.files, httpd.log, httpd.types = {}, [], {}
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}/"
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def write_lists(folder, parts: dict, archives=()):
    (folder / "parts.txt").write_text("\r\n".join(f"{n} {md5(b)}" for n, b in parts.items()))
    (folder / "archives.txt").write_text("".join(f"{g} {a} {m}\n" for g, a, m in archives))
    return ["--parts_list", str(folder / "parts.txt"), "--archives_list", str(folder / "archives.txt")]


def wav_zip(prefix: str, members: dict) -> bytes:
    """A real zip of ``prefix/<key>.wav`` members (member key -> int16 samples)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for key, samples in members.items():
            wav = io.BytesIO()
            sf.write(wav, samples, 16000, format="WAV", subtype="PCM_16")
            archive.writestr(f"{prefix}/{key}.wav", wav.getvalue())
    return buffer.getvalue()


def test_download_with_key_then_skip(server, tmp_path, capsys):
    parts = {"vox1_dev_wav_partaa": os.urandom(300_000), "vox1_dev_wav_partab": os.urandom(5000)}
    server.files.update(parts)
    lists = write_lists(tmp_path, parts)
    save = tmp_path / "data"
    mirror = server.url + "download/voxceleb"          # VoxCeleb's keyed endpoint, served locally
    dataprep.main(["--save_path", str(save), "--download", "--base_url", mirror,
                   "--key", "S3CRETKEY"] + lists)
    for name, body in parts.items():
        assert (save / name).read_bytes() == body
    assert [(entry["path"], entry["range"], entry["auth"]) for entry in server.log] == [
        ("/download/voxceleb?file=vox1_dev_wav_partaa&key=S3CRETKEY", None, None),
        ("/download/voxceleb?file=vox1_dev_wav_partab&key=S3CRETKEY", None, None)]
    dataprep.main(["--save_path", str(save), "--download", "--base_url", mirror,
                   "--key", "S3CRETKEY"] + lists)
    assert len(server.log) == 2                       # verified parts are not fetched again
    output = capsys.readouterr()
    assert "S3CRETKEY" not in output.out + output.err
    assert "download: 0 parts downloaded, 2 already verified" in output.out


def test_resume_partial_with_range_and_password_from_env(server, tmp_path, monkeypatch, capsys):
    body = os.urandom(200_000)
    server.files["vox1_test_wav.zip"] = body
    lists = write_lists(tmp_path, {"vox1_test_wav.zip": body})
    save = tmp_path / "data"
    save.mkdir()
    (save / "vox1_test_wav.zip.part").write_bytes(body[:123_456])
    monkeypatch.setenv("VOXCELEB_PASSWORD", "pa55word")
    dataprep.main(["--save_path", str(save), "--download", "--base_url", server.url, "--user", "alice"]
                  + lists)
    assert server.log[0]["range"] == "bytes=123456-"
    assert base64.b64decode(server.log[0]["auth"].removeprefix("Basic ")) == b"alice:pa55word"
    assert (save / "vox1_test_wav.zip").read_bytes() == body
    assert not (save / "vox1_test_wav.zip.part").exists()
    output = capsys.readouterr()
    assert "pa55word" not in output.out + output.err


def test_md5_mismatch_moved_aside(server, tmp_path):
    good = os.urandom(10_000)
    server.files["vox1_dev_wav_partaa"] = b"corrupted" + good[9:]
    lists = write_lists(tmp_path, {"vox1_dev_wav_partaa": good})
    save = tmp_path / "data"
    with pytest.raises(UserInputError, match="MD5 mismatch after download") as error:
        dataprep.main(["--save_path", str(save), "--download", "--base_url", server.url] + lists)
    assert "vox1_dev_wav_partaa.md5-mismatch" in str(error.value)
    assert (save / "vox1_dev_wav_partaa.md5-mismatch").read_bytes() == server.files["vox1_dev_wav_partaa"]
    assert not (save / "vox1_dev_wav_partaa").exists()


def test_http_errors_are_clear(server, tmp_path):
    lists = write_lists(tmp_path, {"vox1_dev_wav_partaa": b"x"})
    with pytest.raises(UserInputError, match=r"partaa failed: HTTP 404 Not Found$") as error:
        dataprep.main(["--save_path", str(tmp_path), "--download", "--base_url", server.url,
                       "--key", "K3Y"] + lists)
    assert "K3Y" not in str(error.value)


def test_extract_joins_parts_and_lays_out(tmp_path):
    rng = np.random.default_rng(0)
    dev = {"id10001/abcdefghijk/00001": rng.integers(-3000, 3000, 4000, dtype=np.int16),
           "id10002/bcdefghijkl/00001": rng.integers(-3000, 3000, 5000, dtype=np.int16)}
    test = {"id10270/cdefghijklm/00001": rng.integers(-3000, 3000, 3000, dtype=np.int16)}
    dev_zip, test_zip = wav_zip("wav", dev), wav_zip("wav", test)
    save = tmp_path / "data"
    save.mkdir()
    (save / "vox1_dev_wav_partaa").write_bytes(dev_zip[:1000])
    (save / "vox1_dev_wav_partab").write_bytes(dev_zip[1000:])
    (save / "vox1_test_wav.zip").write_bytes(test_zip)
    lists = write_lists(tmp_path, {"vox1_dev_wav_partaa": dev_zip[:1000], "vox1_dev_wav_partab": dev_zip[1000:],
                                   "vox1_test_wav.zip": test_zip},
                        [("vox1_dev_wav_parta*", "vox1_dev_wav.zip", md5(dev_zip))])
    dataprep.main(["--save_path", str(save), "--extract"] + lists)
    assert (save / "vox1_dev_wav.zip").read_bytes() == dev_zip
    for split, members in (("dev", dev), ("test", test)):
        for key, samples in members.items():
            read, rate = sf.read(save / f"voxceleb1/{split}/wav/{key}.wav", dtype="int16")
            np.testing.assert_array_equal(read, samples)
    written = download.extract_archive(save / "vox1_dev_wav.zip", save / "voxceleb1/dev/wav")
    assert written == 0                                 # already extracted files are kept


@pytest.mark.parametrize("member", ["../../evil.txt", "/tmp/evil_abs.txt", "wav/id10001/../../../evil.txt"])
def test_zip_slip_refused(tmp_path, member):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(member, b"owned")
    (tmp_path / "vox1_test_wav.zip").write_bytes(buffer.getvalue())
    target = tmp_path / "data" / "voxceleb1/test/wav"
    with pytest.raises(UserInputError, match="refusing member"):
        download.extract_archive(tmp_path / "vox1_test_wav.zip", target)
    assert not any(p.name.startswith("evil") for p in tmp_path.rglob("*"))


def test_concatenation_md5_mismatch(tmp_path):
    (tmp_path / "vox2_dev_aac_partaa").write_bytes(b"abc")
    with pytest.raises(UserInputError, match="MD5 mismatch after concatenation"):
        download.concatenate_archives(tmp_path, [("vox2_dev_aac_parta*", "vox2_dev_aac.zip", "0" * 32)])
    assert (tmp_path / "vox2_dev_aac.zip.md5-mismatch").read_bytes() == b"abc"


def test_disk_space_checked(tmp_path, monkeypatch):
    monkeypatch.setattr(download.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10, 5, 5))
    (tmp_path / "vox2_dev_aac_partaa").write_bytes(b"0123456789")
    with pytest.raises(UserInputError, match=r"needs 0\.00 GiB, 0\.00 GiB available"):
        download.concatenate_archives(tmp_path, [("vox2_dev_aac_parta*", "vox2_dev_aac.zip", "0" * 32)])


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed (CI installs it)")
def test_convert_m4a_with_real_ffmpeg(tmp_path):
    save = tmp_path / "data"
    source = tmp_path / "src.wav"
    t = np.arange(44100) / 44100
    sf.write(source, np.stack([0.4 * np.sin(2 * np.pi * 300 * t)] * 2, axis=1), 44100)
    m4a = save / "voxceleb2/dev/aac/id00012/abcdefghijk/00001.m4a"
    m4a.parent.mkdir(parents=True)
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(source), str(m4a)], check=True)
    dataprep.main(["--save_path", str(save), "--convert", "--workers", "2"])
    wav = save / "voxceleb2/dev/wav/id00012/abcdefghijk/00001.wav"
    info = sf.info(str(wav))
    assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
    assert abs(info.frames - 16000) < 2048
    mtime = wav.stat().st_mtime_ns
    assert download.convert_aac(save, workers=1) == {"converted": 0, "skipped": 1, "failed": []}
    assert wav.stat().st_mtime_ns == mtime
    (m4a.parent / "00002.m4a").write_bytes(b"not really aac")
    result = download.convert_aac(save, workers=1)
    assert result["converted"] == 0 and len(result["failed"]) == 1
    assert not (m4a.parent.parent.parent.parent / "wav/id00012/abcdefghijk/00002.wav").exists()


def test_nothing_to_do(tmp_path):
    with pytest.raises(UserInputError, match="nothing to do"):
        dataprep.main(["--save_path", str(tmp_path)])


def test_malformed_list_names_line(tmp_path):
    (tmp_path / "parts.txt").write_text("vox1_dev_wav_partaa e395d020928bc15670b570a21695ed96\n\nbroken\n")
    with pytest.raises(UserInputError, match=r"parts.txt:3: expected 2 fields"):
        download.read_parts_list(tmp_path / "parts.txt")


def no_disk(monkeypatch, free_bytes=1000):
    monkeypatch.setattr(download.shutil, "disk_usage",
                        lambda path: shutil._ntuple_diskusage(10 ** 9, 10 ** 9 - free_bytes, free_bytes))


def test_disk_space_checked_before_download(server, tmp_path, monkeypatch):
    body = os.urandom(300_000)
    server.files["vox1_dev_wav_partaa"] = body
    lists = write_lists(tmp_path, {"vox1_dev_wav_partaa": body})
    no_disk(monkeypatch)
    with pytest.raises(UserInputError, match=r"disk space for downloading vox1_dev_wav_partaa in .*: "
                                             r"needs 0\.00 GiB, 0\.00 GiB available"):
        dataprep.main(["--save_path", str(tmp_path / "data"), "--download", "--base_url", server.url,
                       "--key", "K"] + lists)
    assert not (tmp_path / "data" / "vox1_dev_wav_partaa").exists()


def test_disk_space_checked_before_extraction(tmp_path, monkeypatch):
    (tmp_path / "vox1_test_wav.zip").write_bytes(wav_zip("wav", {"id10001/abcdefghijk/00001": np.zeros(40_000, np.int16)}))
    no_disk(monkeypatch)
    target = tmp_path / "data" / "voxceleb1/test/wav"
    with pytest.raises(UserInputError, match=r"disk space for extracting vox1_test_wav.zip"):
        download.extract_archive(tmp_path / "vox1_test_wav.zip", target)
    assert not list(tmp_path.rglob("*.wav"))


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed (CI installs it)")
def test_disk_space_checked_before_conversion(tmp_path, monkeypatch):
    m4a = tmp_path / "voxceleb2/dev/aac/id00012/abcdefghijk/00001.m4a"
    m4a.parent.mkdir(parents=True)
    m4a.write_bytes(b"\0" * 100_000)
    no_disk(monkeypatch)
    with pytest.raises(UserInputError, match=r"disk space for converting to wav \(estimated\)"):
        download.convert_aac(tmp_path, workers=1)
    assert not (tmp_path / "voxceleb2/dev/wav").exists() or not list((tmp_path / "voxceleb2/dev/wav").rglob("*"))
