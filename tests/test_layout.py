"""Imports run one way (no cycles, imports inside functions included), and importing the model
file reads no file and trains nothing."""
import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

MODULES = {p.stem for p in ROOT.glob("*.py")}


def imports_of(module: str) -> set[str]:
    """Every project module that `module` imports, at top level or inside any function."""
    tree = ast.parse((ROOT / f"{module}.py").read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found & MODULES - {module}


def test_project_imports_have_no_cycle():
    graph = {module: imports_of(module) for module in MODULES}
    visiting, done = set(), set()

    def visit(module, path):
        assert module not in visiting, "import cycle: " + " -> ".join(path + [module])
        if module in done:
            return
        visiting.add(module)
        for target in graph[module]:
            visit(target, path + [module])
        visiting.discard(module)
        done.add(module)

    for module in graph:
        visit(module, [])
    assert "gpt_final_version" not in graph["train"] | graph["config"] | graph["corpus"] | graph["checkpoint"]


@pytest.mark.slow
def test_importing_the_model_file_reads_nothing_and_trains_nothing(tmp_path):
    code = ("import builtins, sys; sys.path.insert(0, sys.argv[1]); opened = [];"
            "real = builtins.open; builtins.open = lambda *a, **k: (opened.append(a[0]), real(*a, **k))[1];"
            "import gpt_final_version;"
            "print([p for p in map(str, opened) if not p.endswith('.py') and not p.startswith('/proc/')])")
    result = subprocess.run([sys.executable, "-c", code, str(ROOT)], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"  # only source files (read by torch's own import) were opened
    assert list(tmp_path.iterdir()) == []  # no models/, samples/ or notes.txt appeared


@pytest.mark.slow
def test_importing_the_models_loads_no_training_machinery():
    """The model files are teaching material: reading them, or importing them into another
    program, must not pull in the training loop, the data pipeline or the checkpoint code."""
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import gpt_final_version, bigram; "
            "print(sorted(m for m in ('train', 'loss_curves', 'corpus', 'checkpoint', 'devices') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code, str(ROOT)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.slow
def test_the_tests_find_the_corpus_from_a_clone_that_is_not_beside_shared(tmp_path):
    """A developer's clone elsewhere (or a helper's worktree) still finds tiny-shakespeare through
    the repository it came from, without $TINYSHAKESPEARE."""
    clone = tmp_path / "elsewhere" / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True, timeout=120)
    (clone / "tests" / "conftest.py").write_text((ROOT / "tests" / "conftest.py").read_text())  # as in this tree
    code = "import sys; sys.path.insert(0, 'tests'); import conftest; print(conftest.SHAKESPEARE)"
    env = {k: v for k, v in os.environ.items() if k != "TINYSHAKESPEARE"}
    result = subprocess.run([sys.executable, "-c", code], cwd=clone, capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    found = Path(result.stdout.strip())
    assert found.is_file() and found.stat().st_size > 1_000_000, result.stdout
