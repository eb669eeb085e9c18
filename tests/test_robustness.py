"""Issue 7 gaps: bad inputs fed to the real commands (subprocess where the command line itself matters,
``run_main(main)`` in-process elsewhere: same exit code and error line, no interpreter start),
atomic writes under SIGKILL, and a source audit (every write goes through data_loading/files.py; no
shell strings, no unpickling outside the benchmark baseline)."""
import ast
import contextlib
import importlib
import io
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from common.errors import run_main
import configure
from model.checkpoint import save_checkpoint
from model.model import background_resnet
from tests.conftest import ROOT, write_random_features

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
TRAIN_FEAT = "voxceleb2/dev/feat/train_logfbank_nfilt40"


@pytest.fixture(autouse=True)
def isolated(monkeypatch):
    """One torch thread (shared 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run_script(*argv, timeout=180):
    """The real command in a fresh interpreter."""
    return subprocess.run([sys.executable, *map(str, argv)], cwd=ROOT, env=ENV, capture_output=True,
                          text=True, timeout=timeout)


def run_entry(module_name, *argv):
    """A script's ``main`` through ``run_main``, as ``python <script>`` runs it."""
    main = importlib.import_module(module_name).main
    stdout, stderr, code = io.StringIO(), io.StringIO(), 0
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            run_main(lambda: main([str(a) for a in argv]))
        except SystemExit as exit_:
            code = exit_.code
    return subprocess.CompletedProcess(argv, code, stdout.getvalue(), stderr.getvalue())


