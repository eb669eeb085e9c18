"""Every module imports on its own in a fresh interpreter (so no import cycle can hide behind import
order), infrastructure needs no torch, and packages import only downwards."""
import ast
import subprocess
import sys

import pytest

from tests.conftest import ROOT

PACKAGES = ("common", "prep", "feat_extract", "data_loading", "model", "evaluation", "training")
# which project packages each package may import (its own modules are always allowed)
ALLOWED = {
    "common": set(),
    "feat_extract": {"common", "configure"},
    "prep": {"common", "configure", "feat_extract", "model"},   # model: the pretrained checkpoint's check
    "data_loading": {"common", "configure", "feat_extract"},
    "model": {"common", "configure"},
    "evaluation": {"common", "configure", "feat_extract", "data_loading", "model"},
    "training": {"common", "configure", "feat_extract", "data_loading", "model", "evaluation"},
}
FLAT_MODULES = ("configure",)


def project_modules() -> list:
    modules = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).glob("*.py")) if (ROOT / package).is_dir() else []:
            modules.append(package if path.stem == "__init__" else f"{package}.{path.stem}")
    return modules + [path.stem for path in sorted(ROOT.glob("*.py"))]


def imported_project_modules(module: str) -> set:
    """Project packages/modules named by ``module``'s import statements (anywhere in the file)."""
    path = ROOT / (module.replace(".", "/") + ".py")
    if not path.is_file():
        path = ROOT / module / "__init__.py"
    tops = set(PACKAGES) | {p.stem for p in ROOT.glob("*.py")}
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else []
        found |= {name.split(".")[0] for name in names if name.split(".")[0] in tops}
    return found


def test_every_module_imports_alone_in_a_fresh_process():
    modules = project_modules()
    assert {"common.errors", "common.files", "feat_extract.fbank", "model.checkpoint"} <= set(modules)
    script = ("import importlib, sys\nfailed = []\n"
              f"for name in {modules!r}:\n"
              "    for loaded in [m for m in sys.modules if m.split('.')[0] in "
              f"{set(PACKAGES) | set(m for m in modules if '.' not in m)!r}]:\n"
              "        del sys.modules[loaded]\n"
              "    try:\n        importlib.import_module(name)\n"
              "    except Exception as error:\n        failed.append(f'{name}: {error!r}')\n"
              "print('\\n'.join(failed))\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == ""


@pytest.mark.parametrize("module", ["common.errors", "common.files", "feat_extract.fbank"])
def test_infrastructure_imports_no_torch(module):
    script = f"import sys, {module}; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.stdout.strip() == "False", result.stderr[-2000:]


def test_packages_import_only_downwards():
    wrong = []
    for module in project_modules():
        package = module.split(".")[0]
        if package not in ALLOWED:
            continue
        for target in imported_project_modules(module) - {package}:
            if target not in ALLOWED[package]:
                wrong.append(f"{module} imports {target}")
    assert wrong == []


def test_no_import_cycle_between_modules():
    """Module-level import graph (imports at the top of each file) has no cycle."""
    graph = {module: set() for module in project_modules()}
    for module in graph:
        path = ROOT / (module.replace(".", "/") + ".py")
        if not path.is_file():
            path = ROOT / module / "__init__.py"
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            graph[module] |= {t for t in targets if t in graph and t != module}
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = "open"
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                cycles.append(" -> ".join(stack[stack.index(target):] + [target]))
            elif target not in state:
                visit(target, stack + [target])
        state[node] = "done"
    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_training_start_up_imports_no_unused_heavy_library():
    """train.py reaches its first episode without importing scikit-learn (only --val_trials scores
    with it), scipy or python_speech_features (only feature extraction computes fbanks): together
    ~1.7 s of CPU at every start (bench/startup_phases.py). Using them still works: they are imported
    where they are used."""
    heavy = ("sklearn", "scipy", "python_speech_features")
    script = ("import sys, train, training.run, data_loading.episodes, evaluation.validation\n"
              f"print(sorted(m for m in {heavy!r} if m in sys.modules))\n"
              "from evaluation.metrics import compute_eer\n"
              "from feat_extract.fbank import log_mel_fbank\n"
              "import numpy as np\n"
              "eer, _ = compute_eer(np.array([1, 1, 0, 0]), np.array([0.9, 0.2, 0.3, 0.1]))\n"
              "print(round(float(eer), 3), log_mel_fbank(np.zeros(16000, dtype=np.int16)).shape)\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    # hand-computed: at threshold 0.3, miss 1/2 and false alarm 1/2 -> EER 50 %; 1 s at 16 kHz in
    # 25 ms windows every 10 ms: 1 + ceil((16000 - 400) / 160) = 99 frames
    assert result.stdout.split("\n")[:2] == ["[]", "50.0 (99, 40)"]
