"""Several processes through PyTorch's own engine: torchrun + DistributedDataParallel on the CPU
(gloo), compared with one process training on the same global batch."""
import os
import socket
import subprocess
import sys

import pytest
from conftest import ROOT, tiny_run_args

from gptlib import loss_curves
from gptlib.checkpoint import load_checkpoint
from model_handler import ModelHandler

pytestmark = pytest.mark.slow  # real processes: the whole module is in the slow tier


def torchrun(nproc: int, *args) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "gpt_final_version.py", *map(str, args)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=240, env=env)


def single(*args) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "gpt_final_version.py", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=240, env=env)


def final_losses(result) -> tuple[float, float]:
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    line = [row for row in result.stdout.splitlines() if row.startswith("final:")]
    assert len(line) == 1, result.stdout  # one report, from rank 0 only
    fields = dict(part.split("=", 1) for part in line[0].split()[1:])
    return float(fields["train_loss"]), float(fields["val_loss"])


@pytest.fixture(scope="module")
def runs(tmp_path_factory, shakespeare_path):
    """Two processes x batch 4 x 2 accumulation steps, and one process x batch 8 x 2 steps: the same
    windows, so the same training up to float rounding. Then each checkpoint resumed by the other way."""
    folder = tmp_path_factory.mktemp("ddp")
    data = folder / "text.txt"
    data.write_text(shakespeare_path.read_text(encoding="utf-8")[:100_000], encoding="utf-8")
    common = dict(max_iters=24, eval_interval=12, gradient_accumulation_steps=2)
    ddp_dir, one_dir, fsdp_dir = folder / "ddp", folder / "one", folder / "fsdp"
    ddp_dir.mkdir(), one_dir.mkdir(), fsdp_dir.mkdir()
    results = {
        "ddp": torchrun(2, *tiny_run_args(data, ddp_dir / "model.pt", batch_size=4, **common)),
        "fsdp": torchrun(2, *tiny_run_args(data, fsdp_dir / "model.pt", batch_size=4, fsdp="true", **common)),
        "one": single(*tiny_run_args(data, one_dir / "model.pt", batch_size=8, **common)),
    }
    results["ddp_resumed_alone"] = single(f"--resume={ddp_dir / 'model.pt'}", "--max_iters=30",
                                          f"--out={folder / 'ddp_then_one.pt'}", "--notes=", "--sample_chars=0")
    results["one_resumed_by_ddp"] = torchrun(2, f"--resume={one_dir / 'model.pt'}", "--max_iters=30",
                                             f"--out={folder / 'one_then_ddp.pt'}", "--notes=", "--sample_chars=0")
    results["fsdp_resumed_alone"] = single(f"--resume={fsdp_dir / 'model.pt'}", "--max_iters=30",
                                           f"--out={folder / 'fsdp_then_one.pt'}", "--notes=", "--sample_chars=0")
    results["one_resumed_by_fsdp"] = torchrun(2, f"--resume={one_dir / 'model.pt'}", "--max_iters=30", "--fsdp=true",
                                              f"--out={folder / 'one_then_fsdp.pt'}", "--notes=", "--sample_chars=0")
    return folder, results


def test_two_processes_match_one_process_with_the_same_global_batch(runs):
    _, results = runs
    ddp, one = final_losses(results["ddp"]), final_losses(results["one"])
    assert ddp == pytest.approx(one, abs=2e-4)
    assert "processes: 2 (torchrun, gloo)" in results["ddp"].stdout
    assert "tokens per iteration: 512 (batch 4 x context 32 x 2 accumulation steps x 2 processes)" in results["ddp"].stdout


def test_only_rank_0_writes_one_checkpoint_one_sample_and_one_notes_line(runs):
    folder, results = runs
    written = sorted(p.relative_to(folder / "ddp").as_posix() for p in (folder / "ddp").rglob("*"))
    picture = ["model.png"] if loss_curves.matplotlib_available() else []
    assert written == sorted(["model.csv", "model.pt", "notes.txt", "samples", "samples/model.txt", *picture])
    steps = [row["step"] for row in loss_curves.read_csv(folder / "ddp/model.csv")]
    assert steps == sorted(set(steps)) and steps[-1] == load_checkpoint(str(folder / "ddp/model.pt"))["iter_num"]
    assert len((folder / "ddp/notes.txt").read_text().splitlines()) == 1
    assert results["ddp"].stdout.count("step 12:") == 1


