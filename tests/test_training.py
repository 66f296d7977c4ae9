"""The training loop end to end on small runs: what it writes, exact resume, evaluation, baselines."""
import math
import os
import re
import signal
import time

import pytest
import torch
from conftest import tiny_run_args

import bigram
import gpt_final_version
from config import TrainConfig
from gptlib import optimizers, train
from gptlib.checkpoint import load_checkpoint, save_checkpoint
from gptlib.corpus import TextDataset
from gptlib.errors import UserError
from model_handler import ModelHandler


def test_a_run_writes_checkpoint_sample_notes_and_a_final_line(small_corpus, tmp_path, capsys):
    out = tmp_path / "run.pt"
    result = gpt_final_version.main(tiny_run_args(small_corpus, out, max_iters=20, n_layer=1))
    printed = capsys.readouterr().out
    assert out.is_file() and (tmp_path / "samples" / "run.txt").read_text(encoding="utf-8")
    last = printed.strip().splitlines()[-1]
    assert re.fullmatch(r"final: iters=20 train_loss=[\d.]+ val_loss=[\d.]+ best_val_loss=[\d.]+ val_bpb=[\d.]+ params=\d+ "
                        r"tokens_per_s=\d+ seconds=[\d.]+ checkpoint=\S+run\.pt", last), last
    assert f"params={result.params}" in last and result.iters == 20
    for expected in ("device: cpu", "parameters", "tokens per iteration: 512", "dtype: float32"):
        assert expected in printed
    notes = (tmp_path / "notes.txt").read_text().splitlines()
    assert len(notes) == 1
    assert "run.pt" in notes[0] and "n_layer=1" in notes[0] and "iters=20" in notes[0] and "tokens/s" in notes[0]
    assert f"val_loss={result.val_loss:.4f}" in notes[0]


def test_loss_falls_during_training(small_corpus, tmp_path):
    result = gpt_final_version.main(tiny_run_args(small_corpus, tmp_path / "a.pt", max_iters=150,
                                                  learning_rate=3e-3, eval_interval=50))
    vals = [val for _, _, val in result.history]
    assert vals == sorted(vals, reverse=True)  # falls at every evaluation
    assert result.val_loss < math.log(59) - 1.2  # from ~4.08 at initialisation (59 characters)


def test_bigram_beats_its_initial_loss(shakespeare_path, tmp_path):
    result = bigram.main(tiny_run_args(shakespeare_path, tmp_path / "bigram.pt", preset="bigram",
                                       max_iters=600, eval_interval=300, eval_iters=20))
    assert result.val_loss < math.log(65) - 1.0  # from ~4.17 at start
    assert result.val_loss < 2.75


def test_save_then_load_gives_identical_logits(small_corpus, tmp_path):
    out = tmp_path / "m.pt"
    gpt_final_version.main(tiny_run_args(small_corpus, out, max_iters=5))
    handler = ModelHandler(str(out), "cpu").load()
    torch.manual_seed(0)
    idx = torch.randint(len(handler.vocab), (2, 32))
    again = ModelHandler(str(out), "cpu").load()
    torch.testing.assert_close(handler.model(idx)[0], again.model(idx)[0], rtol=0, atol=0)
    # and the reloaded weights are exactly the saved ones
    saved = load_checkpoint(str(out))["model"]
    for name, value in again.model.state_dict().items():
        assert torch.equal(value, saved[name])


def test_resume_is_exact(small_corpus, tmp_path):
    """N iterations, save, resume to 2N == 2N iterations in one run (same schedule, same batches)."""
    common = dict(lr_decay_iters=40, eval_interval=10, dropout=0.1, sample_chars=0)
    gpt_final_version.main(tiny_run_args(small_corpus, tmp_path / "half.pt", max_iters=20, **common))
    resumed = tmp_path / "resumed.pt"
    gpt_final_version.main(["--resume=" + str(tmp_path / "half.pt"), "--max_iters=40", f"--out={resumed}",
                            f"--notes={tmp_path / 'notes.txt'}", "--progress=false"])
    gpt_final_version.main(tiny_run_args(small_corpus, tmp_path / "full.pt", max_iters=40, **common))
    a, b = load_checkpoint(str(resumed)), load_checkpoint(str(tmp_path / "full.pt"))
    assert a["iter_num"] == b["iter_num"] == 40
    for name, value in b["model"].items():
        assert torch.equal(a["model"][name], value), name


def test_resume_refuses_a_different_model_shape(small_corpus, tmp_path):
    gpt_final_version.main(tiny_run_args(small_corpus, tmp_path / "m.pt", max_iters=2, sample_chars=0))
    with pytest.raises(UserError, match=r"--n_layer=5 differs from the checkpoint's n_layer=2"):
        gpt_final_version.main([f"--resume={tmp_path / 'm.pt'}", "--n_layer=5"])


