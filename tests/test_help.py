"""Every command answers --help with its options and does nothing else: exit 0, nothing written."""
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import ROOT

pytestmark = pytest.mark.slow  # real processes

COMMANDS = {  # the command, and two options its help must name
    "gpt_final_version.py": (["gpt_final_version.py"], ("--max_iters", "--preset", "--task")),
    "bigram.py": (["bigram.py"], ("--max_iters", "--learning_rate")),
    "model_handler.py": (["model_handler.py"], ("--prompt", "--export", "--report", "--classify")),
    "chat_data.py": (["chat_data.py"], ("--me", "--out", "--senders")),
    "serve.py": (["serve.py"], ("--port", "--api_key")),
    "benchmarks.bench": (["-m", "benchmarks.bench"], ("--only", "--quick")),
    "benchmarks.bench_scale": (["-m", "benchmarks.bench_scale"], ("--only", "--requests")),
    "benchmarks.bench_minutes": (["-m", "benchmarks.bench_minutes"], ("--levers", "--minutes")),
    "benchmarks.bench_dtype": (["-m", "benchmarks.bench_dtype"], ("--quick", "bfloat16")),
    "benchmarks.machine": (["-m", "benchmarks.machine"], ("--device", "--flash")),
    "benchmarks.tokenizers": (["-m", "benchmarks.tokenizers"], ("--vocab_size", "--data")),
    "benchmarks.privacy": (["-m", "benchmarks.privacy"], ("--region", "--write_chat")),
    "benchmarks.soak": (["-m", "benchmarks.soak"], ("--minutes", "--clients")),
    "benchmarks.bench_hub": (["-m", "benchmarks.bench_hub"], ("--quick", "peft")),
    "benchmarks.classify": (["-m", "benchmarks.classify"], ("--only", "--write_reviews")),
}


def run_help(name: str, workdir) -> tuple[str, subprocess.CompletedProcess]:
    command, _ = COMMANDS[name]
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    script = [str(ROOT / command[0])] if command[0].endswith(".py") else command
    return name, subprocess.run([sys.executable, *script, "--help"], cwd=workdir, capture_output=True, text=True,
                                timeout=120, env=env)


def test_every_command_answers_help_and_does_nothing_else(tmp_path):
    folders = {name: tmp_path / name for name in COMMANDS}
    for folder in folders.values():
        folder.mkdir()
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = dict(pool.map(lambda name: run_help(name, folders[name]), COMMANDS))
    for name, result in results.items():
        assert result.returncode == 0, f"{name}: {result.stderr[-1500:]}"
        for option in COMMANDS[name][1]:
            assert option in result.stdout, f"{name} --help does not name {option}"
        assert list(folders[name].iterdir()) == [], f"{name} --help wrote {list(folders[name].iterdir())}"
