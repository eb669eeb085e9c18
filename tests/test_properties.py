"""Property-based bad input (hypothesis): generated malformed trial lists, calibration files and config
files, given to every script that reads them. For each generated case the property is the project's
promise for bad input: exit code 2, exactly one line on stderr and it starts with ``error:`` (no
traceback), and no file that existed before the command has changed (byte-compare), nor any output
folder been created.

Scripts run in-process (``main(argv)`` through ``run_main``), so a case costs milliseconds; the
examples are derandomised (the same cases every run) and their number is kept modest
(``EXAMPLES``). ``CASES`` counts the cases each property ran (printed with ``pytest -s``)."""
import collections
import contextlib
import json
import math
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import TRAIN_FEATURES, write_random_features
from tests.test_api import tiny_checkpoint
from tests.test_robustness import run_entry

EXAMPLES = 100
PROPERTY = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
CASES = collections.Counter()
KEYS = ["id1/s1/a", "id1/s1/b", "id2/s1/c", "id2/s2/d"]   # what every generated trial list may name


def tree_bytes(root: Path) -> dict:
    return {str(path): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


def run_refused(script: str, argv, root: Path, must_not_exist=()) -> str:
    """``<script>.main(argv)`` as the script runs it; asserts the bad-input promise; the error line."""
    before = tree_bytes(root)
    result = run_entry(script, *argv)
    lines = result.stderr.splitlines()
    assert result.returncode == 2, (result.returncode, result.stderr[-3000:])
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-3000:]
    assert tree_bytes(root) == before, "a file that existed before the command changed"
    for path in must_not_exist:
        assert not Path(path).exists(), f"{path} was created"
    return lines[0]


def refused_case(world, name: str, content: bytes, script: str, argv) -> str:
    """One generated case: ``content`` written as ``name`` in a fresh folder, ``argv(folder)`` refused,
    and neither ``out`` nor ``models`` created there."""
    with case_folder(world) as folder:
        (folder / name).write_bytes(content)
        return run_refused(script, argv(folder), world, must_not_exist=[folder / "out", folder / "models"])


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Embeddings (matrix + keys), a tiny checkpoint, two recordings, a small training feature store."""
    root = tmp_path_factory.mktemp("properties")
    np.save(root / "embeddings.npy", np.random.default_rng(0).standard_normal((len(KEYS), 16)).astype(np.float32))
    (root / "keys.txt").write_text("".join(f"{key}\n" for key in KEYS))
    tiny_checkpoint(root / "model.pth")
    import soundfile as sf
    from tests.test_api import as_int16, voice_like
    for number in range(2):
        sf.write(root / f"r{number}.wav", as_int16(voice_like(seconds=0.6, seed=number)), 16000)
    write_random_features(root / "data" / TRAIN_FEATURES, n_speakers=6, n_utterances=5, frames=(150, 300))
    from data_loading.corpus import FeatureCorpus
    FeatureCorpus(root / "data" / TRAIN_FEATURES)     # its index built now, not by the first case
    for key in KEYS:   # validation features of the same utterances
        (root / "valfeat" / key).parent.mkdir(parents=True, exist_ok=True)
        np.save(root / "valfeat" / f"{key}.npy", np.random.default_rng(1).standard_normal((200, 40)).astype(np.float32))
    (root / "good_trials.txt").write_text("1 id1/s1/a.wav id1/s1/b.wav\n0 id1/s1/a.wav id2/s1/c.wav\n")
    return root


@contextlib.contextmanager
def case_folder(world):
    """A fresh folder per generated case, holding the case's own files."""
    folder = Path(tempfile.mkdtemp(dir=world))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# ---------------------------------------------------------------------------- malformed trial lists
NAME = st.sampled_from([f"{key}.wav" for key in KEYS])
GOOD_LINE = st.tuples(st.sampled_from(["1", "0", "target", "nontarget"]), NAME, NAME).map(" ".join)


@st.composite
def malformed_trial_list(draw) -> bytes:
    """Valid lines with one defect drawn from the ways a trial list goes wrong."""
    lines = draw(st.lists(GOOD_LINE, min_size=0, max_size=6))
    defect = draw(st.sampled_from(["fields", "label", "widths", "one kind", "bytes", "empty", "unknown",
                                   "too long", "control"]))
    if defect == "fields":
        fields = draw(st.lists(st.text("abc/.-_", min_size=1, max_size=6), min_size=4, max_size=7)
                      | st.lists(st.text("abc/.-_", min_size=1, max_size=6), min_size=1, max_size=1))
        lines.insert(draw(st.integers(0, len(lines))), " ".join(fields))
    elif defect == "label":
        label = draw(st.text("0123456789-+.xyzTF", min_size=1, max_size=4).filter(
            lambda text: text.lower() not in ("0", "1", "target", "nontarget")))
        lines.insert(draw(st.integers(0, len(lines))), f"{label} {draw(NAME)} {draw(NAME)}")
    elif defect == "widths":
        lines = [draw(GOOD_LINE), f"{draw(NAME)} {draw(NAME)}"]
    elif defect == "one kind":
        label = draw(st.sampled_from(["1", "0"]))
        lines = [f"{label} {draw(NAME)} {draw(NAME)}" for _ in range(draw(st.integers(1, 4)))]
    elif defect == "bytes":
        return "\n".join(lines).encode() + b"\n1 \xff\xfe spk1/a\n"
    elif defect == "empty":
        return draw(st.sampled_from([b"", b"\n\n", b"   \n\t\n"]))
    elif defect == "unknown":
        lines.append(f"1 {draw(NAME)} id9/s9/{draw(st.text('xyz', min_size=1, max_size=5))}.wav")
        lines.append(f"0 {draw(NAME)} {draw(NAME)}")
    elif defect == "too long":
        lines += [f"1 {draw(NAME)} id1/s1/{'x' * draw(st.integers(256, 600))}.wav", f"0 {draw(NAME)} {draw(NAME)}"]
    else:   # a NUL byte inside an entry
        lines += [f"1 {draw(NAME)} id1/s1/\x00k.wav", f"0 {draw(NAME)} {draw(NAME)}"]
    return "\n".join(lines).encode() + b"\n"