@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGTERM"])
def test_a_stop_signal_saves_where_training_got_to_and_reports(small_corpus, tmp_path, monkeypatch, capsys,
                                                                signal_name):
    """Ctrl-C and SIGTERM (kill, docker stop, schedulers) arrive in the middle of step 7: that step
    finishes, the checkpoint is saved at 7, and the run ends with its final line."""
    real_step, calls = train.train_step, []

    def step_with_a_signal(*args):
        calls.append(1)
        if len(calls) == 7:
            os.kill(os.getpid(), getattr(signal, signal_name))
        return real_step(*args)

    monkeypatch.setattr(train, "train_step", step_with_a_signal)
    out = tmp_path / "stopped.pt"
    result = gpt_final_version.main(tiny_run_args(small_corpus, out, max_iters=100))
    assert result.iters == 7 and result.interrupted == signal_name
    assert load_checkpoint(str(out))["iter_num"] == 7
    printed = capsys.readouterr().out
    assert f"{signal_name} at iteration 7: saved" in printed and "final: iters=7" in printed
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handlers are put back


def test_estimate_loss_uses_eval_mode_and_no_gradients(small_corpus):
    seen = []

    class Recorder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(65))

        def forward(self, x, y):
            seen.append((self.training, torch.is_grad_enabled()))
            logits = self.w.expand(*x.shape, 65)
            return logits, torch.nn.functional.cross_entropy(logits.reshape(-1, 65), y.reshape(-1))

    model = Recorder().train()
    dataset = TextDataset.from_text(small_corpus.read_text(encoding="utf-8"))
    losses = train.estimate_loss(model, dataset, TrainConfig(eval_iters=3, batch_size=2), 8, "cpu")
    assert seen == [(False, False)] * 6
    assert model.training  # put back as it was
    assert losses["train"] == pytest.approx(math.log(65), abs=1e-4)


def test_learning_rate_warms_up_then_decays_to_min_lr():
    cfg = TrainConfig(learning_rate=1e-3, min_lr=1e-4, warmup_iters=10, max_iters=110)
    rates = [optimizers.learning_rate_at(i, cfg) for i in range(120)]
    assert rates[0] < rates[5] < rates[9] <= 1e-3
    assert rates[10] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(rates[10:], rates[11:]))
    assert rates[110] == rates[119] == pytest.approx(1e-4)


def test_a_failed_save_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    path = tmp_path / "keep.pt"
    state = {"model": {"w": torch.ones(3)}, "model_config": {}, "train_config": {}, "vocab": ["a"], "iter_num": 1}
    save_checkpoint(state, str(path))
    before = path.read_bytes()

    def disk_full(obj, f):
        f.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(UserError, match="No space left on device.*untouched"):
        save_checkpoint({**state, "iter_num": 2}, str(path))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["keep.pt"]  # no temporary file left behind


def test_train_split_must_be_longer_than_the_context_and_a_short_val_split_uses_shorter_windows():
    dataset = TextDataset.from_text("hello world " * 10)  # 108 train, 12 val characters
    with pytest.raises(UserError, match="train split has 108 characters.*--block_size"):
        dataset.check_fits(108)
    dataset.check_fits(32)
    x, y = dataset.get_batch("val", 4, 32, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (4, 11)  # the whole val split in every window
    with pytest.raises(UserError, match="val split has 1 characters"):
        TextDataset(torch.arange(10), dataset.vocab, split_at=9).check_fits(4)


def test_gradient_accumulation_equals_one_step_on_a_larger_batch(small_corpus):
    """k micro-batches of b then one optimizer step == one step on a batch of k*b (same windows)."""
    from config import GPTConfig
    from gpt_final_version import GPT

    dataset = TextDataset.from_text(small_corpus.read_text(encoding="utf-8"))
    model_cfg = GPTConfig(vocab_size=len(dataset.vocab), block_size=16, n_embd=32, n_head=2, n_layer=2, dropout=0.0)
    weights = []
    for batch_size, steps in ((8, 4), (32, 1)):
        torch.manual_seed(0)
        model = GPT(model_cfg)
        cfg = TrainConfig(batch_size=batch_size, gradient_accumulation_steps=steps)
        optimizer = optimizers.configure_optimizer(model, cfg, "cpu")
        loss = train.train_step(model, optimizer, torch.amp.GradScaler(enabled=False), dataset, cfg, model_cfg,
                                 "cpu", torch.autocast("cpu", enabled=False), torch.Generator().manual_seed(3))
        weights.append((loss, [p.detach().clone() for p in model.parameters()]))
    (loss_a, a), (loss_b, b) = weights
    assert loss_a == pytest.approx(loss_b, rel=1e-5)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-5)  # Adam amplifies rounding in near-zero gradients


