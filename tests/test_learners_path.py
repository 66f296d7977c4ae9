"""What a learner sees of a run: the loss curve beside the checkpoint (CSV always, PNG with
matplotlib), several runs on one chart, the lecture preset, and a checkpoint from another device's
preset resumed with this device's settings."""
import sys

import pytest
from conftest import tiny_run_args

import config
import gpt_final_version
import model_handler
from gptlib import loss_curves
from gptlib.checkpoint import load_checkpoint, save_checkpoint
from gptlib.errors import UserError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_a_run_writes_its_loss_curve_beside_the_checkpoint(small_corpus, tmp_path, capsys):
    out = tmp_path / "run.pt"
    gpt_final_version.main(tiny_run_args(small_corpus, out, max_iters=30, eval_interval=10, log_interval=5))
    rows = loss_curves.read_csv(tmp_path / "run.csv")
    assert (tmp_path / "run.csv").read_text().splitlines()[0] == ",".join(loss_curves.COLUMNS)
    assert [row["step"] for row in rows] == [5, 10, 15, 20, 25, 30]
    assert [row["step"] for row in rows if row["val_loss"] is not None] == [10, 20, 30]
    assert [row["tokens"] for row in rows] == [5 * 512 * k for k in range(1, 7)]  # batch 16 x context 32
    assert all(row["train_loss"] > 0 and row["tokens_per_s"] > 0 for row in rows)
    assert [row["seconds"] for row in rows] == sorted(row["seconds"] for row in rows)
    assert rows[-1]["val_loss"] == pytest.approx(load_checkpoint(str(out))["best_val_loss"], abs=1e-4)
    assert load_checkpoint(str(out))["curve"][-1]["step"] == 30  # the checkpoint carries its curve too
    if loss_curves.matplotlib_available():
        assert (tmp_path / "run.png").read_bytes()[:8] == PNG_MAGIC
        assert f"loss curve: {tmp_path / 'run.png'}" in capsys.readouterr().out


def test_a_resumed_run_continues_the_curve_of_the_run_it_resumes(small_corpus, tmp_path):
    first, second = tmp_path / "first.pt", tmp_path / "second.pt"
    gpt_final_version.main(tiny_run_args(small_corpus, first, max_iters=20, eval_interval=10, log_interval=10))
    gpt_final_version.main(tiny_run_args(small_corpus, second, resume=first, max_iters=40, log_interval=10))
    rows = loss_curves.read_csv(tmp_path / "second.csv")
    assert [row["step"] for row in rows] == [10, 20, 30, 40]
    assert rows[:2] == loss_curves.read_csv(tmp_path / "first.csv")
    assert rows[2]["seconds"] > rows[1]["seconds"]  # time goes on from where the first run ended


def test_without_matplotlib_the_csv_is_written_and_the_run_says_how_to_get_the_picture(
        small_corpus, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now fails
    out = tmp_path / "run.pt"
    gpt_final_version.main(tiny_run_args(small_corpus, out, max_iters=10))
    printed = capsys.readouterr().out
    assert (tmp_path / "run.csv").is_file() and not (tmp_path / "run.png").exists()
    assert printed.count("requirements-plot.txt") == 1
    assert f"--compare={tmp_path / 'run'}.png" in printed


def test_compare_draws_several_runs_and_one_run_alone(shakespeare_path, small_corpus, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    runs = []
    for name, options in {"bigram": dict(preset="bigram", max_iters=60, eval_interval=20),
                          "lecture": dict(preset="lecture", n_layer=1, n_head=2, n_embd=32, block_size=16,
                                          batch_size=8, max_iters=20, eval_interval=10, eval_iters=2),
                          "default": dict(max_iters=20, eval_interval=10)}.items():
        out = tmp_path / f"{name}.pt"
        script = __import__("bigram") if name == "bigram" else gpt_final_version
        script.main(tiny_run_args(small_corpus, out, **options))
        runs.append(str(out))
    labels = model_handler.main([*runs, f"--compare={tmp_path / 'runs.png'}"])
    assert (tmp_path / "runs.png").read_bytes()[:8] == PNG_MAGIC
    assert [label.split(" ")[0] for label in labels] == ["bigram", "lecture", "default"]
    assert "heads attention" in labels[1] and "fast attention" in labels[2]
    model_handler.main([runs[2], f"--compare={tmp_path / 'alone.png'}"])
    assert (tmp_path / "alone.png").read_bytes()[:8] == PNG_MAGIC


def test_compare_refuses_a_checkpoint_without_a_curve(small_corpus, tmp_path):
    out = tmp_path / "old.pt"
    gpt_final_version.main(tiny_run_args(small_corpus, out, max_iters=5))
    state = load_checkpoint(str(out))
    del state["curve"]
    save_checkpoint(state, str(out))
    (tmp_path / "old.csv").unlink()
    with pytest.raises(UserError, match="has no loss curve"):
        model_handler.main([str(out), str(out), f"--compare={tmp_path / 'x.png'}"])


def test_the_lecture_preset_is_the_lectures_model_and_hyperparameters():
    """The values of gpt.py in the "let's build GPT" lecture."""
    values = config.preset_values("lecture")
    assert values == {**values, "n_layer": 6, "n_head": 6, "n_embd": 384, "block_size": 256, "dropout": 0.2,
                      "batch_size": 64, "max_iters": 5000, "learning_rate": 3e-4, "eval_interval": 500,
                      "eval_iters": 200, "attention": "heads", "position": "learned", "activation": "relu"}
    assert values["min_lr"] == values["learning_rate"] and values["warmup_iters"] == 0  # a constant rate


def test_the_lecture_preset_trains_the_lectures_classes(small_corpus, tmp_path, capsys):
    out = tmp_path / "lecture.pt"
    gpt_final_version.main(tiny_run_args(small_corpus, out, preset="lecture", n_layer=1, n_head=2, n_embd=32,
                                         block_size=16, batch_size=8, max_iters=3, eval_iters=2))
    assert "per-Head (lecture) attention, learned positions, relu, dropout 0.2" in capsys.readouterr().out
    state = load_checkpoint(str(out))
    assert state["preset"] == "lecture" and any(".heads.0.key." in name for name in state["model"])


def test_a_gpu_preset_checkpoint_resumed_on_a_cpu_gets_the_cpus_settings(small_corpus, tmp_path, capsys):
    """As if trained on a GPU (compile, batch 64, 200 evaluation batches): resumed here, what depends
    on the device is chosen again, and the recipe (global batch, learning rate) is kept."""
    trained = tmp_path / "gpu.pt"
    gpt_final_version.main(tiny_run_args(small_corpus, trained, max_iters=4, batch_size=64))
    state = load_checkpoint(str(trained))
    state["preset"] = "gpu"
    state["train_config"].update(compile=True, batch_size=64, eval_iters=200)
    save_checkpoint(state, str(trained))
    resumed = tmp_path / "here.pt"
    gpt_final_version.main([f"--resume={trained}", "--max_iters=6", f"--out={resumed}", "--device=cpu",
                            f"--notes={tmp_path / 'n.txt'}", "--samples_dir=", "--progress=false"])
    printed = capsys.readouterr().out
    assert "on cpu: compile: True -> False" in printed
    settings = load_checkpoint(str(resumed))["train_config"]
    assert settings["compile"] is False and settings["eval_iters"] == 20
    assert settings["batch_size"] * settings["gradient_accumulation_steps"] == 64 and settings["batch_size"] == 16
    assert settings["learning_rate"] == state["train_config"]["learning_rate"]
