"""What to do on each device, as pure functions of what the machine reports.

`probe(device)` is the only function here that asks the machine; it returns DeviceFacts (compute
capability, Triton, torch and macOS versions...). Every decision below (compile or not, which
mixed precision, loss scaling, TF32, distributed backend, serving concurrency, which settings a
resumed checkpoint takes from the device at hand) is a function of those facts, so every GPU and
Mac case is tested on a CPU with fabricated facts (tests/test_devices.py).

    python -m benchmarks.machine                       # this machine's facts and what is chosen from them
    python -m benchmarks.machine --device=cuda:1       # the same for one device
    python -m benchmarks.machine --flash --preset=gpu  # can attention use the flash kernel here?

Sections: facts · compile · precision · processes and serving · resuming on another device.
"""
from __future__ import annotations

import contextlib
import platform
import re
import sys
import warnings
from dataclasses import dataclass
from typing import NamedTuple

import torch

from gptlib.errors import UserError

# ==============================================================================================
# Which device: cuda, else mps, else cpu, unless one is named


def choose_device(requested: str = "auto") -> str:
    """cuda if present, else mps, else cpu; a named device that is absent is an error, not a fallback."""
    if requested == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    kind = requested.split(":")[0]
    if kind == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device={requested} was asked for but no CUDA GPU is available. Use --device=cpu or --device=auto.")
    if kind == "cuda":
        check_cuda_index(requested, torch.cuda.device_count())
    if kind == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"--device={requested} was asked for but mps is not available. Use --device=cpu or --device=auto.")
    if kind not in ("cpu", "cuda", "mps"):
        raise UserError(f"unknown device {requested!r}. Use auto, cpu, cuda, cuda:N or mps.")
    return requested


def check_cuda_index(device: str, count: int) -> None:
    """cuda:N must be one of the `count` GPUs: said now, not as a CUDA error at the first tensor."""
    kind, _, index = device.partition(":")
    if kind != "cuda" or not index:
        return
    if not index.isdigit():
        raise UserError(f"--device={device}: write cuda:N with N a GPU number, as in --device=cuda:0.")
    if int(index) >= count:
        choices = "cuda:0" if count == 1 else f"cuda:0 to cuda:{count - 1}"
        raise UserError(f"--device={device}: this machine has {count} GPU(s) (those CUDA_VISIBLE_DEVICES shows); "
                        f"use {choices}, or --device=cuda for the first.")


def cuda_device_count() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def device_for_run(override: str, saved: str, auto_choice: str, cuda_count: int) -> str:
    """The device a run asks for: --device when given; else the device a resumed checkpoint recorded,
    when it is of the kind this machine would choose anyway and is here (cuda:1 on a machine with two
    GPUs stays cuda:1; on a machine with one it becomes cuda; a CPU-trained checkpoint on a GPU machine
    moves to the GPU); else what `auto` chose (`auto_choice`). A pure function of those facts."""
    if override:
        return override
    kind, _, index = saved.partition(":")
    if kind != auto_choice.split(":")[0]:
        return auto_choice
    if kind == "cuda" and index and (not index.isdigit() or int(index) >= cuda_count):
        return auto_choice
    return saved


def default_preset(device: str) -> str:
    return "gpu" if device.startswith("cuda") else "cpu"



@dataclass(frozen=True)
class DeviceFacts:
    device: str  # the device string chosen for the run: "cpu", "mps", "cuda", "cuda:1"
    cuda_device_count: int = 0
    capability: tuple[int, int] | None = None  # the cuda device's compute capability, e.g. (8, 0) on an A100
    hardware_bf16: bool = False  # bfloat16 in hardware (capability 8.0+), not emulated
    triton: bool = False  # the triton package imports (torch.compile's GPU code generator)
    platform: str = sys.platform  # "linux", "darwin", "win32"
    torch_version: tuple[int, int] = (0, 0)
    macos_version: tuple[int, int] | None = None
    mps_available: bool = False
    gpu_name: str = ""
    cpu_bf16: bool = False  # the CPU multiplies bfloat16 in hardware (AVX512-BF16 or AMX), not emulated

    @property
    def device_type(self) -> str:
        return self.device.split(":")[0]