@PROPERTY
@given(content=malformed_trial_list())
def test_score_refuses_every_malformed_trial_list(world, content):
    CASES["score.py --trials"] += 1
    refused_case(world, "trials.txt", content, "score", lambda folder: [
        "--trials", folder / "trials.txt", "--embeddings", world / "embeddings.npy", "--out_dir", folder / "out",
        "--save_path", folder / "nothing"])


# ---------------------------------------------------------------------------- malformed calibrations
FIELD_VALUES = {
    "slope": st.one_of(st.booleans(), st.text(max_size=3), st.none(), st.lists(st.integers(), max_size=2),
                       st.floats(max_value=0), st.floats(min_value=1e6, exclude_min=True)),
    "offset": st.one_of(st.booleans(), st.text(max_size=3), st.none(), st.floats(min_value=1e6, exclude_min=True)),
    "fit_prior": st.one_of(st.booleans(), st.floats(max_value=0), st.floats(min_value=1), st.text(max_size=3)),
    "n_target": st.one_of(st.floats(allow_nan=False).filter(lambda x: x != int(x) if math.isfinite(x) else True),
                          st.integers(max_value=-1), st.booleans()),
    "score_norm": st.one_of(st.text(max_size=8).filter(lambda t: t not in ("none", "asnorm")), st.integers()),
    "version": st.one_of(st.integers(max_value=0), st.integers(min_value=2), st.floats()),
    "checkpoint_digest": st.one_of(st.integers(), st.booleans(), st.lists(st.text(), max_size=1)),
}


@st.composite
def malformed_calibration(draw) -> bytes:
    """A calibration JSON with at least one field of the wrong type or out of range, an unknown field,
    or a document that is not a JSON object at all."""
    kind = draw(st.sampled_from(["field", "unknown field", "not an object", "not json"]))
    fields = {"slope": draw(st.floats(0.01, 100)), "offset": draw(st.floats(-100, 100))}
    if kind == "field":
        name = draw(st.sampled_from(sorted(FIELD_VALUES)))
        fields[name] = draw(FIELD_VALUES[name])
    elif kind == "unknown field":
        fields[draw(st.text(min_size=1, max_size=8).filter(lambda t: t not in FIELD_VALUES))] = draw(st.integers())
    elif kind == "not an object":
        return json.dumps(draw(st.one_of(st.lists(st.integers(), max_size=3), st.integers(), st.text(max_size=5),
                                         st.none()))).encode()
    else:
        return draw(st.binary(max_size=20).filter(lambda b: not b.strip().startswith(b"{")))
    return json.dumps(fields).encode()      # NaN / Infinity are written as JSON's extension, read back as such


@PROPERTY
@given(content=malformed_calibration(), script=st.sampled_from(["score", "verify"]))
def test_every_malformed_calibration_is_refused(world, content, script):
    CASES[f"{script}.py --calibration"] += 1
    argv = {"score": lambda folder: ["--trials", world / "good_trials.txt", "--embeddings", world / "embeddings.npy",
                                     "--calibration", folder / "cal.json", "--out_dir", folder / "out",
                                     "--save_path", folder / "nothing"],
            "verify": lambda folder: ["--checkpoint", world / "model.pth", "--calibration", folder / "cal.json",
                                      world / "r0.wav", world / "r1.wav"]}[script]
    line = refused_case(world, "cal.json", content, script, argv)
    assert ": not a calibration file written by score.py --calibrate_out (" in line, line


# ------------------------------------------------------------------------------ malformed config files
def train_parser():
    import train
    return train.build_parser()