def test_weights_that_do_not_fit_the_config_say_what_differs(small_corpus, tmp_path):
    out = tmp_path / "m.pt"
    gpt_final_version.main(tiny_run_args(small_corpus, out, max_iters=2, sample_chars=0))
    state = load_checkpoint(str(out))
    state["model_config"]["n_embd"] = 64  # the config no longer describes the weights
    state["model_config"]["n_head"] = 2
    del state["format_version"]
    save_checkpoint(state, str(tmp_path / "edited.pt"))
    with pytest.raises(UserError, match=r"token_embedding.weight is \(59, 32\) in the file but \(59, 64\) in the model"):
        ModelHandler(str(tmp_path / "edited.pt"), "cpu").load()
    with pytest.raises(UserError, match="do not fit the model's config"):
        gpt_final_version.main([f"--resume={tmp_path / 'edited.pt'}", "--max_iters=3"])


def test_a_checked_in_checkpoint_of_format_1_still_loads_and_generates():
    """tests/fixtures/checkpoint_v1.pt was written by: python gpt_final_version.py --preset=tiny
    --max_iters=5 --n_embd=16 --n_head=2 --n_layer=1 --block_size=16 --data=(first 20,000 characters
    of tiny-shakespeare) --out=tests/fixtures/checkpoint_v1.pt. If the format changes, upgrade() must
    keep this file loading."""
    from conftest import ROOT

    handler = ModelHandler(str(ROOT / "tests/fixtures/checkpoint_v1.pt"), "cpu").load()
    assert handler.state["format_version"] == 1 and handler.state["iter_num"] == 5
    sample = handler.generate("ROMEO:", max_new_tokens=20, seed=1)[0]
    assert sample.startswith("ROMEO:") and len(sample) == 26


def test_a_format_0_checkpoint_is_upgraded_on_load(tmp_path, capsys):
    from conftest import ROOT

    state = torch.load(ROOT / "tests/fixtures/checkpoint_v1.pt", weights_only=True)
    for key in ("format_version", "model_kind", "best_val_loss"):
        del state[key]
    torch.save(state, tmp_path / "old.pt")
    upgraded = load_checkpoint(str(tmp_path / "old.pt"))
    assert upgraded["format_version"] == 1 and upgraded["model_kind"] == "gpt"
    assert upgraded["best_val_loss"] == float("inf")
    assert "upgraded" in capsys.readouterr().out


def test_a_timed_run_lays_the_schedule_over_its_minutes():
    cfg = TrainConfig(learning_rate=1e-3, min_lr=1e-4, warmup_iters=10, max_iters=50, max_minutes=5)
    assert optimizers.learning_rate_at(5, cfg, time_fraction=0.9) < 1e-3  # warm-up is counted in steps
    assert optimizers.learning_rate_at(500, cfg, time_fraction=0.0) == pytest.approx(1e-3)  # past max_iters: unused
    assert optimizers.learning_rate_at(500, cfg, time_fraction=0.5) == pytest.approx(5.5e-4)
    assert optimizers.learning_rate_at(500, cfg, time_fraction=1.0) == pytest.approx(1e-4)


@pytest.mark.slow
def test_max_minutes_trains_for_the_budget_with_evaluation_and_save_inside_it(small_corpus, tmp_path, capsys):
    budget = 12.0  # seconds; margins are wide because shared machines are noisy
    started = time.time()
    result = gpt_final_version.main(tiny_run_args(small_corpus, tmp_path / "timed.pt", max_minutes=budget / 60,
                                                  max_iters=5, eval_interval=100, eval_iters=5))
    wall = time.time() - started
    assert budget * 0.5 < wall < budget + 6, wall
    assert result.iters > 5  # max_iters is not what ends a timed run
    printed = capsys.readouterr().out
    assert "for 0.2 minutes of wall-clock time" in printed and f"{result.iters} steps in this run" in printed
    curve = load_checkpoint(str(tmp_path / "timed.pt"))["curve"]
    assert curve[-1]["learning_rate"] < 1e-4 + 0.25 * (3e-3 - 1e-4)  # decayed over the time (tiny: 3e-3 -> 1e-4)


def test_tokens_per_s_is_the_steady_speed_without_the_first_step(small_corpus, tmp_path, monkeypatch):
    """The first step is where torch.compile compiles (tens of seconds): it is timed apart, so the
    reported speed is what the run sustains (here a 2 s first step stands in for compiling)."""
    real_step, calls = train.train_step, []

    def slow_first_step(*args):
        calls.append(1)
        if len(calls) == 1:
            time.sleep(2.0)
        return real_step(*args)

    monkeypatch.setattr(train, "train_step", slow_first_step)
    result = gpt_final_version.main(tiny_run_args(small_corpus, tmp_path / "r.pt", max_iters=20))
    assert result.first_step_seconds >= 2.0
    assert result.tokens_per_s >= 512 * 19 / (result.seconds - 2.0)  # the 19 later steps took at most that