def probe(device: str) -> DeviceFacts:
    """The facts of this machine for `device` (as config.choose_device returned it)."""
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    index = _cuda_index(device)
    on_gpu = device.startswith("cuda") and index < count
    return DeviceFacts(
        device=device,
        cuda_device_count=count,
        capability=tuple(torch.cuda.get_device_capability(index)) if on_gpu else None,
        hardware_bf16=_hardware_bf16(index) if on_gpu else False,
        triton=_triton_importable(),
        platform=sys.platform,
        torch_version=_version_tuple(torch.__version__),
        macos_version=_version_tuple(platform.mac_ver()[0]) if platform.mac_ver()[0] else None,
        mps_available=torch.backends.mps.is_available(),
        gpu_name=torch.cuda.get_device_name(index) if on_gpu else "",
        cpu_bf16=cpu_has_bf16(),
    )


def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware: AVX512-BF16 (AMD Zen 4+, Intel Cooper Lake+)
    or AMX (Intel Sapphire Rapids+). torch's probes for them are private: an absent one counts as no."""
    return any(getattr(torch.cpu, probe, lambda: False)() for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))


def _cuda_index(device: str) -> int:
    kind, _, index = device.partition(":")
    return int(index) if kind == "cuda" and index.isdigit() else 0


def _hardware_bf16(index: int) -> bool:
    # is_bf16_supported() also says yes where bfloat16 is only emulated (T4, V100, Pascal), which
    # trains slowly; including_emulation=False is the hardware answer (capability 8.0+).
    with torch.cuda.device(index):
        try:
            return torch.cuda.is_bf16_supported(including_emulation=False)
        except TypeError:  # a torch without the argument
            return torch.cuda.get_device_capability(index) >= (8, 0)


def _triton_importable() -> bool:
    try:  # torch's own check (private, so guarded): the same import, cached
        from torch.utils._triton import has_triton_package
        return has_triton_package()
    except ImportError:
        import importlib.util
        return importlib.util.find_spec("triton") is not None


def _version_tuple(text: str) -> tuple[int, int]:
    match = re.match(r"(\d+)(?:\.(\d+))?", text)
    return (int(match.group(1)), int(match.group(2) or 0)) if match else (0, 0)


def _shown(version: tuple[int, int] | None) -> str:
    return "unknown" if version is None else f"{version[0]}.{version[1]}"


# ==============================================================================================
# Compile


def can_compile(facts: DeviceFacts) -> tuple[bool, str]:
    """Whether torch.compile can work here, and why (said once at start-up when it cannot)."""
    kind = facts.device_type
    if kind == "cuda":
        if not facts.triton:
            where = " (PyTorch ships none for Windows; `pip install triton-windows` adds it)" if facts.platform == "win32" else ""
            return False, f"torch.compile on cuda needs Triton, which is not installed{where}"
        if facts.capability is not None and facts.capability < (7, 0):
            return False, (f"torch.compile's Triton needs a GPU of compute capability 7.0 (Volta) or newer; "
                           f"{facts.gpu_name or 'this GPU'} is {_shown(facts.capability)}")
        return True, f"Triton present, compute capability {_shown(facts.capability)}"
    if kind == "mps":
        if facts.torch_version < (2, 8):
            return False, f"torch.compile on mps needs torch 2.8 or newer; this is torch {_shown(facts.torch_version)}"
        return True, "torch 2.8+ compiles for mps (Metal kernels)"
    return True, "inductor compiles C++ for the CPU"


