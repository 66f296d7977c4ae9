"""Shared test helpers: paths, a tiny model config, and running the real command line."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

# Test models are tiny: one thread is faster for them and immune to a busy second core.
torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# The corpus is never committed: tests read the shared copy beside the checkout (or $TINYSHAKESPEARE).
SHAKESPEARE = Path(os.environ.get("TINYSHAKESPEARE", ROOT.parent / "shared/data/tinyshakespeare/input.txt"))


@pytest.fixture(scope="session")
def shakespeare_path() -> Path:
    if not SHAKESPEARE.is_file():
        pytest.fail(f"tiny-shakespeare not found at {SHAKESPEARE}; set TINYSHAKESPEARE=PATH")
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
                   samples_dir=out.parent / "samples", sample_chars=50, device="cpu", progress="false")
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
