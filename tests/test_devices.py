"""Device decisions on fabricated machines: every GPU, Mac and torch version the issue names,
decided on this CPU. Each case states the exact decision, and each refusal names its fix."""
import dataclasses
import sys

import pytest
import torch

from config import GPTConfig, TrainConfig, preset_values
from gptlib import devices
from gptlib.cli import apply
from gptlib.devices import DeviceFacts, adapt_to_device, choose_dtype, split_batch
from gptlib.errors import UserError


def cuda(name, capability, hardware_bf16, triton=True, platform="linux", count=1, device="cuda"):
    return DeviceFacts(device, count, capability, hardware_bf16, triton, platform, (2, 13), None, False, name)


def mps(torch_version, macos):
    return DeviceFacts("mps", 0, None, False, False, "darwin", torch_version, (macos, 0), True)


H100 = cuda("H100", (9, 0), True)
A100 = cuda("A100", (8, 0), True)
T4 = cuda("Tesla T4", (7, 5), False)
V100 = cuda("V100", (7, 0), False)
P100 = cuda("Tesla P100", (6, 0), False)
GTX1080 = cuda("GTX 1080", (6, 1), False)
WINDOWS_RTX = cuda("RTX 3090", (8, 6), True, triton=False, platform="win32")
LINUX_NO_TRITON = cuda("A100", (8, 0), True, triton=False)
CPU = DeviceFacts("cpu", 0, None, False, False, "linux", (2, 13), None, False)


# ----------------------------------------------------------------------------------------------
# 1. compile only where it can work


@pytest.mark.parametrize("facts, compiles, why", [
    (H100, True, "capability 9.0"),
    (A100, True, "capability 8.0"),
    (T4, True, "capability 7.5"),
    (V100, True, "capability 7.0"),
    (P100, False, "7.0 (Volta) or newer; Tesla P100 is 6.0"),
    (GTX1080, False, "GTX 1080 is 6.1"),
    (WINDOWS_RTX, False, "pip install triton-windows"),
    (LINUX_NO_TRITON, False, "needs Triton, which is not installed"),
    (mps((2, 4), 14), False, "needs torch 2.8 or newer; this is torch 2.4"),
    (mps((2, 6), 14), False, "torch 2.8"),
    (mps((2, 8), 14), True, "torch 2.8+"),
    (CPU, True, "C++"),
])
def test_compile_only_where_it_can_work(facts, compiles, why):
    possible, reason = devices.can_compile(facts)
    assert possible is compiles
    assert why in reason


def test_a_compile_the_gpu_cannot_do_trains_eagerly_and_says_so_once():
    assert devices.compile_decision(True, P100) == (False, "note: torch.compile's Triton needs a GPU of compute "
                                                           "capability 7.0 (Volta) or newer; Tesla P100 is 6.0: "
                                                           "training without torch.compile")
    assert devices.compile_decision(True, A100) == (True, None)
    assert devices.compile_decision(False, P100) == (False, None)


@pytest.mark.parametrize("compiled, facts, expected", [(True, A100, True), (False, A100, False),
                                                      (True, CPU, False), (True, mps((2, 8), 14), False)])
def test_evaluation_uses_the_compiled_model_on_cuda(compiled, facts, expected):
    assert devices.compile_evaluation(compiled, facts) is expected


# ----------------------------------------------------------------------------------------------
# 2. precision on cuda: the hardware's bfloat16 answer, float16 with a scaler otherwise


@pytest.mark.parametrize("facts, dtype, scaled", [
    (H100, "bfloat16", False),
    (A100, "bfloat16", False),
    (T4, "float16", True),  # is_bf16_supported() says yes here (emulation): not taken
    (V100, "float16", True),
    (P100, "float16", True),  # double-rate float16
    (GTX1080, "float32", False),  # float16 at 1/64 speed
])
def test_auto_precision_on_cuda_follows_the_hardware(facts, dtype, scaled):
    choice = choose_dtype("auto", facts)
    assert (choice.dtype, choice.use_grad_scaler) == (dtype, scaled)
    assert choice.autocast_device_type == "cuda"
    assert choice.scaler_device == "cuda"


@pytest.mark.parametrize("facts", [T4, V100, P100, GTX1080])
def test_bfloat16_asked_on_a_gpu_that_would_emulate_it_is_refused_with_the_fix(facts):
    with pytest.raises(UserError, match=r"no bfloat16 hardware.*--dtype=float16"):
        choose_dtype("bfloat16", facts)


@pytest.mark.parametrize("requested, dtype, scaled", [("float16", "float16", True), ("bfloat16", "bfloat16", False),
                                                      ("float32", "float32", False)])
