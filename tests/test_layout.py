"""The house: imports run one way (no cycles, imports inside functions included), the library has no
command-line entry points, no module grows past about 600 lines, at most six scripts sit at the top,
and importing the model file reads no file and trains nothing."""
import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

ROOMS = ("gptlib", "chat", "serving", "benchmarks")  # the packages; everything else is a top-level script
MAX_TOP_LEVEL_SCRIPTS = 6
MAX_MODULE_LINES = 620
# The models sit at the bottom with config.py (the library builds, trains and decodes them); their
# `main` is the training entry point the design card puts in the model file, so its imports are the
# script's, not the model's.
MODELS = ("gpt_final_version", "bigram")  # "about 600": a module past this should be split by what it does


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


SOURCES = {module_name(p): p for p in [*ROOT.glob("*.py"), *(p for room in ROOMS for p in (ROOT / room).glob("*.py"))]}


def imports_of(module: str) -> set[str]:
    """Every project module that `module` imports, at top level or inside any function."""
    tree = ast.parse(SOURCES[module].read_text(encoding="utf-8"))
    package = module.rpartition(".")[0] if not SOURCES[module].name == "__init__.py" else module
    found = set()
    entry_points = [node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef) and node.name == "main"]
    skipped = {id(n) for entry in entry_points if module in MODELS for n in ast.walk(entry)}
    type_hints_only = [node for node in ast.walk(tree) if isinstance(node, ast.If)
                       and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"]
    skipped |= {id(n) for block in type_hints_only for n in ast.walk(block)}  # never imported at run time
    for node in ast.walk(tree):
        if id(node) in skipped:  # the model file's training entry point calls down into gptlib.train
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # from .model import X, inside a package
                base = ".".join([*package.split(".")[: len(package.split(".")) - node.level + 1], *filter(None, [base])])
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return {name for name in found if name in SOURCES} - {module}


GRAPH = {module: imports_of(module) for module in SOURCES}


def test_project_imports_have_no_cycle():
    visiting, done = set(), set()

    def visit(module, path):
        assert module not in visiting, "import cycle: " + " -> ".join(path + [module])
        if module in done:
            return
        visiting.add(module)
        for target in GRAPH[module]:
            visit(target, path + [module])
        visiting.discard(module)
        done.add(module)

    for module in GRAPH:
        visit(module, [])


def test_the_library_imports_no_script_but_config():
    """gptlib is what the scripts are built from: it may read the hyperparameters (config.py) and the
    models, and nothing else above it, so a script's rename never breaks the library."""
    scripts = {m for m in SOURCES if "." not in m and m not in ROOMS} - {"config", *MODELS}
    for module in (m for m in SOURCES if m.startswith("gptlib")):
        assert not GRAPH[module] & scripts, f"{module} imports {sorted(GRAPH[module] & scripts)}"
        assert not {m for m in GRAPH[module] if m.split(".")[0] in ("chat", "serving", "benchmarks")}, module
    assert not GRAPH["config"] - {"gptlib.errors"}, "config.py is data: it imports only the error"
    assert GRAPH["gpt_final_version"] <= {"config", "gptlib", "gptlib.errors", "gptlib.cli"}


def test_library_modules_have_no_command_line_entry_point():
    for module, path in SOURCES.items():
        if module.split(".")[0] in ("gptlib", "chat", "serving"):
            assert '__name__ == "__main__"' not in path.read_text(encoding="utf-8"), f"{module} is a library module"


def test_at_most_six_scripts_at_the_top_and_no_module_past_600_lines():
    top = sorted(p.name for p in ROOT.glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL_SCRIPTS, top
    long = {m: n for m, p in SOURCES.items() if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES}
    assert not long, f"split these by what they do: {long}"


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
            "print(sorted(m for m in sys.modules if m.startswith('gptlib.') and m not in ('gptlib.errors', 'gptlib.cli')))")
    result = subprocess.run([sys.executable, "-c", code, str(ROOT)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.slow
@pytest.mark.skipif(not (ROOT / ".git").exists(), reason="a downloaded archive, not a git checkout: nothing to clone")
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
