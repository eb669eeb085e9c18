"""Keyed VoxCeleb downloads: VoxCeleb's endpoint by default, the exact request a mirror receives."""
import os

import pytest

import dataprep
from prep import download
from prep.download import Credentials, part_url, shown
from common.errors import UserInputError
from tests.test_dataprep import server, write_lists  # noqa: F401  (the local HTTP server fixture)


def test_key_uses_voxcelebs_keyed_endpoint_by_default():
    credentials = Credentials(key="K3y+/=&")
    base = download.default_base_url(credentials)
    assert base == "https://cn01.mmai.io/download/voxceleb"
    assert part_url(base, "vox2_dev_aac_partaa", credentials) == (
        "https://cn01.mmai.io/download/voxceleb?file=vox2_dev_aac_partaa&key=K3y%2B%2F%3D%26")
    assert download.default_base_url(Credentials(user="alice")) == download.DEFAULT_BASE_URL
    assert part_url(download.DEFAULT_BASE_URL, "vox1_test_wav.zip", Credentials(user="alice")) == (
        "https://www.robots.ox.ac.uk/~vgg/data/voxceleb/vox1a/vox1_test_wav.zip")
    assert part_url(base, "https://host/x/vox1_test_wav.zip", credentials) == (
        "https://host/x/vox1_test_wav.zip?key=K3y%2B%2F%3D%26")          # full-URL list entries


def test_shown_url_drops_only_the_key():
    url = "https://cn01.mmai.io/download/voxceleb?file=vox1_dev_wav_partaa&key=SECRET"
    assert shown(url) == "https://cn01.mmai.io/download/voxceleb?file=vox1_dev_wav_partaa"
    assert shown("https://h/vox1a/vox1_test_wav.zip?key=SECRET") == "https://h/vox1a/vox1_test_wav.zip"


def test_default_base_url_is_keyed_endpoint_in_dataprep(monkeypatch, tmp_path):
    """Without --base_url, a key sends the request to cn01.mmai.io (intercepted here: no network)."""
    asked = []

    def fake_urlopen(request, timeout):
        asked.append((request.full_url, dict(request.header_items())))
        raise download.urllib.error.HTTPError(request.full_url, 403, "Forbidden", {}, None)

    monkeypatch.setattr(download.urllib.request, "urlopen", fake_urlopen)
    lists = write_lists(tmp_path, {"vox1_dev_wav_partaa": b"x"})
    with pytest.raises(UserInputError, match=r"^download of https://cn01\.mmai\.io/download/voxceleb"
                                             r"\?file=vox1_dev_wav_partaa failed: HTTP 403 Forbidden "
                                             r"\(check --user/--password or --key\)$") as error:
        dataprep.main(["--save_path", str(tmp_path / "data"), "--download", "--key", "KEY123"] + lists)
    assert "KEY123" not in str(error.value)
    assert asked == [("https://cn01.mmai.io/download/voxceleb?file=vox1_dev_wav_partaa&key=KEY123", {})]


def test_keyed_resume_sends_range_to_the_keyed_url(server, tmp_path, monkeypatch, capsys):  # noqa: F811
    body = os.urandom(150_000)
    server.files["vox2_dev_aac_partab"] = body
    lists = write_lists(tmp_path, {"vox2_dev_aac_partab": body})
    save = tmp_path / "data"
    save.mkdir()
    (save / "vox2_dev_aac_partab.part").write_bytes(body[:70_000])
    monkeypatch.setenv("VOXCELEB_KEY", "ENVKEY")
    dataprep.main(["--save_path", str(save), "--download", "--base_url", server.url + "mirror/vox"] + lists)
    assert server.log == [{"path": "/mirror/vox?file=vox2_dev_aac_partab&key=ENVKEY",
                           "range": "bytes=70000-", "auth": None}]
    assert (save / "vox2_dev_aac_partab").read_bytes() == body
    output = capsys.readouterr()
    assert "ENVKEY" not in output.out + output.err