def test_asked_precision_on_an_a100(requested, dtype, scaled):
    choice = choose_dtype(requested, A100)
    assert (choice.dtype, choice.use_grad_scaler) == (dtype, scaled)


# ----------------------------------------------------------------------------------------------
# 3. precision on mps by torch and macOS version; the scaler on the run's own device

MPS_CASES = [  # (torch, macOS, asked) -> dtype, or the words of the refusal
    ((2, 4), 13, "bfloat16", "lacks (it arrived in torch 2.5)"), ((2, 4), 14, "bfloat16", "torch 2.5"),
    ((2, 4), 13, "float16", "torch 2.5"), ((2, 4), 14, "float16", "torch 2.5"),
    ((2, 5), 13, "bfloat16", "needs torch 2.6+ and macOS 14+; this is torch 2.5 on macOS 13.0"),
    ((2, 5), 14, "bfloat16", "needs torch 2.6+"),
    ((2, 5), 13, "float16", "from torch 2.8). Use --dtype=float32"),
    ((2, 5), 14, "float16", "from torch 2.8). Use --dtype=float32"),
    ((2, 6), 13, "bfloat16", "this is torch 2.6 on macOS 13.0. Use --dtype=float32"),
    ((2, 6), 14, "bfloat16", "bfloat16"),
    ((2, 6), 13, "float16", "from torch 2.8). Use --dtype=float32"),
    ((2, 6), 14, "float16", "from torch 2.8). Use --dtype=bfloat16"),
    ((2, 8), 13, "bfloat16", "macOS 14+"),
    ((2, 8), 14, "bfloat16", "bfloat16"),
    ((2, 8), 13, "float16", "float16"),
    ((2, 8), 14, "float16", "float16"),
]


@pytest.mark.parametrize("torch_version, macos, requested, expected", MPS_CASES)
def test_mps_precision_by_torch_and_macos_version(torch_version, macos, requested, expected):
    facts = mps(torch_version, macos)
    if expected in ("bfloat16", "float16"):
        choice = choose_dtype(requested, facts)
        assert choice == (expected, expected == "float16", "mps", "mps", choice.reason)
    else:
        with pytest.raises(UserError, match=r"^--dtype=" + requested) as refused:
            choose_dtype(requested, facts)
        assert expected in str(refused.value)


@pytest.mark.parametrize("torch_version", [(2, 4), (2, 5), (2, 6), (2, 8)])
@pytest.mark.parametrize("macos", [13, 14])
def test_mps_auto_and_float32_train_in_float32_on_every_version(torch_version, macos):
    for requested in ("auto", "float32"):
        assert choose_dtype(requested, mps(torch_version, macos)).dtype == "float32"


@pytest.mark.parametrize("facts", [mps((2, 8), 14), CPU])
def test_float16_off_cuda_scales_the_loss_on_its_own_device(facts):
    """GradScaler's default device is cuda: elsewhere it switched itself off and float16 trained unscaled."""
    choice = choose_dtype("float16", facts)
    assert (choice.use_grad_scaler, choice.scaler_device) == (True, facts.device_type)
    assert devices.grad_scaler(choice).is_enabled()


@pytest.mark.parametrize("requested, dtype, scaled", [("auto", "float32", False), ("bfloat16", "bfloat16", False),
                                                      ("float16", "float16", True), ("float32", "float32", False)])
def test_precision_on_the_cpu(requested, dtype, scaled):
    choice = choose_dtype(requested, CPU)
    assert (choice.dtype, choice.use_grad_scaler, choice.autocast_device_type) == (dtype, scaled, "cpu")


# ----------------------------------------------------------------------------------------------
# 7. TF32, device index, torchrun, bench's peak dtype


@pytest.mark.parametrize("dtype, facts, expected", [
    ("bfloat16", A100, True), ("bfloat16", H100, True),
    ("float32", A100, False), ("float32", H100, False),  # --dtype=float32 means float32
    ("float16", T4, False),  # no TF32 before Ampere
    ("float32", CPU, False), ("bfloat16", CPU, False), ("float32", mps((2, 8), 14), False),
])
def test_tf32_only_beside_mixed_precision_on_ampere_or_newer(dtype, facts, expected):
    assert devices.use_tf32(dtype, facts) is expected


def test_a_gpu_index_beyond_the_machines_gpus_is_refused_with_the_valid_range():
    two_gpus = dataclasses.replace(A100, cuda_device_count=2)
    with pytest.raises(UserError, match=r"--device=cuda:7: this machine has 2 GPU\(s\).*use cuda:0 to cuda:1"):
        devices.check_device_index("cuda:7", two_gpus)
    with pytest.raises(UserError, match=r"use cuda:0, or --device=cuda"):
        devices.check_device_index("cuda:1", A100)
    with pytest.raises(UserError, match=r"as in --device=cuda:0"):
        devices.check_device_index("cuda:one", A100)
    for fine in ("cuda", "cuda:0", "cuda:1", "cpu", "mps"):
        devices.check_device_index(fine, two_gpus)