def compile_decision(requested: bool, facts: DeviceFacts) -> tuple[bool, str | None]:
    """(compile?, a note to print once or None): a compile the device cannot do becomes eager."""
    if not requested:
        return False, None
    possible, reason = can_compile(facts)
    return (True, None) if possible else (False, f"note: {reason}: training without torch.compile")


def compile_evaluation(compiled: bool, facts: DeviceFacts) -> bool:
    """Evaluate with the compiled model where it pays: on cuda, the one extra compile (eval mode,
    no dropout) is repaid by 2 x eval_iters batches at compiled speed; on a CPU or Mac it is not."""
    return compiled and facts.device_type == "cuda"


# ==============================================================================================
# Precision: autocast dtype, loss scaling, TF32


class DtypeChoice(NamedTuple):
    dtype: str  # "float32" (no autocast), "bfloat16" or "float16" (autocast to it)
    use_grad_scaler: bool  # float16 needs loss scaling, or small gradients flush to zero
    scaler_device: str  # torch.amp.GradScaler(scaler_device): its default "cuda" switches itself off elsewhere
    autocast_device_type: str
    reason: str


class StepShape(NamedTuple):
    """What a training step multiplies: its matmuls are (tokens, n_embd) x (n_embd, k x n_embd)."""

    n_embd: int
    tokens: int  # batch_size x block_size, one process's step

    @property
    def matmul_work(self) -> int:
        return self.tokens * self.n_embd ** 2


# Below this much matmul work per step (tokens x n_embd^2) a CPU's bfloat16 units gain too little
# over float32 to take by default: the step is bound by the many small operations around the
# matmuls, not by them. Measured with `python -m benchmarks.bench_dtype` (docs/speed.md), quiet
# 2-core AVX512-BF16 machine: quick preset (3.4e7) 1.08x, cpu preset (7.5e7) 1.19x, 6x256 at
# context 256 (2.7e8) 1.44x, the lecture shape (6.0e8) 1.96x. The threshold sits between the cpu
# preset and 6x256: the cpu preset keeps float32 (and its measured figures) unless asked.
CPU_BF16_MIN_WORK = 1.0e8


def cpu_bfloat16_pays(shape: StepShape | None) -> bool:
    """Whether bfloat16 autocast pays on a CPU with bfloat16 hardware, for this step (None: no
    training step to judge, as for serving: it does)."""
    return shape is None or shape.matmul_work >= CPU_BF16_MIN_WORK


def choose_dtype(requested: str, facts: DeviceFacts, shape: StepShape | None = None) -> DtypeChoice:
    """The precision to train in (for a step of `shape` where that decides it); a combination this
    device or torch cannot do is a UserError."""
    kind = facts.device_type
    if requested == "float32":
        return _choice("float32", facts, "float32 as asked")
    if kind == "cuda":
        return _cuda_dtype(requested, facts)
    if kind == "mps":
        return _mps_dtype(requested, facts)
    return _cpu_dtype(requested, facts, shape)


def _choice(dtype: str, facts: DeviceFacts, reason: str) -> DtypeChoice:
    scaled = dtype == "float16"
    return DtypeChoice(dtype, scaled, facts.device_type, facts.device_type, reason)


def _cuda_dtype(requested: str, facts: DeviceFacts) -> DtypeChoice:
    gpu = f"{facts.gpu_name or 'this GPU'} (compute capability {_shown(facts.capability)})"
    if requested == "auto":
        if facts.hardware_bf16:
            return _choice("bfloat16", facts, f"{gpu} computes bfloat16 in hardware")
        if _fast_float16(facts.capability):
            return _choice("float16", facts, f"{gpu} has no bfloat16 hardware: float16 with loss scaling")
        return _choice("float32", facts, f"{gpu} computes float16 at a small fraction of float32 speed")
    if requested == "bfloat16" and not facts.hardware_bf16:
        raise UserError(f"--dtype=bfloat16: {gpu} has no bfloat16 hardware, so PyTorch would emulate it, slowly. "
                        "Use --dtype=float16 (with loss scaling) or --dtype=float32.")
    return _choice(requested, facts, f"{requested} as asked")


