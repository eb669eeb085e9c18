"""Paths and constants shared by every script. ``--save_path`` (or $META_SR_SAVE_PATH) moves the data root.

Data layout under ``save_path`` (as the paper's code lays it out):
    voxceleb1/dev/wav/<spk>/<session>/<utt>.wav   voxceleb1/dev/feat/train_logfbank_nfilt40/<spk>/<session>/<utt>.npy
    voxceleb1/test/wav/...                        voxceleb1/test/feat/test_logfbank_nfilt40/...
    voxceleb2/dev/wav/... (converted from aac)    voxceleb2/dev/feat/train_logfbank_nfilt40/...
"""
import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent
save_path = os.environ.get("META_SR_SAVE_PATH", str(PROJECT_ROOT / "data"))
SAVED_MODEL_DIR = PROJECT_ROOT / "saved_model"
LISTS_DIR = PROJECT_ROOT / "lists"
VOX1_O_TRIALS = LISTS_DIR / "veri_test.txt"

SAMPLE_RATE = 16000
N_MELS = 40
TRAIN_FEAT_FOLDER = "train_logfbank_nfilt40"
TEST_FEAT_FOLDER = "test_logfbank_nfilt40"

# (dataset, split) -> (wav folder, feature folder), relative to save_path
SPLITS = {
    ("voxceleb1", "dev"): ("voxceleb1/dev/wav", f"voxceleb1/dev/feat/{TRAIN_FEAT_FOLDER}"),
    ("voxceleb1", "test"): ("voxceleb1/test/wav", f"voxceleb1/test/feat/{TEST_FEAT_FOLDER}"),
    ("voxceleb2", "dev"): ("voxceleb2/dev/wav", f"voxceleb2/dev/feat/{TRAIN_FEAT_FOLDER}"),
}
TRAIN_DATA = {"vox1": ("voxceleb1", "dev"), "vox2": ("voxceleb2", "dev")}


def feature_dir(root, dataset: str, split: str) -> Path:
    return Path(root) / SPLITS[(dataset, split)][1]


def wav_dir(root, dataset: str, split: str) -> Path:
    return Path(root) / SPLITS[(dataset, split)][0]


def model_dir(n_folder: int) -> Path:
    return SAVED_MODEL_DIR / f"baseline_{n_folder:03d}"


def checkpoint_path(n_folder: int, epoch: int) -> Path:
    return model_dir(n_folder) / f"checkpoint_{epoch:03d}.pth"
