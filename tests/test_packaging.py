"""pyproject.toml: the pins are requirements.txt's, every script and package is installed, and a wheel
built from the checkout installs into a fresh virtual environment whose console commands and API work
from any folder (no sys.path edits). A fresh venv reuses the project's installed dependencies through a
.pth file (nothing is downloaded); the shared venv itself is never installed into."""
import os
import re
import shutil
import site
import subprocess
import sys
import tomllib

import pytest

import console_commands
from tests.conftest import ROOT

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
NOT_INSTALLED = {"tests", "bench"}       # packages of the checkout that a user does not need


def requirement_pins(text: str) -> set:
    """``name==version`` lines of a requirements file, comments dropped, names normalised."""
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return {normalised(line) for line in lines if line}


def normalised(pin: str) -> str:
    name, version = pin.split("==")
    return re.sub(r"[-_.]+", "-", name.strip()).lower() + "==" + version.strip()


def test_pyproject_pins_are_requirements_txt():
    project = PYPROJECT["project"]
    runtime = {normalised(pin) for pin in project["dependencies"]}
    extras = {normalised(pin) for pins in project["optional-dependencies"].values() for pin in pins}
    assert not runtime & extras
    pinned = requirement_pins((ROOT / "requirements.txt").read_text())
    assert runtime | extras == pinned, (
        f"requirements.txt only: {sorted(pinned - runtime - extras)}, pyproject.toml only: "
        f"{sorted((runtime | extras) - pinned)}; a pin belongs in both (pyproject: dependencies, or "
        "[project.optional-dependencies] test for what only the tests use)")
    assert "pytest==9.2.0" in extras and "torch==2.13.0" in runtime


def test_every_script_package_and_command_is_declared():
    setuptools = PYPROJECT["tool"]["setuptools"]
    assert set(setuptools["py-modules"]) == {path.stem for path in ROOT.glob("*.py")}
    packages = {path.parent.name for path in ROOT.glob("*/__init__.py")} - NOT_INSTALLED
    include = setuptools["packages"]["find"]["include"]
    assert {f"{package}*" for package in packages} | {"lists"} == set(include)
    scripts = PYPROJECT["project"]["scripts"]
    assert set(scripts) == set(console_commands.COMMANDS)
    for command, target in scripts.items():
        module, function = target.split(":")
        assert module == "console_commands" and callable(getattr(console_commands, function)), command
        assert function == command.removeprefix("metasr-").replace("-", "_")


def source_copy(folder):
    """What the wheel is built from, copied (a build writes build/ and *.egg-info beside its sources)."""
    folder.mkdir()
    for path in [ROOT / "pyproject.toml", *ROOT.glob("*.py")]:
        shutil.copy(path, folder)
    for package in [path.parent for path in ROOT.glob("*/__init__.py")] + [ROOT / "lists"]:
        if package.name not in NOT_INSTALLED:
            shutil.copytree(package, folder / package.name, ignore=shutil.ignore_patterns("__pycache__"))
    return folder


def fresh_venv(folder):
    """A venv without pip whose site-packages also sees this interpreter's (torch etc.), via a .pth."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    python = folder / "bin" / "python"
    own = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         capture_output=True, text=True, check=True).stdout.strip()
    (folder / "lib" / os.path.basename(os.path.dirname(own)) / "site-packages" / "shared.pth").write_text(
        "\n".join(site.getsitepackages()) + "\n")
    return python


def pip_install(python, *what):
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index",
                    "--no-build-isolation", *map(str, what)], check=True, capture_output=True)


def outside(*command, cwd):
    """Run from ``cwd`` with nothing of the checkout on the path."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    return subprocess.run(list(map(str, command)), cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


USER_SCRIPT = """import configure, speaker_api
print(speaker_api.__file__)
print(configure.SAVED_MODEL_DIR, configure.save_path, configure.VOX1_O_TRIALS.is_file())
"""


def test_a_wheel_installs_and_its_commands_and_api_work_from_any_folder(tmp_path):
    source = source_copy(tmp_path / "src")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                    "-w", str(tmp_path / "wheels"), str(source)], check=True, capture_output=True)
    wheel, = (tmp_path / "wheels").glob("meta_sr-*.whl")
    python = fresh_venv(tmp_path / "venv")
    pip_install(python, wheel)
    work = tmp_path / "work"
    work.mkdir()
    helped = outside(tmp_path / "venv" / "bin" / "metasr-verify", "--help", cwd=work)
    assert helped.returncode == 0, helped.stderr
    assert helped.stdout.startswith("usage: metasr-verify [-h] [--checkpoint CHECKPOINT]")
    assert "--seed SEED random seed (runs are reproducible) (default: 0)" in " ".join(helped.stdout.split())
    (work / "mine.py").write_text(USER_SCRIPT)
    printed = outside(python, "mine.py", cwd=work)
    assert printed.returncode == 0, printed.stderr
    installed, paths = printed.stdout.splitlines()
    assert installed.startswith(str(tmp_path / "venv" / "lib")) and installed.endswith("speaker_api.py")
    assert paths == f"{work / 'saved_model'} {work / 'data'} True"      # an install works in the current folder
    failed = outside(tmp_path / "venv" / "bin" / "metasr-eer-full", cwd=work)
    assert failed.returncode == 2 and failed.stderr.strip().splitlines() == [
        f"error: no checkpoint {work / 'saved_model/baseline_000/checkpoint_100.pth'} (--cp_num 100); "
        f"checkpoints in {work / 'saved_model/baseline_000'}: none"]


def test_an_editable_install_keeps_the_checkout_as_it_runs(tmp_path):
    source = source_copy(tmp_path / "src")
    python = fresh_venv(tmp_path / "venv")
    pip_install(python, "-e", source)
    printed = outside(python, "-c", "import configure; print(configure.__file__, configure.SAVED_MODEL_DIR)",
                      cwd=tmp_path)
    assert printed.stdout.split() == [str(source / "configure.py"), str(source / "saved_model")]
    helped = outside(python, "train.py", "--help", cwd=source)          # python train.py as the paper's README
    assert helped.returncode == 0 and helped.stdout.startswith("usage: train.py [-h]"), helped.stderr
    command = outside(tmp_path / "venv" / "bin" / "metasr-train", "--help", cwd=tmp_path)
    assert command.returncode == 0 and command.stdout.startswith("usage: metasr-train [-h]")
    assert command.stdout.split("\n\n", 1)[1] == helped.stdout.split("\n\n", 1)[1]   # the same flags and help
