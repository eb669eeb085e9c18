"""VoxCeleb1-O/E/H trial lists: where each protocol's list lives, fetching them (`dataprep.py --download_lists`)."""
from pathlib import Path

import pytest

import configure
from common.errors import UserInputError


def test_protocol_list_path_names_each_list_in_the_lists_folder(tmp_path):
    assert configure.protocol_list_path("O") == configure.LISTS_DIR / "veri_test2.txt"
    assert configure.protocol_list_path("O-original") == configure.VOX1_O_TRIALS
    assert configure.protocol_list_path("E", tmp_path) == tmp_path / "list_test_all2.txt"
    assert configure.protocol_list_path("H-original", str(tmp_path)) == Path(tmp_path) / "list_test_hard.txt"
    assert sorted(configure.PROTOCOL_LISTS) == ["E", "E-original", "H", "H-original", "O", "O-original"]
    assert configure.DEFAULT_PROTOCOL == "O"


def test_an_unknown_protocol_names_the_choices():
    with pytest.raises(UserInputError, match="unknown protocol 'X'; choose one of O, O-original, E"):
        configure.protocol_list_path("X")


# ---------------------------------------------------------------------------------- --download_lists
import hashlib  # noqa: E402

import dataprep  # noqa: E402
from prep import trial_lists  # noqa: E402
from tests.test_dataprep import server  # noqa: E402,F401  (the local HTTP server fixture)

ROWS = ["1 id10270/x6uYqmx31kE/00001.wav id10270/8jEAjG6SegY/00008.wav",
        "0 id10270/x6uYqmx31kE/00001.wav id10300/ize_eiCFEg0/00003.wav",
        "1 id10309/0cYFdtyWVds/00005.wav id10309/Zx-zA-D_DvI/00001.wav"]


def small_list(n: int) -> str:
    return "\r\n".join(ROWS[i % 3] for i in range(n))          # CRLF, no final newline, as published


def sha_of_rows(text: str) -> str:
    return hashlib.sha256("".join(" ".join(line.split()) + "\n" for line in text.splitlines()).encode()).hexdigest()


@pytest.fixture
def published(server, monkeypatch):  # noqa: F811
    """The six lists on the local server (the real VoxCeleb1-O original, small stand-ins for the rest)."""
    real = configure.VOX1_O_TRIALS.read_bytes()
    expected = {"veri_test.txt": trial_lists.TRIAL_LISTS["veri_test.txt"]}
    server.files["meta/veri_test.txt"] = real
    stand_ins = {"veri_test2.txt": 5, "list_test_all.txt": 6, "list_test_all2.txt": 7, "list_test_hard.txt": 8,
                 "list_test_hard2.txt": 9}
    for name, n in stand_ins.items():
        server.files[f"meta/{name}"] = small_list(n).encode()
        expected[name] = (n, sum(ROWS[i % 3].startswith("1") for i in range(n)), sha_of_rows(small_list(n)))
    monkeypatch.setattr(trial_lists, "TRIAL_LISTS", expected)
    return server


def test_every_protocol_list_has_its_published_count():
    assert set(trial_lists.TRIAL_LISTS) == set(configure.PROTOCOL_LISTS.values())
    assert trial_lists.TRIAL_LISTS["veri_test.txt"][:2] == (37_720, 18_860)
    assert trial_lists.TRIAL_LISTS["veri_test2.txt"][:2] == (37_611, 18_802)


def test_the_shipped_voxceleb1_o_list_matches_its_pin_whatever_its_line_ends(tmp_path):
    text = configure.VOX1_O_TRIALS.read_bytes().decode()
    assert "\r\n" in text and not text.endswith("\n")
    trial_lists.check_list(configure.VOX1_O_TRIALS, "veri_test.txt", trial_lists.TRIAL_LISTS)
    unix = tmp_path / "veri_test.txt"
    unix.write_bytes((text.replace("\r\n", "\n") + "\n").encode())
    trial_lists.check_list(unix, "veri_test.txt", trial_lists.TRIAL_LISTS)
    unix.write_text(text.replace("1 id10270/x6uYqmx31kE/00001.wav id10270/8jEAjG6SegY/00008.wav",
                                 "1 id10270/x6uYqmx31kE/00001.wav id10270/8jEAjG6SegY/00009.wav", 1))
    with pytest.raises(UserInputError, match="SHA-256 of the rows is [0-9a-f]{64}, expected 303b2b65"):
        trial_lists.check_list(unix, "veri_test.txt", trial_lists.TRIAL_LISTS)


def test_download_lists_fetches_each_list_once(published, tmp_path, capsys):
    lists = tmp_path / "lists"
    dataprep.main(["--download_lists", "--lists_url", published.url + "meta/", "--lists_dir", str(lists)])
    names = list(configure.PROTOCOL_LISTS.values())
    assert [(entry["path"], entry["range"]) for entry in published.log] == [(f"/meta/{n}", None) for n in names]
    for name in names:
        assert (lists / name).read_bytes() == published.files[f"meta/{name}"]
    assert sorted(p.name for p in lists.iterdir()) == sorted(names)
    assert configure.protocol_list_path("H", lists).read_bytes() == published.files["meta/list_test_hard2.txt"]
    assert f"lists: list_test_all2.txt downloaded in {lists}" in capsys.readouterr().out
    dataprep.main(["--download_lists", "--lists_url", published.url + "meta/", "--lists_dir", str(lists)])
    assert len(published.log) == len(names)                           # verified lists are not fetched again
    assert f"lists: veri_test2.txt already present in {lists}" in capsys.readouterr().out


def test_a_partial_list_resumes(published, tmp_path):
    body = published.files["meta/veri_test.txt"]
    (tmp_path / "veri_test.txt.part").write_bytes(body[:500_000])
    trial_lists.download_lists(tmp_path, published.url + "meta/")
    assert [entry["range"] for entry in published.log if entry["path"] == "/meta/veri_test.txt"] == [
        "bytes=500000-"]
    assert (tmp_path / "veri_test.txt").read_bytes() == body


@pytest.mark.parametrize("body, message", [
    (small_list(5).replace("id10300", "id10301"), r"SHA-256 of the rows is [0-9a-f]{64}, expected"),
    (small_list(4), r"4 trials, but veri_test2\.txt has 5"),
    (small_list(5).replace("0 id10270", "1 id10270"), r"5 target trials, but veri_test2\.txt has 3"),
    (b"<!DOCTYPE html><html><title>Not Found</title></html>".decode(), r"an HTML page, not a trial list"),
    (small_list(5).replace("1 id10270/x6", "2 id10270/x6", 1), r"veri_test2\.txt\.part:1: expected 'label enroll test'"),
    (small_list(5).replace("id10309/0cYFdtyWVds/00005.wav", "id10309/0cYFdtyWVds/00005.wav extra"),
     r"veri_test2\.txt\.part:3: expected 'label enroll test'"),
    (small_list(5).replace("id10300/ize_eiCFEg0/00003.wav", "wav/id10300/ize_eiCFEg0/00003.wav"),
     r"veri_test2\.txt\.part:2: expected 'label enroll test'"),
])
def test_a_wrong_list_is_moved_aside_never_put_in_place(published, tmp_path, body, message):
    published.files["meta/veri_test2.txt"] = body.encode()
    assert trial_lists.TRIAL_LISTS["veri_test2.txt"][0] == 5
    with pytest.raises(UserInputError, match=message):
        trial_lists.download_lists(tmp_path, published.url + "meta/")
    assert not (tmp_path / "veri_test2.txt").exists()
    assert (tmp_path / "veri_test2.txt.not-the-list").read_bytes() == body.encode()


def test_an_existing_different_list_is_never_replaced(published, tmp_path):
    (tmp_path / "veri_test2.txt").write_bytes(small_list(6).encode())
    with pytest.raises(UserInputError, match=r"6 trials, but veri_test2\.txt has 5; .* exists and is not the "
                                             r"published list: refusing to replace it"):
        trial_lists.download_lists(tmp_path, published.url + "meta/")
    assert (tmp_path / "veri_test2.txt").read_bytes() == small_list(6).encode()