def test_a_ddp_checkpoint_is_a_plain_one_and_resumes_either_way(runs):
    folder, results = runs
    state = load_checkpoint(str(folder / "ddp/model.pt"))
    assert not any(name.startswith("module.") for name in state["model"])
    assert ModelHandler(str(folder / "ddp/model.pt"), "cpu").load().generate("T", 10, seed=1)[0].startswith("T")
    alone, by_ddp = final_losses(results["ddp_resumed_alone"]), final_losses(results["one_resumed_by_ddp"])
    assert "resuming at iteration 24" in results["ddp_resumed_alone"].stdout
    assert "resuming at iteration 24" in results["one_resumed_by_ddp"].stdout
    # the DDP run resumed by one process at batch 4 differs from one resumed by two processes at
    # batch 4 each (8 in all): both continue, and neither loses what was learned
    for _train_loss, val_loss in (alone, by_ddp):
        assert val_loss < final_losses(results["one"])[1] + 0.05


def test_fsdp_shards_the_same_training_and_its_checkpoints_are_plain_ones_that_resume_either_way(runs):
    """fully_shard over two processes: the numbers of DDP (and of one process on the same global
    batch), a checkpoint with whole tensors and a positional optimizer state renamed both ways."""
    folder, results = runs
    assert "weights, gradients and optimizer state sharded (FSDP): each process holds 1/2" in results["fsdp"].stdout
    assert "model: GPT with" in results["fsdp"].stdout
    assert final_losses(results["fsdp"]) == pytest.approx(final_losses(results["one"]), abs=2e-4)
    sharded, plain = load_checkpoint(str(folder / "fsdp/model.pt")), load_checkpoint(str(folder / "ddp/model.pt"))
    assert {name: tuple(t.shape) for name, t in sharded["model"].items()} == \
        {name: tuple(t.shape) for name, t in plain["model"].items()}
    assert ModelHandler(str(folder / "fsdp/model.pt"), "cpu").load().generate("T", 10, seed=1)[0].startswith("T")
    assert (folder / "fsdp/samples/model.txt").is_file()  # the end-of-run sample, from the gathered weights
    # resumed: one process from the sharded checkpoint (its state keyed by names) as from DDP's, and
    # two sharded processes from one process's checkpoint (keyed by position) as DDP resumes it
    assert final_losses(results["fsdp_resumed_alone"]) == pytest.approx(final_losses(results["ddp_resumed_alone"]), abs=2e-4)
    assert final_losses(results["one_resumed_by_fsdp"]) == pytest.approx(final_losses(results["one_resumed_by_ddp"]), abs=2e-4)


def test_fsdp_refuses_what_it_cannot_shard(tmp_path):
    from config import TrainConfig
    from gptlib.errors import UserError
    with pytest.raises(UserError, match="Muon orthogonalises whole matrices: add --optimizer=adamw"):
        TrainConfig(fsdp=True, optimizer="muon").validate()
    with pytest.raises(UserError, match="drop --fsdp"):
        TrainConfig(fsdp=True, lora_rank=4, init_from="gpt2").validate()


def test_two_machines_are_two_torchrun_launches_that_meet_at_a_master_address(tmp_path, shakespeare_path):
    """`--nnodes=2 --node_rank=N --master_addr=...` as on two machines, here both on loopback, with a
    memory-mapped corpus that the first process of each 'machine' prepares."""
    data = tmp_path / "text.txt"
    data.write_text(shakespeare_path.read_text(encoding="utf-8")[:100_000], encoding="utf-8")
    with socket.socket() as probe:  # a free port for the rendezvous
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    nodes = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes=2", f"--node_rank={rank}",
                               "--nproc_per_node=1", "--master_addr=127.0.0.1", f"--master_port={port}",
                               "gpt_final_version.py", *tiny_run_args(data, tmp_path / "model.pt", max_iters=20,
                                                                     memmap="true")],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for rank in (0, 1)]
    outputs = [node.communicate(timeout=240) for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs[0][1][-2000:] + outputs[1][1][-2000:]
    first, second = outputs[0][0], outputs[1][0]
    assert "processes: 2 (torchrun, gloo)" in first and "x 2 processes" in first
    assert first.count("final: iters=20") == 1 and "final:" not in second  # rank 0 alone reports
    assert len((tmp_path / "notes.txt").read_text().splitlines()) == 1
    assert load_checkpoint(str(tmp_path / "model.pt"))["iter_num"] == 20