def test_torchrun_setup_per_device():
    two_gpus = dataclasses.replace(A100, cuda_device_count=2)
    assert devices.distributed_setup("cuda", 1, two_gpus) == ("nccl", "cuda:1", torch.device("cuda", 1))
    assert devices.distributed_setup("cpu", 1, CPU) == ("gloo", "cpu", None)
    with pytest.raises(UserError, match="has 2 GPU.*lower --nproc_per_node"):
        devices.distributed_setup("cuda", 2, two_gpus)
    with pytest.raises(UserError, match=r"no distributed backend for mps\. Add --device=cpu"):
        devices.distributed_setup("mps", 0, mps((2, 8), 14))


@pytest.mark.parametrize("facts, dtype", [(A100, "bfloat16"), (T4, "float16"), (CPU, "float32")])
def test_the_matmul_peak_is_measured_in_the_training_dtype(facts, dtype):
    assert devices.matmul_peak_dtype(choose_dtype("auto", facts)) == dtype


# ----------------------------------------------------------------------------------------------
# 5. serving on mps


@pytest.mark.parametrize("device, asked, runs, noted", [
    ("mps", 4, 1, True), ("mps", 1, 1, False), ("cpu", 4, 4, False), ("cuda:0", 2, 2, False),
])
def test_mps_generates_one_at_a_time(device, asked, runs, noted):
    concurrency, note = devices.serve_concurrency(device, asked)
    assert concurrency == runs
    assert (note is not None) is noted
    if noted:
        assert "one at a time" in note


# ----------------------------------------------------------------------------------------------
# 4. resuming a gpu-preset run on a CPU or a Mac


def train_settings(preset: str, **changes) -> dict:
    return {**dataclasses.asdict(apply(TrainConfig(), preset_values(preset))), **changes}


def test_a_gpu_run_resumed_on_a_cpu_takes_the_cpus_device_settings_and_keeps_its_recipe():
    saved = train_settings("gpu", max_iters=5000, learning_rate=1e-3)
    adapted, changes = adapt_to_device(saved, train_settings("cpu"), set(), "cpu")
    assert changes == ["compile: True -> False (chosen for cpu)", "eval_iters: 200 -> 20 (chosen for cpu)",
                       "batch_size: 64 -> 16 (chosen for cpu)", "gradient_accumulation_steps: 1 -> 4 (chosen for cpu)"]
    recipe = set(saved) - set(devices.DEVICE_DEPENDENT_FIELDS)
    assert {k: adapted[k] for k in recipe} == {k: saved[k] for k in recipe}
    assert adapted["batch_size"] * adapted["gradient_accumulation_steps"] == 64  # sequences per step kept


def test_settings_given_on_the_command_line_are_not_rechosen():
    saved = train_settings("gpu")
    adapted, changes = adapt_to_device(saved, train_settings("cpu"), {"compile", "batch_size"}, "cpu")
    assert (adapted["compile"], adapted["batch_size"], adapted["gradient_accumulation_steps"]) == (True, 64, 1)
    assert changes == ["eval_iters: 200 -> 20 (chosen for cpu)"]


def test_a_cpu_run_resumed_on_a_gpu_merges_micro_batches_and_compiles():
    saved = train_settings("cpu", batch_size=16, gradient_accumulation_steps=4, dtype="float32")
    adapted, changes = adapt_to_device(saved, train_settings("gpu"), set(), "cuda")
    assert (adapted["batch_size"], adapted["gradient_accumulation_steps"]) == (64, 1)
    assert adapted["compile"] is True and adapted["dtype"] == "auto"
    assert "dtype: 'float32' -> 'auto' (chosen for cuda)" in changes


def test_resuming_with_the_same_device_preset_changes_nothing():
    saved = train_settings("gpu")
    assert adapt_to_device(saved, train_settings("gpu"), set(), "cuda") == (saved, [])


@pytest.mark.parametrize("saved_preset, preset_here, given, adapt", [
    ("gpu", "cpu", False, True), ("cpu", "gpu", False, True),
    ("gpu", "gpu", False, False),  # same kind of device
    ("tiny", "cpu", False, False), ("quick", "gpu", False, False),  # a recipe chosen on purpose
    ("gpu", "cpu", True, False),  # --preset named: the user decides
    (None, "cpu", False, False),
])
def test_which_resumes_rechoose_device_settings(saved_preset, preset_here, given, adapt):
    assert devices.should_adapt(saved_preset, preset_here, given) is adapt


@pytest.mark.parametrize("batch, steps, device_batch, split", [
    (64, 1, 16, (16, 4)), (16, 4, 64, (64, 1)), (16, 1, 64, (16, 1)), (12, 1, 16, (12, 1)),
    (48, 1, 16, (16, 3)), (100, 1, 16, (10, 10)), (67, 1, 16, (67, 1)), (32, 2, 32, (32, 2)),
])
def test_split_batch_keeps_the_sequences_per_step(batch, steps, device_batch, split):
    assert split_batch(batch, steps, device_batch) == split


# ----------------------------------------------------------------------------------------------
# The real machine


def test_probe_reports_this_machine():
    facts = devices.probe("cpu")
    assert facts.device_type == "cpu"
    assert facts.torch_version == devices._version_tuple(torch.__version__) >= (2, 4)
    assert facts.platform == sys.platform
    if not torch.cuda.is_available():
        assert (facts.cuda_device_count, facts.capability, facts.hardware_bf16) == (0, None, False)
    if sys.platform != "darwin":
        assert facts.macos_version is None


@pytest.mark.parametrize("facts", [H100, T4, P100, WINDOWS_RTX, mps((2, 5), 13), mps((2, 8), 14), CPU])
def test_the_report_names_every_decision(facts):
    text = "\n".join(devices.describe(facts))
    for part in ("torch.compile:", "--dtype=auto:", "--dtype=float16:", "TF32", "torchrun:", "serve.py"):
        assert part in text


def test_the_flash_check_runs_the_models_attention_call():
    model_cfg = apply(GPTConfig(), preset_values("tiny"))
    works, detail = devices.flash_attention_check("cpu", model_cfg, 2, "float32")
    assert isinstance(works, bool) and detail


# ----------------------------------------------------------------------------------------------
# 8. The device a run uses is the device its checkpoint records (gptlib.start settles both at once)


@pytest.mark.parametrize("override, saved, auto, count, expected", [
    ("", "cuda:1", "cuda", 2, "cuda:1"),  # resumed on the machine it trained on: the same GPU
    ("", "cuda:1", "cuda", 1, "cuda"),  # a machine with one GPU: the first, not an error
    ("", "cuda:1", "cpu", 0, "cpu"),  # no GPU here: the CPU (the settings adapt, as for any preset)
    ("", "cpu", "cuda", 1, "cuda"),  # trained on a CPU, resumed where a GPU is: the GPU
    ("", "auto", "mps", 0, "mps"),  # checkpoints from before the device was recorded
    ("cuda:0", "cuda:1", "cuda", 2, "cuda:0"),  # --device always wins
    ("", "cuda:x", "cuda", 2, "cuda"),
])
def test_a_resumed_run_asks_for_its_recorded_device_where_this_machine_has_it(override, saved, auto, count, expected):
    assert devices.device_for_run(override, saved, auto, count) == expected


def test_resuming_a_cuda1_checkpoint_without_device_trains_on_cuda1_and_records_it(monkeypatch):
    """The bug this replaces: the device used came from --device alone (so `cuda`), while the device
    saved was resolved elsewhere (so `cuda:1`). Fabricated: a machine with two GPUs."""
    from gptlib.cli import ParsedArgs
    from gptlib.processes import Processes
    from gptlib.start import Start, requested_device, settle

    monkeypatch.setattr(devices, "choose_device", lambda requested="auto": "cuda" if requested == "auto" else requested)
    monkeypatch.setattr(devices, "cuda_device_count", lambda: 2)
    monkeypatch.setattr(devices, "probe", lambda device: dataclasses.replace(A100, device=device, cuda_device_count=2))
    saved_cfg = dataclasses.asdict(apply(TrainConfig(), {**preset_values("gpu"), "device": "cuda:1"}))
    state = {"model_kind": "gpt", "model_config": dataclasses.asdict(apply(GPTConfig(), preset_values("gpu"))),
             "train_config": saved_cfg, "preset": "gpu"}
    start = Start("resume", "m.pt", state)
    device = requested_device({}, start)
    settings = settle(ParsedArgs({}, [], None, False), start, "gpt", Processes(), device)
    assert device == "cuda:1" and settings.device == "cuda:1" and settings.cfg.device == "cuda:1"
    assert settings.facts.device == "cuda:1"  # the facts (compile, dtype) are this GPU's
    one_gpu = settle(ParsedArgs({"device": "cuda"}, [], None, False), start, "gpt", Processes(),
                     requested_device({"device": "cuda"}, start))
    assert one_gpu.cfg.device == "cuda"  # what is saved is what is used, whatever was asked