def _fast_float16(capability: tuple[int, int] | None) -> bool:
    # Tensor cores from Volta (7.0) on; the P100 (6.0) also has double-rate float16. GTX 10xx and
    # P40 (6.1) run float16 at 1/64 of float32 speed, so autocast there would be a slowdown.
    return capability is not None and (capability >= (7, 0) or capability == (6, 0))


def _mps_dtype(requested: str, facts: DeviceFacts) -> DtypeChoice:
    torch_v, macos_v = _shown(facts.torch_version), _shown(facts.macos_version)
    if requested == "auto":  # mixed precision on mps is unmeasured here and version-dependent: stay exact
        return _choice("float32", facts, "the safe default on mps (ask for --dtype=bfloat16 or float16)")
    if facts.torch_version < (2, 5):  # autocast for mps arrived in torch 2.5 (pytorch#99272)
        raise UserError(f"--dtype={requested} on mps needs autocast for mps, which torch {torch_v} lacks "
                        "(it arrived in torch 2.5). Use --dtype=float32 or upgrade torch.")
    if requested == "bfloat16":
        # bfloat16 autocast on mps: torch 2.6 (pytorch#139390), and only on macOS 14 (Sonoma) or newer
        if facts.torch_version < (2, 6) or facts.macos_version is None or facts.macos_version < (14, 0):
            raise UserError(f"--dtype=bfloat16 on mps needs torch 2.6+ and macOS 14+; this is torch {torch_v} "
                            f"on macOS {macos_v}. Use --dtype=float32, or upgrade.")
        return _choice("bfloat16", facts, "bfloat16 as asked (torch 2.6+, macOS 14+)")
    if facts.torch_version < (2, 8):  # GradScaler works on mps from torch 2.8 (pytorch#142397, #150255)
        better = "--dtype=bfloat16" if facts.torch_version >= (2, 6) and (facts.macos_version or (0, 0)) >= (14, 0) \
            else "--dtype=float32"
        raise UserError(f"--dtype=float16 on mps needs loss scaling, which torch {torch_v} cannot do on mps "
                        f"(it can from torch 2.8). Use {better}, or upgrade torch.")
    return _choice("float16", facts, "float16 with loss scaling on mps (torch 2.8+)")


def _cpu_dtype(requested: str, facts: DeviceFacts, shape: StepShape | None) -> DtypeChoice:
    if requested == "auto":
        if not facts.cpu_bf16:
            return _choice("float32", facts, "this CPU has no bfloat16 matmul in hardware (AVX512-BF16 or AMX)")
        if not cpu_bfloat16_pays(shape):
            return _choice("float32", facts, f"this CPU has bfloat16 hardware, but a step of {shape.tokens} tokens x "
                                             f"{shape.n_embd} channels gains little from it (under {CPU_BF16_MIN_WORK:.0e} "
                                             "tokens x channels^2); --dtype=bfloat16 to use it anyway")
        at = "" if shape is None else f" and a step of {shape.tokens} tokens x {shape.n_embd} channels is matmul-bound"
        return _choice("bfloat16", facts, f"this CPU multiplies bfloat16 in hardware (AVX512-BF16 or AMX){at}: "
                                          "bfloat16 autocast, float32 weights; --dtype=float32 to keep float32")
    # Both are documented CPU autocast dtypes (float16 since torch 2.3, with torch.amp.GradScaler("cpu"));
    # they pay only on CPUs with AMX/AVX512-BF16 (bfloat16) or AMX-FP16 (float16).
    if requested == "bfloat16" and not facts.cpu_bf16:
        return _choice("bfloat16", facts, "bfloat16 autocast as asked; this CPU has no bfloat16 hardware, so it is emulated, slowly")
    return _choice(requested, facts, f"{requested} autocast on the CPU as asked")