def error_line(result) -> str:
    """The one ``error: ...`` line of a failed run (exit code 2, no traceback)."""
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    errors = [line for line in result.stderr.replace("\r", "\n").splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr[-2000:]
    return errors[0]


def tiny_checkpoint(path, num_classes=3, channels=4, epoch=1):
    torch.manual_seed(0)
    save_checkpoint(path, epoch=epoch, state_dict=background_resnet(num_classes, channels=channels).state_dict(),
                    optimizer={})
    return path


# ------------------------------------------------------------------------------------- evaluation data
@pytest.fixture(scope="module")
def evaluation_data(tmp_path_factory):
    """VoxCeleb1 test features (3 speakers x 3 utterances), a width-4 checkpoint, and the same trial
    list twice: clean (LF, final newline) and messy (CRLF, blank and blank-looking lines, no final newline)."""
    base = tmp_path_factory.mktemp("robust_eval")
    test_root = write_random_features(configure.feature_dir(base / "data", "voxceleb1", "test"), 3, 3,
                                      (80, 160), seed=7)
    tiny_checkpoint(base / "cp.pth")
    names = sorted(p.relative_to(test_root).with_suffix(".wav").as_posix() for p in test_root.rglob("*.npy"))
    lines = [f"{int(a[:7] == b[:7])} {a} {b}" for i, a in enumerate(names) for b in names[i + 1:]]
    (base / "clean.txt").write_text("\n".join(lines) + "\n")
    messy = lines[:4] + ["", "   "] + lines[4:10] + [""] + lines[10:]
    (base / "messy.txt").write_bytes("\r\n".join(messy).encode())
    return base


def test_messy_trial_list_through_eer_full_equals_the_clean_list(evaluation_data):
    base = evaluation_data
    common = ["--checkpoint", base / "cp.pth", "--save_path", base / "data", "--use_cuda", "False"]
    messy = run_script("EER_full.py", *common, "--trials", base / "messy.txt", "--out_dir", base / "messy")
    clean = run_entry("EER_full", *common, "--trials", base / "clean.txt", "--out_dir", base / "clean")
    assert messy.returncode == 0 and clean.returncode == 0, messy.stderr + clean.stderr
    eer_line = [line for line in messy.stdout.splitlines() if line.startswith("EER: ")]
    assert len(eer_line) == 1 and eer_line[0] in clean.stdout.splitlines()
    scores = [(base / run / "scores_full_cp100.txt").read_text() for run in ("messy", "clean")]
    assert scores[0] == scores[1] and len(scores[0].splitlines()) == 36   # 9 utterances: 36 pairs


def test_trials_without_features_are_listed_before_the_model_is_touched(evaluation_data, tmp_path):
    base = evaluation_data
    missing = [f"id09999/nothere/{i:05d}.wav" for i in range(7)]
    lines = ["1 id00000/session0/00000.wav id00000/session1/00001.wav"]
    lines += [f"0 id00001/session0/00000.wav {name}" for name in missing]
    (tmp_path / "trials.txt").write_text("\n".join(lines))
    # the checkpoint exists (a missing one is reported first) but is not loadable: had the model been
    # loaded before the trial list was checked, its error would come first
    (tmp_path / "unloadable_checkpoint.pth").write_bytes(b"not a checkpoint")
    result = run_script("EER_full.py", "--checkpoint", tmp_path / "unloadable_checkpoint.pth", "--save_path",
                        base / "data", "--trials", tmp_path / "trials.txt", "--out_dir", tmp_path / "out")
    line = error_line(result)
    assert line.startswith("error: 7 of 10 utterances in the trial list have no features under ")
    assert line.endswith(": " + ", ".join(missing[:5]) + ", ...")
    assert not (tmp_path / "out").exists()


def test_non_finite_features_stop_identification(evaluation_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(evaluation_data / "data", data)
    bad = configure.feature_dir(data, "voxceleb1", "test") / "id00002" / "session0" / "00000.npy"
    features = np.load(bad)
    features[:, 3] = np.inf
    np.save(bad, features)
    result = run_entry("identification", "--checkpoint", evaluation_data / "cp.pth", "--save_path", data,
                       "--data_type", "vox1", "--nb_class_test", 3, "--n_query", 1, "--nb_episode", 2,
                       "--enroll_length", 60, "--test_length", 40, "--out_dir", tmp_path / "out")
    assert str(bad) in error_line(result)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("identification_*"))


# ------------------------------------------------------------------------- --cp_num that does not exist
CP_NUM_COMMANDS = {
    "EER_full": ["--trials", "{base}/clean.txt", "--save_path", "{base}/data", "--model_dir", "{models}"],
    "EER_short": ["--save_path", "{base}/data", "--data_type", "vox1", "--model_dir", "{models}"],
    "identification": ["--save_path", "{base}/data", "--data_type", "vox1", "--model_dir", "{models}"],
    "train": ["--save_path", "{train}", "--model_dir", "{models}", "--use_checkpoint", "True",
              "--channels", "4", "--nb_class_train", "3"],
    "verify": ["--threshold", "0.5", "--model_dir", "{models}", "a.wav", "b.wav"],
    "export": ["--out", "{models}/exported", "--model_dir", "{models}"],
}


@pytest.mark.parametrize("script", sorted(CP_NUM_COMMANDS))
def test_missing_cp_num_lists_the_checkpoints_that_exist(script, evaluation_data, tmp_path):
    """Every command that reads a checkpoint takes --model_dir."""
    models = tmp_path / "models"
    for epoch in (1, 3):
        tiny_checkpoint(models / "baseline_004" / f"checkpoint_{epoch:03d}.pth", epoch=epoch)
    train_data = write_random_features(tmp_path / "train" / TRAIN_FEAT, 3, 3, 120)
    values = {"base": evaluation_data, "train": tmp_path / "train", "models": models}
    flags = [flag.format(**values) for flag in CP_NUM_COMMANDS[script]]
    result = run_entry(script, "--n_folder", 4, "--cp_num", 2, *flags)
    folder = models / "baseline_004"
    assert error_line(result) == (f"error: no checkpoint {folder / 'checkpoint_002.pth'} (--cp_num 2); "
                                  f"checkpoints in {folder}: 1, 3")
    assert train_data.is_dir() and not (models / "exported").exists()


# ------------------------------------------------------------------------- empty or missing data folders
EMPTY_DATA = {
    "train": ("train", ["--model_dir", "{tmp}/models", "--channels", "4"],
              "error: no feature files (<speaker>/<session>/<utt>.npy) under {feat}"),
    "feature extraction": ("feat_extract.feature_extraction", [],
                           "error: no audio files (.wav, .flac, .ogg) in {wav}; run dataprep.py first"),
    "EER_full": ("EER_full", ["--checkpoint", "{tmp}/cp.pth"],
                 "error: 4715 of 4715 utterances in the trial list have no features under {test}"),
    "EER_short": ("EER_short", ["--checkpoint", "{tmp}/cp.pth", "--data_type", "vox1"],
                  "error: no feature files (<speaker>/<session>/<utt>.npy) under {test}"),
    "identification": ("identification", ["--checkpoint", "{tmp}/cp.pth", "--data_type", "vox1"],
                       "error: no feature files (<speaker>/<session>/<utt>.npy) under {test}"),
}


@pytest.mark.parametrize("command", sorted(EMPTY_DATA))
@pytest.mark.parametrize("state", ["missing", "empty"])
def test_empty_or_missing_data_folder(command, state, tmp_path):
    module, flags, expected = EMPTY_DATA[command]
    data = tmp_path / "data"
    folders = {"feat": data / TRAIN_FEAT, "wav": configure.wav_dir(data, "voxceleb1", "test"),
               "test": configure.feature_dir(data, "voxceleb1", "test")}
    if state == "empty":
        for folder in folders.values():
            folder.mkdir(parents=True)
    tiny_checkpoint(tmp_path / "cp.pth")
    result = run_entry(module, "--save_path", data, *[f.format(tmp=tmp_path) for f in flags])
    line = error_line(result)
    if state == "empty":
        assert line.startswith(expected.format(**folders)), line
    else:
        assert str(data) in line and any(words in line for words in (
            "not found", "no wav folder", "no feature files", "no VoxCeleb1 features found")), line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cp.pth", "data"][: 2 if state == "empty" else 1]


# ------------------------------------------------------------------------------------ training data
def test_speakers_with_too_few_utterances_are_reported_and_left_out(tmp_path):
    features = write_random_features(tmp_path / "data" / TRAIN_FEAT, 4, 3, 120)
    few = write_random_features(tmp_path / "few", 2, 2, 120, seed=1)
    for index, speaker in enumerate(sorted(few.iterdir())):
        speaker.rename(features / f"id0000{4 + index}")
    result = run_script("train.py", "--save_path", tmp_path / "data", "--model_dir", tmp_path / "models",
                        "--channels", "4", "--nb_class_train", "3", "--n_episode", "1", "--max_epoch", "1",
                        "--workers", "0")
    assert result.returncode == 0, result.stderr[-2000:]
    assert ("warning: 2 of 6 speakers have fewer than 3 utterances (n_shot + n_query) and are left out "
            "of the episodes (they still count as classes): id00004, id00005") in result.stderr
    checkpoint = torch.load(tmp_path / "models/baseline_000/checkpoint_001.pth", weights_only=True)
    assert checkpoint["state_dict"]["weight"].shape == (6, 256)


def test_non_finite_training_features_name_the_file_from_a_loader_worker(tmp_path):
    features = write_random_features(tmp_path / "data" / TRAIN_FEAT, 3, 3, 120)
    bad = features / "id00001" / "session0" / "00000.npy"
    values = np.load(bad)
    values[:, 7] = np.nan
    np.save(bad, values)
    result = run_script("train.py", "--save_path", tmp_path / "data", "--model_dir", tmp_path / "models",
                        "--channels", "4", "--nb_class_train", "3", "--n_episode", "2", "--max_epoch", "1",
                        "--workers", "1")
    assert error_line(result) == f"error: NaN or infinite values in training features: {bad} (re-extract these files)"
    assert not list((tmp_path / "models" / "baseline_000").glob("checkpoint_*"))


def test_resume_from_a_checkpoint_of_another_width(tmp_path):
    write_random_features(tmp_path / "data" / TRAIN_FEAT, 3, 3, 120)
    path = tiny_checkpoint(tmp_path / "models" / "baseline_000" / "checkpoint_002.pth", channels=8, epoch=2)
    result = run_entry("train", "--save_path", tmp_path / "data", "--model_dir", tmp_path / "models",
                       "--channels", "4", "--nb_class_train", "3", "--use_checkpoint", "True", "--cp_num", 2)
    assert error_line(result) == f"error: {path} has width 8 (--channels) but this run uses --channels 4"


# ----------------------------------------------------------------------------------------- crashes
WRITER = """
import sys
sys.path.insert(0, {root!r})
import numpy as np
from common.files import save_npy
print("ready", flush=True)
value = 0
while True:
    value += 1
    save_npy({path!r}, np.full(1_000_000, value, np.float32))
"""


def test_sigkill_during_writes_leaves_a_whole_file(tmp_path):
    target = tmp_path / "features.npy"
    np.save(target, np.zeros(1_000_000, np.float32))
    writer = subprocess.Popen([sys.executable, "-c", WRITER.format(root=str(ROOT), path=str(target))],
                              env=ENV, stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "ready"
    time.sleep(0.7)                                   # some files written, one (probably) half-written
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()
    values = np.load(target)
    assert values.shape == (1_000_000,) and values.min() == values.max() > 0
    strays = [p.name for p in tmp_path.iterdir() if p != target]
    assert all(name.startswith(".features.npy.") and ".tmp" in name for name in strays), strays


# ---------------------------------------------------------------------------------- source audit
SOURCES = sorted(p for p in ROOT.rglob("*.py")
                 if not {".venv", "tests"} & set(p.relative_to(ROOT).parts))
WRITING_METHODS = {"save", "savez", "savez_compressed", "savefig", "write_text", "write_bytes", "tofile",
                   "dump"}
# open(..., "w"/"a") outside atomic_path, each with its reason
NON_ATOMIC_ALLOWED = {("prep/download.py", "write_stream"):
                      "the resumable <part>.part download; renamed to <part> only after its MD5 matches",
                      ("evaluation/export.py", "serialise"):
                      "ONNX into an in-memory buffer, which export.write_bytes writes through atomic_path"}


def parsed(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            child.parent = node
    return tree


def ancestors(node):
    while hasattr(node, "parent"):
        node = node.parent
        yield node


def inside_atomic_path(node) -> bool:
    for outer in ancestors(node):
        if isinstance(outer, ast.With):
            for item in outer.items:
                call = item.context_expr
                if isinstance(call, ast.Call) and getattr(call.func, "id", getattr(call.func, "attr", "")) == "atomic_path":
                    return True
    return False


def enclosing_function(node) -> str:
    return next((outer.name for outer in ancestors(node) if isinstance(outer, ast.FunctionDef)), "")


def is_write(call: ast.Call) -> bool:
    func = call.func
    if isinstance(func, ast.Attribute):
        owner = getattr(func.value, "id", "")
        if owner == "files":                           # common.files helpers
            return False
        return func.attr in WRITING_METHODS or (func.attr == "write" and owner == "sf") or \
            (func.attr == "export" and getattr(func.value, "attr", "") == "onnx")
    if isinstance(func, ast.Name) and func.id == "open":
        mode = call.args[1] if len(call.args) > 1 else next((k.value for k in call.keywords if k.arg == "mode"), None)
        return isinstance(mode, ast.Constant) and any(c in str(mode.value) for c in "wax+")
    return False


def test_every_project_write_goes_through_a_temporary_name():
    direct = []
    for path in SOURCES:
        relative = path.relative_to(ROOT).as_posix()
        if relative == "common/files.py":
            continue
        for node in ast.walk(parsed(path)):
            if isinstance(node, ast.Call) and is_write(node) and not inside_atomic_path(node):
                if (relative, enclosing_function(node)) not in NON_ATOMIC_ALLOWED:
                    direct.append(f"{relative}:{node.lineno} {ast.unparse(node)[:80]}")
    assert direct == []
    assert len(SOURCES) > 30


def test_no_shell_strings_and_no_unpickling_outside_the_benchmark_baseline():
    found = []
    for path in SOURCES:
        relative = path.relative_to(ROOT).as_posix()
        for node in ast.walk(parsed(path)):
            if not isinstance(node, ast.Call):
                continue
            name = ast.unparse(node.func)
            if any(k.arg == "shell" and not (isinstance(k.value, ast.Constant) and k.value.value is False)
                   for k in node.keywords):
                found.append(f"{relative}:{node.lineno} shell=")
            if name in ("os.system", "os.popen", "eval", "exec"):
                found.append(f"{relative}:{node.lineno} {name}")
            if name in ("pickle.load", "pickle.loads") and relative != "bench/baseline.py":
                found.append(f"{relative}:{node.lineno} {name}")
            if name == "torch.load" and (relative != "model/checkpoint.py" or not any(
                    k.arg == "weights_only" and getattr(k.value, "value", None) is True for k in node.keywords)):
                found.append(f"{relative}:{node.lineno} torch.load")
            if name.startswith("subprocess.") and node.args and isinstance(node.args[0], (ast.Constant, ast.JoinedStr)):
                found.append(f"{relative}:{node.lineno} {name} with a command string")
    assert found == []
