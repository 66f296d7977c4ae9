"""bfloat16 on a CPU that multiplies it in hardware: --dtype=auto takes it where the step is
matmul-bound (a pure rule over the machine's facts and the step's shape, tested on fabricated
machines), training in it agrees with float32, the val loss is the float32 model's in both, a
bfloat16-trained checkpoint is float32 and resumes on a CPU without it, and generating picks
bfloat16 weights where they pay."""
from __future__ import annotations

import math

import pytest
import torch
from conftest import tiny_run_args

import gpt_final_version
from gptlib import devices, train
from gptlib.checkpoint import load_checkpoint
from gptlib.corpus import TextDataset
from gptlib.devices import DeviceFacts, StepShape, choose_dtype, inference_dtype
from model_handler import ModelHandler

WITH_BF16 = DeviceFacts("cpu", torch_version=(2, 13), cpu_bf16=True)  # a Zen 4 or Sapphire Rapids laptop/server
WITHOUT_BF16 = DeviceFacts("cpu", torch_version=(2, 13), cpu_bf16=False)  # an older Intel laptop
CPU_PRESET = StepShape(n_embd=192, tokens=16 * 128)  # 7.5e7: gains ~1.1x here
LECTURE = StepShape(n_embd=384, tokens=16 * 256)  # 6.0e8: ~1.9x


@pytest.mark.parametrize("facts, shape, dtype", [
    (WITH_BF16, LECTURE, "bfloat16"),
    (WITH_BF16, CPU_PRESET, "float32"),  # too little matmul work per step to gain
    (WITH_BF16, None, "bfloat16"),  # no step to judge
    (WITHOUT_BF16, LECTURE, "float32"),
    (WITHOUT_BF16, CPU_PRESET, "float32"),
])
def test_auto_on_a_cpu_follows_the_hardware_and_the_shape(facts, shape, dtype):
    choice = choose_dtype("auto", facts, shape)
    assert (choice.dtype, choice.use_grad_scaler, choice.autocast_device_type) == (dtype, False, "cpu")
    assert ("bfloat16" in choice.reason) and ("--dtype=" in choice.reason or "no bfloat16" in choice.reason)


def test_the_rule_is_a_threshold_on_matmul_work():
    assert not devices.cpu_bfloat16_pays(StepShape(256, int(devices.CPU_BF16_MIN_WORK // 256 ** 2) - 1))
    assert devices.cpu_bfloat16_pays(StepShape(256, int(devices.CPU_BF16_MIN_WORK // 256 ** 2) + 1))


def test_asked_dtypes_on_a_cpu_are_kept_and_emulation_is_said():
    assert choose_dtype("float32", WITH_BF16, LECTURE).dtype == "float32"
    assert choose_dtype("bfloat16", WITH_BF16, CPU_PRESET).dtype == "bfloat16"
    emulated = choose_dtype("bfloat16", WITHOUT_BF16, LECTURE)
    assert emulated.dtype == "bfloat16" and "emulated" in emulated.reason


def test_gpus_and_macs_keep_their_choices():
    a100 = DeviceFacts("cuda", 1, (8, 0), True, True, "linux", (2, 13), None, False, "A100")
    assert choose_dtype("auto", a100, CPU_PRESET).dtype == "bfloat16"
    assert choose_dtype("auto", DeviceFacts("mps", platform="darwin", torch_version=(2, 13), macos_version=(14, 0),
                                            mps_available=True), LECTURE).dtype == "float32"
    assert inference_dtype("auto", a100, True)[0] == "float32"


@pytest.mark.parametrize("facts, compiled, dtype", [
    (WITH_BF16, True, "bfloat16"), (WITH_BF16, False, "float32"), (WITHOUT_BF16, True, "float32"),
])
def test_generating_takes_bfloat16_weights_where_they_pay(facts, compiled, dtype):
    """Measured: a compiled step runs 2x faster in bfloat16 at 10.7M parameters; the eager step slower."""
    chosen, reason = inference_dtype("auto", facts, compiled)
    assert chosen == dtype and reason
    assert inference_dtype("float32", WITH_BF16, compiled)[0] == "float32"
    assert inference_dtype("bfloat16", WITHOUT_BF16, compiled) == ("bfloat16", "bfloat16 weights as asked (this CPU emulates it, slowly)")


def test_the_cpus_own_probe_is_what_the_facts_say():
    assert devices.probe("cpu").cpu_bf16 == devices.cpu_has_bf16()


# ----------------------------------------------------------------------------------------------
# Training in bfloat16


def run(small_corpus, out, dtype, **extra):
    options = dict(max_iters=150, eval_interval=50, eval_iters=8, n_layer=2, n_embd=48, n_head=4, block_size=32,
                   learning_rate=3e-3, dtype=dtype)
    return gpt_final_version.main(tiny_run_args(small_corpus, out, **{**options, **extra}))


def test_bfloat16_training_follows_the_float32_loss_curve(small_corpus, tmp_path, capsys):
    """150 steps of the same model from the same seed: every evaluation within 0.02 of float32's
    (measured here: within 0.003), the loss falling alike."""
    f32 = run(small_corpus, tmp_path / "f32.pt", "float32")
    bf16 = run(small_corpus, tmp_path / "bf16.pt", "bfloat16")
    assert "dtype: bfloat16" in capsys.readouterr().out
    assert [it for it, _, _ in f32.history] == [it for it, _, _ in bf16.history]
    for (_, train_a, val_a), (_, train_b, val_b) in zip(f32.history, bf16.history):
        assert abs(train_a - train_b) < 0.02 and abs(val_a - val_b) < 0.02
    assert bf16.val_loss < math.log(59) - 1.5  # it learned (from ~4.08), as float32 did


def test_a_bfloat16_run_is_scored_and_saved_in_float32_and_resumes_without_bfloat16(small_corpus, tmp_path,
                                                                                     monkeypatch, capsys):
    out = tmp_path / "bf16.pt"
    result = run(small_corpus, out, "bfloat16", max_iters=60, eval_interval=60)
    state = load_checkpoint(out)
    assert all(t.dtype == torch.float32 for t in state["model"].values() if t.is_floating_point())
    # the reported val loss is the float32 model's: the same evaluation of the reloaded weights gives it
    model = ModelHandler(str(out), "cpu").load().model
    dataset = TextDataset.from_text(small_corpus.read_text(encoding="utf-8"))
    cfg = train.TrainConfig(**{**state["train_config"], "device": "cpu"})
    losses = train.estimate_loss(model, dataset, cfg, model.config.block_size, "cpu")
    assert losses["val"] == pytest.approx(result.val_loss, abs=1e-6)
    # resumed where the CPU has no bfloat16 units (--dtype=auto): float32, and it trains on
    monkeypatch.setattr(devices, "cpu_has_bf16", lambda: False)
    capsys.readouterr()
    resumed = gpt_final_version.main([f"--resume={out}", "--max_iters=80", "--dtype=auto", "--progress=false"])
    printed = capsys.readouterr().out
    assert "dtype: float32 (this CPU has no bfloat16 matmul in hardware" in printed and resumed.iters == 80
