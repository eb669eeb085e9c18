"""README's "your own recordings" commands run exactly as written: the lines are read from README.md and
run in a folder holding the files they name (a tiny model.pth, recordings, trial lists)."""
import shlex
import subprocess
import sys

import numpy as np
import soundfile as sf

from tests.conftest import ROOT
from tests.test_api import as_int16, tiny_checkpoint, voice_like

SCRIPTS = ("embed.py", "score.py", "verify.py")


def readme_commands() -> list:
    """The README's indented `python embed.py|score.py|verify.py ...` lines, comments cut, in order."""
    commands = []
    for line in (ROOT / "README.md").read_text().splitlines():
        if any(line.strip().startswith(f"python {script} ") for script in SCRIPTS):
            commands.append(shlex.split(line, comments=True)[1:])
    return commands


def write_speakers(folder, n_speakers=4, takes=3, offset=0):
    """``speaker<k>/take<j>.wav`` of ``n_speakers`` voices (pitch per speaker); their relative paths."""
    paths = []
    for speaker in range(n_speakers):
        for take in range(takes):
            path = folder / f"speaker{speaker}" / f"take{take}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            samples = voice_like(1.2, pitch=110 + 35 * speaker, seed=offset + 10 * speaker + take)
            sf.write(path, as_int16(samples), 16000)
            paths.append(f"speaker{speaker}/take{take}.wav")
    return paths


def write_trials(path, recordings):
    """Every pair of recordings once: label 1 when the speaker folder is the same."""
    rows = [f"{int(a.split('/')[0] == b.split('/')[0])} {a} {b}"
            for i, a in enumerate(recordings) for b in recordings[i + 1:]]
    path.write_text("\n".join(rows) + "\n")


def test_readme_own_recordings_commands_run_as_written(tmp_path):
    commands = readme_commands()
    assert [c[0] for c in commands] == ["embed.py", "score.py", "score.py", "verify.py"]
    tiny_checkpoint(tmp_path / "model.pth")
    write_trials(tmp_path / "my_trials.txt", write_speakers(tmp_path / "my_recordings"))
    write_trials(tmp_path / "dev_trials.txt", write_speakers(tmp_path / "dev", offset=100))
    for name, seed in (("enroll1.wav", 1), ("enroll2.wav", 2), ("test.flac", 3)):
        sf.write(tmp_path / name, as_int16(voice_like(1.0, pitch=150, seed=seed)), 16000)
    outputs = []
    for script, *args in commands:
        done = subprocess.run([sys.executable, str(ROOT / script), *args], cwd=tmp_path, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, f"{script} {shlex.join(args)}:\n{done.stderr[-2000:]}"
        outputs.append(done.stdout)
    assert len((tmp_path / "embeddings" / "index.tsv").read_text().splitlines()) >= 12
    assert len((tmp_path / "results" / "scores.txt").read_text().splitlines()) == 66   # 12 recordings, all pairs
    assert (tmp_path / "model.calibration.json").is_file()
    verdict = outputs[-1].splitlines()
    llr = float(verdict[1].split()[1])
    assert verdict[1] == f"llr: {llr:.6f} (calibration model.calibration.json)"
    assert verdict[3].startswith("decision: ACCEPT" if llr >= np.log(99) else "decision: REJECT")
