"""dataprep.py --download_pretrained against a local HTTP server standing in for Google Drive."""
import io

import pytest
import torch

import dataprep
from common.errors import UserInputError
from model.checkpoint import load_encoder, resolve_checkpoint
from model.model import background_resnet
from prep import pretrained
from prep.download import sha256_of
from tests.test_dataprep import server  # noqa: F401  (the local HTTP server fixture)

FILE_ID = pretrained.PRETRAINED_FILE_ID
UUID = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
CONFIRMED = f"/download?id={FILE_ID}&export=download&confirm=t&uuid={UUID}"


def confirmation_page(action: str) -> bytes:
    """Drive's virus-scan warning for a large file, as it is laid out."""
    return (f'<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head><body>'
            f'<p>Google Drive can\'t scan this file for viruses.</p>'
            f'<form id="download-form" action="{action}" method="get">'
            f'<input type="submit" id="uc-download-link" value="Download anyway"/>'
            f'<input type="hidden" name="id" value="{FILE_ID}"><input type="hidden" name="export" '
            f'value="download"><input type="hidden" name="confirm" value="t"><input type="hidden" '
            f'name="uuid" value="{UUID}"></form></body></html>').encode()


def checkpoint_bytes(num_classes=5994, seed=0) -> bytes:
    """A checkpoint laid out as the authors' ({'epoch', 'state_dict', 'optimizer'})."""
    torch.manual_seed(seed)
    model = background_resnet(num_classes=num_classes, backbone="resnet34")
    buffer = io.BytesIO()
    torch.save({"epoch": 101, "state_dict": model.state_dict(),
                "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "params": [0, 1]}]}}, buffer)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def authors_file() -> bytes:
    return checkpoint_bytes()


@pytest.fixture
def drive(server, authors_file):  # noqa: F811
    server.files["uc"] = confirmation_page(server.url + "download")
    server.types["uc"] = "text/html"
    server.files["download"] = authors_file
    return server


def log(server) -> list:
    return [(entry["path"], entry["range"]) for entry in server.log]


def test_confirmation_page_then_file_lands_where_eer_full_finds_it(drive, authors_file, tmp_path, capsys):
    models = tmp_path / "saved_model"
    dataprep.main(["--download_pretrained", "--pretrained_url", drive.url + "uc", "--model_dir", str(models)])
    assert log(drive) == [(f"/uc?export=download&id={FILE_ID}", None), (CONFIRMED, None)]
    path = resolve_checkpoint(0, 100, None, models)       # what EER_full.py --n_folder 0 --cp_num 100 opens
    assert path == models / "baseline_000" / "checkpoint_100.pth"
    assert path.read_bytes() == authors_file
    assert sorted(p.name for p in path.parent.iterdir()) == ["checkpoint_100.pth"]
    model, _ = load_encoder(path)
    assert (model.num_classes, model.backbone) == (5994, "resnet34")
    assert capsys.readouterr().out == (f"pretrained: {path} downloaded (structure verified; no SHA-256 pinned yet); "
                                       f"evaluate it with EER_full.py --n_folder 0 --cp_num 100 --model_dir {models}\n")


def test_a_partial_download_resumes_with_a_range_request(drive, authors_file, tmp_path):
    folder = tmp_path / "baseline_000"
    folder.mkdir()
    (folder / "checkpoint_100.pth.part").write_bytes(authors_file[:1_000_000])
    path, outcome = pretrained.download_pretrained(tmp_path, drive.url + "uc")
    assert outcome == "downloaded" and path.read_bytes() == authors_file
    assert log(drive) == [(f"/uc?export=download&id={FILE_ID}", None), (CONFIRMED, "bytes=1000000-")]


def test_a_small_file_served_without_confirmation_is_taken_as_is(server, authors_file, tmp_path):  # noqa: F811
    server.files["uc"] = authors_file
    path, outcome = pretrained.download_pretrained(tmp_path, server.url + "uc")
    assert outcome == "downloaded" and path.read_bytes() == authors_file
    assert log(server) == [(f"/uc?export=download&id={FILE_ID}", None)]


def test_checksum_checked_when_known_and_a_verified_file_is_not_fetched_again(drive, authors_file, tmp_path):
    with pytest.raises(UserInputError, match=r"checkpoint_100\.pth\.part: SHA-256 mismatch \(expected 0{64}\)"):
        pretrained.download_pretrained(tmp_path, drive.url + "uc", sha256="0" * 64)
    folder = tmp_path / "baseline_000"
    assert sorted(p.name for p in folder.iterdir()) == ["checkpoint_100.pth.sha256-mismatch"]
    (folder / "checkpoint_100.pth.sha256-mismatch").unlink()
    right = sha256_of(_write(tmp_path / "copy", authors_file))
    assert pretrained.download_pretrained(tmp_path, drive.url + "uc", sha256=right)[1] == "downloaded"
    requests = len(drive.log)
    assert pretrained.download_pretrained(tmp_path, drive.url + "uc", sha256=right)[1] == "already present"
    assert len(drive.log) == requests


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


def test_drive_quota_page_instead_of_the_file_is_refused(drive, tmp_path):
    drive.files["download"] = (b"<html><head><title>Google Drive - Quota exceeded</title></head><body>Too many "
                               b"users have viewed or downloaded this file recently.</body></html>")
    drive.types["download"] = "text/html"
    with pytest.raises(UserInputError, match=r"answered with a web page \('Google Drive - Quota exceeded'\) "
                                             r"that offers no download"):
        pretrained.download_pretrained(tmp_path, drive.url + "uc")
    assert not (tmp_path / "baseline_000" / "checkpoint_100.pth").exists()


def test_an_html_page_saved_as_pth_is_refused(drive, tmp_path):
    drive.files["download"] = b"\n<!DOCTYPE html><html><body>Sign in</body></html>"   # sent as octet-stream
    with pytest.raises(UserInputError, match=r"checkpoint_100\.pth\.part: an HTML page, not a checkpoint"):
        pretrained.download_pretrained(tmp_path, drive.url + "uc")
    folder = tmp_path / "baseline_000"
    assert sorted(p.name for p in folder.iterdir()) == ["checkpoint_100.pth.not-a-checkpoint"]


def test_another_model_is_not_the_authors_checkpoint(drive, tmp_path):
    drive.files["download"] = checkpoint_bytes(num_classes=7)
    with pytest.raises(UserInputError, match=r"not the paper's checkpoint: expected the 223 weights of a "
                                             r"\{'num_classes': 5994, 'channels': 32, 'backbone': 'resnet34'\}"):
        pretrained.download_pretrained(tmp_path, drive.url + "uc")


def test_an_existing_different_file_is_never_replaced(drive, authors_file, tmp_path):
    folder = tmp_path / "baseline_000"
    folder.mkdir()
    own = checkpoint_bytes(seed=1)
    (folder / "checkpoint_100.pth").write_bytes(own)
    with pytest.raises(UserInputError, match=r"checkpoint_100\.pth exists and is a different file; refusing "
                                             r"to replace it \(the verified download is kept as .*\.part"):
        pretrained.download_pretrained(tmp_path, drive.url + "uc")
    assert (folder / "checkpoint_100.pth").read_bytes() == own
    assert (folder / "checkpoint_100.pth.part").read_bytes() == authors_file
    (folder / "checkpoint_100.pth").write_bytes(authors_file)          # the same file: nothing to do
    assert pretrained.download_pretrained(tmp_path, drive.url + "uc")[1] == "already present"
    assert sorted(p.name for p in folder.iterdir()) == ["checkpoint_100.pth"]


def test_a_file_drive_does_not_have_is_one_error_line(server, tmp_path):  # noqa: F811
    with pytest.raises(UserInputError, match=rf"^download of {server.url}uc\?export=download&id={FILE_ID} failed: "
                                             r"HTTP 404 Not Found$"):          # no VoxCeleb credentials hint
        pretrained.download_pretrained(tmp_path, server.url + "uc")
    assert not (tmp_path / "baseline_000" / "checkpoint_100.pth").exists()


def test_an_older_confirmation_page_with_a_confirm_link_is_followed(drive, authors_file, tmp_path):
    drive.files["uc"] = (f'<html><head><title>Google Drive - Virus scan warning</title></head><body>'
                         f'<a id="uc-download-link" href="/download?export=download&amp;confirm=Xy_1&amp;id={FILE_ID}">'
                         f'Download anyway</a></body></html>').encode()
    path, outcome = pretrained.download_pretrained(tmp_path, drive.url + "uc")
    assert outcome == "downloaded" and path.read_bytes() == authors_file
    assert log(drive)[1] == (f"/download?export=download&confirm=Xy_1&id={FILE_ID}", None)