def inference_dtype(requested: str, facts: DeviceFacts, compiled: bool) -> tuple[str, str]:
    """The dtype to hold a model's weights in for generating (model_handler.py, serve.py), and why.
    "auto" takes bfloat16 on a CPU that multiplies it in hardware when the decode step is compiled:
    measured with `python -m benchmarks.bench --only=decode` (docs/speed.md), the compiled step runs
    2.05x faster in bfloat16 at the lecture's 10.7M parameters and 1.1x at the shipped 1.8M, while
    the eager step runs slower in it (0.89x and 0.63x: a one-row bfloat16 matmul costs more to call
    than it saves). GPUs and mps keep float32 weights, as before. A checkpoint always stays float32."""
    if requested == "float32":
        return "float32", "float32 weights as asked"
    if requested == "bfloat16":
        emulated = "" if facts.device_type != "cpu" or facts.cpu_bf16 else " (this CPU emulates it, slowly)"
        return "bfloat16", f"bfloat16 weights as asked{emulated}"
    if requested == "int8":
        return "int8", "int8 weights in the linear layers as asked (gptlib/quantize.py: a quarter of the bytes, approximate)"
    if requested != "auto":
        raise UserError(f"dtype must be auto, float32, bfloat16 or int8 for generating, got {requested!r}.")
    if facts.device_type != "cpu":
        return "float32", f"float32 weights on {facts.device_type} (--dtype=bfloat16 to halve them)"
    if not facts.cpu_bf16:
        return "float32", "float32 weights: this CPU has no bfloat16 matmul in hardware (AVX512-BF16 or AMX)"
    if not compiled:
        return "float32", ("float32 weights: uncompiled decoding is faster in float32 even on this CPU's bfloat16 "
                           "hardware (a compiled step, serve.py --compile=true, decodes in bfloat16, about 2x faster for a 10M model)")
    return "bfloat16", ("bfloat16 weights: this CPU multiplies bfloat16 in hardware and the compiled step streams "
                        "half the bytes per token (--dtype=float32 to keep float32)")


def use_tf32(dtype: str, facts: DeviceFacts) -> bool:
    """TF32 matmuls only beside mixed precision on an Ampere+ GPU: --dtype=float32 means true float32."""
    return facts.device_type == "cuda" and dtype != "float32" and (facts.capability or (0, 0)) >= (8, 0)


def autocast_context(choice: DtypeChoice):
    """torch.autocast for the choice, or nothing for float32."""
    if choice.dtype == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=choice.autocast_device_type, dtype=getattr(torch, choice.dtype))


def grad_scaler(choice: DtypeChoice) -> torch.amp.GradScaler:
    """A GradScaler on the run's own device (its default, cuda, would switch itself off on mps or cpu)."""
    return torch.amp.GradScaler(choice.scaler_device, enabled=choice.use_grad_scaler)


def set_tf32(enabled: bool) -> None:
    """Set both switches: cudnn's is on by default, so float32 must turn it off to be float32."""
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled


def matmul_peak_dtype(choice: DtypeChoice) -> str:
    """The dtype to measure the matmul peak in for MFU: the one the training matmuls run in."""
    return choice.dtype


# ==============================================================================================
# Processes and serving


def check_device_index(device: str, facts: DeviceFacts) -> None:
    """cuda:N must name one of this machine's GPUs (config.choose_device applies the same check)."""
    check_cuda_index(device, facts.cuda_device_count)


class DistributedSetup(NamedTuple):
    backend: str  # "nccl" on cuda, "gloo" on the CPU
    device: str  # this process's device: cuda:LOCAL_RANK on cuda
    device_id: torch.device | None  # for init_process_group: binds the process group to its GPU


def distributed_setup(device: str, local_rank: int, facts: DeviceFacts) -> DistributedSetup:
    """What torchrun's process LOCAL_RANK trains on and through which backend."""
    kind = device.split(":")[0]
    if kind == "mps":
        raise UserError("torchrun with mps: PyTorch has no distributed backend for mps. Add --device=cpu to "
                        "train several processes on the CPU (gloo), or train in one process without torchrun.")
    if kind == "cuda":
        if local_rank >= facts.cuda_device_count:
            raise UserError(f"torchrun started {local_rank + 1}+ processes on this machine but it has "
                            f"{facts.cuda_device_count} GPU(s): lower --nproc_per_node.")
        # device_id binds NCCL to this GPU at once (no "device used by this process is unknown" warning)
        return DistributedSetup("nccl", f"cuda:{local_rank}", torch.device("cuda", local_rank))
    return DistributedSetup("gloo", device, None)


def serve_concurrency(device: str, requested: int) -> tuple[int, str | None]:
    """Generations the server runs at once, and a note when it is not what was asked."""
    if device.split(":")[0] == "mps" and requested > 1:
        # two threads running mps kernels at once can kill the process inside Metal (pytorch#197805)
        return 1, f"note: on mps generations run one at a time (--concurrency={requested} lowered to 1)"
    return requested, None


# ==============================================================================================
# Resuming on another device: settings chosen for the device are chosen again


# The fields a run chooses for the machine: the device and precision, compiling, how many batches
# an evaluation averages (200 on a GPU, 20 on a CPU) and how the batch is split into micro-batches.
# The model's shape and the recipe (schedule, regularisation, the batch per optimizer step,
# evaluation interval, seed, data) are kept: they decide what is learned, not how fast.
DEVICE_DEPENDENT_FIELDS = ("device", "dtype", "compile", "eval_iters", "batch_size", "gradient_accumulation_steps")
# Presets that stand for a kind of device; others (tiny, quick...) are recipes chosen on purpose.
DEVICE_PRESETS = ("gpu", "cpu")


def should_adapt(saved_preset: str | None, preset_for_device: str, preset_given: bool) -> bool:
    """Re-choose device settings when the checkpoint was trained with another device's preset."""
    return not preset_given and saved_preset in DEVICE_PRESETS and saved_preset != preset_for_device


def adapt_to_device(saved: dict, device_settings: dict, explicitly_given: set[str],
                    device: str) -> tuple[dict, list[str]]:
    """`saved`'s train settings with the device-dependent ones taken from `device_settings` (the
    full TrainConfig of the preset for this device), except those given on the command line.
    The batch per step is kept: only its split into micro-batches changes. Returns the new
    settings and one line per change."""
    adapted = dict(saved)
    for name in ("device", "dtype", "compile", "eval_iters"):
        if name not in explicitly_given:
            adapted[name] = device_settings[name]
    if not explicitly_given & {"batch_size", "gradient_accumulation_steps"}:
        adapted["batch_size"], adapted["gradient_accumulation_steps"] = split_batch(
            saved["batch_size"], saved["gradient_accumulation_steps"], device_settings["batch_size"])
    changes = [f"{name}: {saved[name]!r} -> {adapted[name]!r} (chosen for {device})"
               for name in DEVICE_DEPENDENT_FIELDS if adapted[name] != saved[name]]
    return adapted, changes


def split_batch(batch_size: int, accumulation: int, device_batch: int) -> tuple[int, int]:
    """(micro-batch, accumulation steps) with the same sequences per step, the micro-batch as large
    as the device's preset allows. Drawn from the same generator, 64 x 1 and 16 x 4 are the same
    windows. A split that would need tiny micro-batches (a prime batch) is kept as it was."""
    per_step = batch_size * accumulation
    micro = max(d for d in range(1, min(per_step, device_batch) + 1) if per_step % d == 0)
    if micro < min(per_step, device_batch) // 2:
        return batch_size, accumulation
    return micro, per_step // micro


