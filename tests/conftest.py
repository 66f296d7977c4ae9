"""Shared test helpers: paths, a tiny model config, and running the real command line."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import settings

# Test models are tiny: one thread is faster for them and immune to a busy second core.
torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# Compiled decoding without inductor's autotuning: seconds instead of a minute per graph on a cold
# cache, the same tokens (what the tests check); inherited by the servers the tests start.
os.environ.setdefault("GPT_COMPILE_AUTOTUNE", "0")

CORPUS = Path("data/tinyshakespeare/input.txt")

# Property-based tests try a fixed number of examples (CI, the edit loop); GPT_FUZZ=N multiplies
# every count for a longer hunt: GPT_FUZZ=100 python -m pytest -q tests/test_fuzz.py --hypothesis-show-statistics
FUZZ_SCALE = max(1, int(os.environ.get("GPT_FUZZ") or 1))


def fuzz(examples: int, **options) -> settings:
    return settings(max_examples=examples * FUZZ_SCALE, deadline=None, **options)


def find_shakespeare() -> Path | None:
    """The corpus is never committed. Tests read, in this order: $TINYSHAKESPEARE; the copy a
    training run downloads into this checkout; shared/data/... beside this checkout, beside the
    main checkout of this repository (a git worktree elsewhere shares the main one's .git), or
    beside the local repository this one was cloned from (or that one's origin, up to three hops)."""
    if os.environ.get("TINYSHAKESPEARE"):
        return Path(os.environ["TINYSHAKESPEARE"])
    candidates = [ROOT / CORPUS]
    tops = [ROOT, _git_path("rev-parse", "--path-format=absolute", "--git-common-dir", parent=True)]
    origin = ROOT
    for _ in range(3):  # a clone of a clone (CI's fresh clone of a local checkout, say): follow the origins
        origin = _git_path("remote", "get-url", "origin", cwd=origin)
        if origin is None:
            break
        tops.append(origin)
    for top in tops:
        if top is not None:
            candidates += [folder / "shared" / CORPUS for folder in [top.parent, *top.parent.parents][:3]]
    return next((path for path in candidates if path.is_file()), None)


def _git_path(*command: str, parent: bool = False, cwd: Path = ROOT) -> Path | None:
    """A local path that git reports (None without git, or for a remote URL)."""
    try:
        answer = subprocess.run(["git", *command], cwd=cwd, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    path = Path(answer) if answer and "://" not in answer else None
    if path is None or not path.exists():
        return None
    return path.resolve().parent if parent else path.resolve()


SHAKESPEARE = find_shakespeare()


@pytest.fixture(scope="session")
def shakespeare_path() -> Path:
    if SHAKESPEARE is None or not SHAKESPEARE.is_file():
        pytest.fail("tiny-shakespeare not found: run `python gpt_final_version.py` once (it downloads it into "
                    f"{CORPUS}), or set TINYSHAKESPEARE=PATH to a copy")
    return SHAKESPEARE


@pytest.fixture
def small_corpus(tmp_path, shakespeare_path) -> Path:
    """The first 60,000 characters: enough for every split and quick to encode."""
    path = tmp_path / "small.txt"
    path.write_text(shakespeare_path.read_text(encoding="utf-8")[:60_000], encoding="utf-8")
    return path


def tiny_run_args(data: Path, out: Path, **extra) -> list[str]:
    """Options for a training run of a few seconds that writes only under tmp."""
    options = dict(preset="tiny", data=data, out=out, notes=out.parent / "notes.txt",
                   samples_dir=out.parent / "samples", sample_chars=50, device="cpu", progress="false",
                   report_contexts=0)  # a chat run's report (a second) has its own tests: test_persona_report.py
    options.update(extra)
    return [f"--{k}={v}" for k, v in options.items()]


def run_command(*args, cwd: Path | None = None, timeout: int = 120, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run one of the project's scripts as a user would, in a fresh Python process."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run([sys.executable, *map(str, args)], cwd=cwd or ROOT, capture_output=True,
                          text=True, timeout=timeout, env=env)


def assert_clean_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    """A user mistake: non-zero status, one 'error:' line naming the problem, no traceback."""
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert "error:" in result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr
