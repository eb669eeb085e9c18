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