BAD_VALUES = {   # for each kind of flag, values a command line could never give it
    "int": st.one_of(st.floats(allow_nan=False, allow_infinity=False).filter(lambda x: x != int(x)),
                     st.text("abcxyz", min_size=1, max_size=4), st.lists(st.integers(), min_size=1, max_size=3),
                     st.dictionaries(st.text("ab", min_size=1, max_size=2), st.integers(), min_size=1, max_size=2)),
    "float": st.one_of(st.text("abcxyz", min_size=1, max_size=4), st.lists(st.floats(), min_size=1, max_size=2),
                       st.booleans()),
    "bool": st.one_of(st.text("abcxyz", min_size=2, max_size=4), st.integers(min_value=2), st.floats(0.1, 0.9),
                      st.lists(st.booleans(), min_size=1, max_size=2)),
    "choice": st.text(min_size=1, max_size=10),
    "str": st.one_of(st.lists(st.text(max_size=3), min_size=1, max_size=2).map(lambda v: {"x": v}),
                     st.dictionaries(st.text("ab", min_size=1, max_size=2), st.integers(), min_size=1, max_size=2)),
}
OUT_OF_RANGE = {   # values of the right type that the run refuses (docs/training.md, train.py --help)
    "lr": st.one_of(st.floats(max_value=0), st.just(math.inf), st.just(math.nan)),
    "n_shot": st.integers(max_value=0), "n_query": st.integers(max_value=0), "nb_class_train": st.integers(max_value=1),
    "max_epoch": st.integers(max_value=0), "channels": st.integers(max_value=0), "workers": st.integers(max_value=-1),
    "n_folder": st.integers(max_value=-1), "n_episode": st.integers(max_value=0),
    "margin": st.one_of(st.floats(max_value=-1e-3), st.floats(min_value=math.pi / 2), st.just(math.nan)),
    "scale": st.one_of(st.floats(max_value=0), st.just(math.inf), st.just(math.nan)),
    "val_interval": st.integers(max_value=0), "seed": st.one_of(st.integers(max_value=-1), st.integers(min_value=2 ** 32)),
}


def flag_kind(action) -> str:
    import configure
    if action.nargs == 0 or action.type is configure.str2bool:
        return "bool"
    if action.choices:
        return "choice"
    return {int: "int", float: "float"}.get(action.type, "str")


@st.composite
def malformed_config(draw) -> bytes:
    actions = {action.dest: action for action in train_parser()._actions if action.dest not in ("help", "config")}
    kind = draw(st.sampled_from(["type", "range", "unknown key", "not a mapping", "not yaml", "null"]))
    settings_ = {}
    if kind == "type":
        name = draw(st.sampled_from(sorted(actions)))
        action = actions[name]
        value = draw(BAD_VALUES[flag_kind(action)])
        if flag_kind(action) == "choice":
            value = draw(st.text(min_size=1, max_size=10).filter(lambda t: t not in action.choices))
        if action.nargs in ("+", "*") and not isinstance(value, dict):
            value = [{"nested": value}]
        settings_[name] = value
    elif kind == "range":
        name = draw(st.sampled_from(sorted(OUT_OF_RANGE)))
        settings_[name] = draw(OUT_OF_RANGE[name])
    elif kind == "unknown key":
        settings_[draw(st.text("abcdefgh_", min_size=1, max_size=10).filter(lambda t: t not in actions))] = 1
    elif kind == "not a mapping":
        return yaml.safe_dump(draw(st.one_of(st.lists(st.integers(), max_size=3), st.integers(),
                                             st.text("abc", min_size=1, max_size=4)))).encode()
    elif kind == "not yaml":
        return draw(st.sampled_from([b"a: [1, 2\n", b"{a: 1\n", b"a: b: c\n", b"\xff\xfe\x00", b"- a\nb: 1\n"]))
    else:
        name = draw(st.sampled_from(sorted(n for n, a in actions.items() if a.default is not None)))
        settings_[name] = None
    return yaml.safe_dump(settings_).encode()


@PROPERTY
@given(content=malformed_config())
def test_train_refuses_every_malformed_config_before_the_run_folder(world, content):
    CASES["train.py --config"] += 1
    tested = [flag for flag in ("nb_class_train", "channels", "n_episode", "max_epoch", "workers")
              if flag.encode() in content]       # the config's own value of these is the one under test
    refused_case(world, "run.yaml", content, "train", lambda folder: [
        "--config", folder / "run.yaml", *small_run(world, folder, skip=tested)])


@PROPERTY
@given(content=malformed_trial_list())
def test_train_refuses_every_malformed_validation_list_before_the_run_folder(world, content):
    CASES["train.py --val_trials"] += 1
    refused_case(world, "trials.txt", content, "train", lambda folder: [
        "--val_trials", folder / "trials.txt", "--val_features", world / "valfeat", *small_run(world, folder)])


def small_run(world, folder, skip=()) -> list:
    """train.py flags of a run of one episode on the small store, into ``folder/models``."""
    sizes = {"channels": 4, "nb_class_train": 3, "n_episode": 1, "max_epoch": 1, "workers": 0}
    return ["--save_path", world / "data", "--model_dir", folder / "models",
            *(item for flag, value in sizes.items() if flag not in skip for item in (f"--{flag}", value))]


def test_zz_report_the_cases(capsys):
    """Runs last in this file: how many cases each property generated (``pytest -s`` shows it)."""
    with capsys.disabled():
        print(f"\nhypothesis cases: {dict(CASES)} (total {sum(CASES.values())})")
    assert not CASES or all(count >= 1 for count in CASES.values())
