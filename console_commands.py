"""The console commands of the installed package (``pyproject.toml`` [project.scripts]).

Each runs one script's ``main`` as ``python <script>.py`` does: bad input is one ``error: ...`` line
and exit code 2 (``common.errors.run_main``). ``python train.py ...`` from a checkout is unchanged.
"""
import importlib

from common.errors import run_main

COMMANDS = {          # command -> the module whose main() it runs
    "metasr-train": "train",
    "metasr-eer-full": "EER_full",
    "metasr-eer-short": "EER_short",
    "metasr-identification": "identification",
    "metasr-dataprep": "dataprep",
    "metasr-features": "feat_extract.feature_extraction",
    "metasr-verify": "verify",
    "metasr-embed": "embed",
    "metasr-score": "score",
    "metasr-export": "export",
}


def run(command: str) -> None:
    run_main(importlib.import_module(COMMANDS[command]).main)


def train():
    run("metasr-train")


def eer_full():
    run("metasr-eer-full")


def eer_short():
    run("metasr-eer-short")


def identification():
    run("metasr-identification")


def dataprep():
    run("metasr-dataprep")


def features():
    run("metasr-features")


def verify():
    run("metasr-verify")


def embed():
    run("metasr-embed")


def score():
    run("metasr-score")


def export():
    run("metasr-export")