# ==============================================================================================
# Command line: the facts and decisions of this machine, and the flash-attention check


def describe(facts: DeviceFacts) -> list[str]:
    """The facts and every decision taken from them, one line each."""
    gpu = (f", {facts.gpu_name}, compute capability {_shown(facts.capability)}, bfloat16 in hardware: "
           f"{facts.hardware_bf16}, {facts.cuda_device_count} GPU(s)") if facts.device_type == "cuda" else ""
    mac = f", macOS {_shown(facts.macos_version)}" if facts.macos_version else ""
    lines = [f"device {facts.device}{gpu}; triton: {facts.triton}; torch {_shown(facts.torch_version)} "
             f"on {facts.platform}{mac}; mps available: {facts.mps_available}"]
    compiles, why = can_compile(facts)
    lines.append(f"  torch.compile: {'yes' if compiles else 'no'} ({why})")
    for requested in ("auto", "bfloat16", "float16", "float32"):
        lines.append(f"  --dtype={requested}: {_dtype_line(requested, facts)}")
    auto = _dtype_or_none("auto", facts)
    tf32 = auto is not None and use_tf32(auto.dtype, facts)
    lines.append(f"  TF32 matmuls: {'on' if tf32 else 'off'} with --dtype=auto; off with --dtype=float32")
    lines.append(f"  preset when none is named: {default_preset(facts.device)}")
    lines.append(f"  torchrun: {_torchrun_line(facts)}")
    lines.append(f"  serve.py --concurrency=2 runs {serve_concurrency(facts.device, 2)[0]} generation(s) at once")
    return lines


def _dtype_or_none(requested: str, facts: DeviceFacts) -> DtypeChoice | None:
    try:
        return choose_dtype(requested, facts)
    except UserError:
        return None


def _dtype_line(requested: str, facts: DeviceFacts) -> str:
    try:
        choice = choose_dtype(requested, facts)
    except UserError as err:
        return f"refused: {err}"
    scaler = f', GradScaler("{choice.scaler_device}")' if choice.use_grad_scaler else ""
    return f"{choice.dtype}{scaler}: {choice.reason}"


def _torchrun_line(facts: DeviceFacts) -> str:
    try:
        setup = distributed_setup(facts.device, 0, facts)
    except UserError as err:
        return f"refused: {err}"
    bound = ", device_id=cuda:LOCAL_RANK" if setup.device_id is not None else ""
    return f"backend {setup.backend}{bound}"


def flash_attention_check(device: str, model_cfg, batch_size: int, dtype: str) -> tuple[bool, str]:
    """Run the model's attention call (causal, its dropout, forward and backward) on random tensors
    of its shapes, allowing only the flash kernel: whether it runs, or torch's reasons why not."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    B, T, C, H = batch_size, model_cfg.block_size, model_cfg.n_embd, model_cfg.n_head
    qkv = torch.randn(B, T, 3 * C, device=device, dtype=getattr(torch, dtype), requires_grad=True)
    q, k, v = (t.view(B, T, H, C // H).transpose(1, 2) for t in qkv.split(C, dim=2))  # as the model does
    with warnings.catch_warnings(record=True) as caught, sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        warnings.simplefilter("always")
        try:
            out = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=model_cfg.dropout)
            out.sum().backward()
        except RuntimeError as err:
            return False, _sdpa_reasons([str(w.message) for w in caught]) or str(err).splitlines()[0]
    return True, f"flash attention runs for batch {B}, {H} heads x {C // H}, context {T}, {dtype}, dropout {model_cfg.dropout}"


def _sdpa_reasons(messages: list[str]) -> str:
    """torch's warnings on why a kernel was not used, without their C++ source locations."""
    lines = (re.sub(r"\s*\(Triggered internally at [^)]*\)\.?", "", m).strip() for m in messages)
    return "; ".join(line for line in lines if line and not line.endswith("because:"))
