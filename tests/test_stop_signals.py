"""SIGTERM (kill, docker stop, Kubernetes, batch schedulers) stops a real training process the way
Ctrl-C does: the step in progress finishes, the checkpoint is saved, the final line is printed, and
the exit status is 0; under torchrun every process stops at the same step."""
import os
import signal
import subprocess
import sys
import threading

import pytest
from conftest import ROOT, tiny_run_args

from gptlib.checkpoint import load_checkpoint

pytestmark = pytest.mark.slow


def start(command: list[str]) -> tuple[subprocess.Popen, list[str], threading.Event]:
    """Start a process; collect its output lines; set the event once an evaluation line shows."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines, evaluated = [], threading.Event()

    def read():
        for line in process.stdout:
            lines.append(line)
            if line.startswith("step "):
                evaluated.set()

    threading.Thread(target=read, daemon=True).start()
    return process, lines, evaluated


def stop_with_sigterm(process, evaluated) -> int:
    try:
        assert evaluated.wait(timeout=180), "training never reached its first evaluation"
        process.send_signal(signal.SIGTERM)
        return process.wait(timeout=120)
    finally:
        process.kill()


def test_sigterm_saves_where_training_got_to_and_exits_cleanly(small_corpus, tmp_path):
    out = tmp_path / "run.pt"
    args = tiny_run_args(small_corpus, out, max_iters=1_000_000, eval_interval=20, eval_iters=2)
    process, lines, evaluated = start([sys.executable, "gpt_final_version.py", *args])
    status = stop_with_sigterm(process, evaluated)
    output = "".join(lines)
    assert status == 0, output
    assert "Traceback" not in output
    stopped_at = load_checkpoint(str(out))["iter_num"]
    assert stopped_at >= 20
    assert f"SIGTERM at iteration {stopped_at}: saved" in output and f"final: iters={stopped_at} " in output


def test_sigterm_to_torchrun_stops_every_process_at_the_same_step(small_corpus, tmp_path):
    out = tmp_path / "ddp.pt"
    args = tiny_run_args(small_corpus, out, max_iters=1_000_000, eval_interval=20, eval_iters=2)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "gpt_final_version.py", *args]
    process, lines, evaluated = start(command)
    stop_with_sigterm(process, evaluated)  # torchrun passes SIGTERM on to its workers
    output = "".join(lines)
    stopped_at = load_checkpoint(str(out))["iter_num"]
    assert stopped_at >= 20, output
    assert f"SIGTERM at iteration {stopped_at}: saved" in output
    assert f"final: iters={stopped_at} " in output, output  # the evaluation after it needed both processes
    assert "Traceback" not in output.split("final:")[0]
