"""A training run killed with SIGKILL at any moment (mid-step, mid-evaluation, mid-save) leaves the
last good checkpoint loadable, and --resume continues from it."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, run_command, tiny_run_args

from gptlib.checkpoint import load_checkpoint

pytestmark = pytest.mark.slow  # real processes: the whole module is in the slow tier


def start_training(corpus: Path, out: Path, save_delay: float) -> subprocess.Popen:
    args = tiny_run_args(corpus, out, max_iters=100_000, save_interval=10, eval_interval=10, eval_iters=2)
    env = {**os.environ, "GPT_TEST_SAVE_DELAY": str(save_delay), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(ROOT / "gpt_final_version.py"), *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_for(condition, seconds=60.0):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return False


def temporary_files(folder: Path):
    return [p for p in folder.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("moment", ["mid-save", "mid-training"])
def test_sigkill_leaves_a_loadable_checkpoint_that_resumes(small_corpus, tmp_path, moment):
    out = tmp_path / "run.pt"
    proc = start_training(small_corpus, out, save_delay=0.5 if moment == "mid-save" else 0.0)
    try:
        assert wait_for(out.exists), "no checkpoint was written"
        if moment == "mid-save":  # a later save has written its temporary file but not renamed it
            assert wait_for(lambda: temporary_files(tmp_path)), "never caught a save in progress"
        else:
            time.sleep(0.3)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    state = load_checkpoint(str(out))
    assert state["iter_num"] >= 10 and state["iter_num"] % 10 == 0
    resume_five_more(out, tmp_path, state["iter_num"])


def resume_five_more(out: Path, tmp_path: Path, iter_num: int) -> None:
    resumed = run_command("gpt_final_version.py", f"--resume={out}", f"--max_iters={iter_num + 5}",
                          f"--out={tmp_path / 'resumed.pt'}", f"--notes={tmp_path / 'notes.txt'}", "--samples_dir=",
                          "--progress=false", "--eval_iters=2")
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming at iteration {iter_num}" in resumed.stdout
    assert load_checkpoint(str(tmp_path / "resumed.pt"))["iter_num"] == iter_num + 5


def test_sigkill_during_evaluation_keeps_the_checkpoint_before_it(small_corpus, tmp_path):
    """Evaluation of 1500 batches takes seconds while 10 tiny training steps take milliseconds: once
    step 20's losses are printed, 0.5 s later the run has saved step 30 and is evaluating it."""
    out = tmp_path / "run.pt"
    args = tiny_run_args(small_corpus, out, max_iters=100_000, save_interval=10, eval_interval=10, eval_iters=1500)
    proc = subprocess.Popen([sys.executable, str(ROOT / "gpt_final_version.py"), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"})
    try:
        for line in proc.stdout:
            if line.startswith("step 20:"):
                break
        time.sleep(0.5)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    assert load_checkpoint(str(out))["iter_num"] == 30
    assert load_checkpoint(str(tmp_path / "run.best.pt"))["iter_num"] == 20  # the best of evaluations 10 and 20
    assert not temporary_files(tmp_path)
    resume_five_more(out, tmp_path, 30)


def test_the_best_val_checkpoint_is_kept_apart_from_the_latest(small_corpus, tmp_path):
    import gpt_final_version

    out = tmp_path / "run.pt"
    result = gpt_final_version.main(tiny_run_args(small_corpus, out, max_iters=60, save_interval=20, eval_interval=20))
    best = load_checkpoint(str(tmp_path / "run.best.pt"))
    vals = {it: val for it, _, val in result.history}
    assert best["best_val_loss"] == pytest.approx(min(v for it, v in vals.items() if it < 60))
    assert best["iter_num"] == min((it for it in vals if it < 60), key=vals.get)
    assert load_checkpoint(str(out))["iter_num"] == 60


def test_a_non_finite_loss_stops_the_run_and_overwrites_nothing(small_corpus, tmp_path):
    out = tmp_path / "keep.pt"
    first = run_command("gpt_final_version.py", *tiny_run_args(small_corpus, out, max_iters=5))
    assert first.returncode == 0
    before = out.read_bytes()
    result = run_command("gpt_final_version.py", *tiny_run_args(small_corpus, out, max_iters=50, learning_rate=1e9,
                                                                grad_clip=0, warmup_iters=0))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "the loss became nan at iteration" in result.stderr and "--learning_rate" in result.stderr
    assert out.read_bytes() == before


def test_a_later_save_removes_the_temporary_file_of_a_killed_one(tmp_path):
    from gptlib.checkpoint import save_checkpoint

    abandoned, recent = tmp_path / ".run.pt.abc123.tmp", tmp_path / ".run.pt.def456.tmp"
    abandoned.write_bytes(b"half a checkpoint")
    os.utime(abandoned, (time.time() - 60, time.time() - 60))
    recent.write_bytes(b"maybe still being written")
    other = tmp_path / ".other.pt.xyz.tmp"
    other.write_bytes(b"another checkpoint's")
    os.utime(other, (time.time() - 60, time.time() - 60))
    save_checkpoint({"model": {}, "iter_num": 1}, str(tmp_path / "run.pt"))
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.pt.xyz.tmp", ".run.pt.def456.tmp", "run.pt"]
