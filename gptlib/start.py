"""What a run starts from, decided in one place, and the settings it then runs with, settled once.

    start = read_start(overrides)        # fresh | resume | checkpoint | pretrained: one chain
    settings = settle(args, start, "gpt", processes, device)

The chain reads like nanoGPT's `init_from`: a fresh model; `--resume=PATH` continues a run (weights,
optimizer, random streams, curve); `--init_from=PATH` starts a new run from a checkpoint's weights;
`--init_from=DIR|gpt2...` from GPT-2's published weights. LoRA is a field (`--lora_rank`) on any of them,
not another branch. Then one function settles the preset, the device, the dtype and the settings that
depend on the device, so the device saved in the checkpoint is the device the run used.

Values are applied in this order: the dataclass defaults, then the preset, then the checkpoint's
settings, then the command line (config.py says the same).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from config import GPTConfig, TrainConfig, preset_values
from gptlib import build, devices, tokenizer
from gptlib.checkpoint import load_checkpoint
from gptlib.cli import ParsedArgs, apply
from gptlib.errors import UserError
from gptlib.processes import Processes

# A trained model keeps its shape: on --resume or --init_from, every GPTConfig field must match the
# checkpoint's except these (a change of attention class converts the weights, the function stays).
RESUMABLE_MODEL_FIELDS = {"dropout", "attention"}


@dataclass
class Start:
    """Where the weights (and for a resumed run, everything else) come from."""
    mode: str = "fresh"  # fresh | resume | checkpoint | pretrained
    path: str = ""  # the checkpoint, hub directory or hub name given
    state: dict | None = None  # what it holds, checkpoint-shaped (pretrained.load_pretrained gives that shape too)

    @property
    def resumed_state(self) -> dict | None:
        """The checkpoint a resumed run continues: weights, optimizer, random streams, curve."""
        return self.state if self.mode == "resume" else None

    @property
    def initial_weights(self) -> dict | None:
        """The trained weights a new run starts from (--init_from)."""
        return self.state if self.mode in ("checkpoint", "pretrained") else None


def read_start(overrides: dict) -> Start:
    """The one chain that decides what a run starts from."""
    resume, init_from = overrides.get("resume", ""), overrides.get("init_from", "")
    if resume and init_from:
        raise UserError("--resume continues a run and --init_from starts a new one from trained weights; pick one.")
    if resume:
        return Start("resume", resume, load_checkpoint(resume))
    if init_from:
        mode = "pretrained" if build.pretrained.is_pretrained_source(init_from) else "checkpoint"
        return Start(mode, init_from, build.read_weights(init_from, overrides))
    return Start()


@dataclass
class Settings:
    """Everything a run is, settled once and handed on as one object."""
    kind: str  # "gpt" or "bigram": which script can resume the checkpoint
    preset: str
    model_cfg: GPTConfig
    cfg: TrainConfig  # cfg.device is the device used, so the checkpoint records it
    start: Start
    processes: Processes
    facts: devices.DeviceFacts
    precision: devices.DtypeChoice  # dtype, loss scaling and why (devices.choose_dtype)
    changed: dict  # the options given on the command line, for notes.txt

    @property
    def device(self) -> str:
        return self.cfg.device


def requested_device(overrides: dict, start: Start) -> str:
    """--device if given; else a resumed run asks for the device its checkpoint recorded (which
    devices.device_for_run keeps only where this machine has it); else auto."""
    if "device" in overrides:
        return overrides["device"]
    saved = (start.resumed_state or {}).get("train_config", {}).get("device", "auto")
    device = devices.device_for_run("", saved, devices.choose_device("auto"), devices.cuda_device_count())
    if saved not in ("auto", device):
        print(f"note: {start.path} was trained on {saved}; this run uses {device} (--device=NAME to choose)")
    return device


def settle(args: ParsedArgs, start: Start, kind: str, processes: Processes, device: str) -> Settings:
    """Preset, shapes, settings, device, dtype and device adaptation, in that order, once."""
    source = start.state
    preset = (args.preset or (source or {}).get("preset")
              or ("bigram" if kind == "bigram" else devices.default_preset(device)))
    model_cfg, cfg = _configs(args.overrides, preset, start, kind, device, args.preset is not None)
    cfg = dataclasses.replace(cfg, device=device)  # the device saved is the device used
    model_cfg.validate()  # refuse a bad shape or precision before any download or file read
    cfg.validate()
    if cfg.lora_rank and not start.resumed_state:  # the base, named so it is found from anywhere
        cfg = dataclasses.replace(cfg, init_from=build.base_reference(cfg.init_from))
    facts = devices.probe(device)
    changed = {k: v for k, v in args.overrides.items() if k != "resume"}
    precision = devices.choose_dtype(cfg.dtype, facts, step_shape(model_cfg, cfg))
    return Settings(kind, preset, model_cfg, cfg, start, processes, facts, precision, changed)


def step_shape(model_cfg, cfg) -> devices.StepShape:
    """What one forward and backward multiplies: a micro-batch of batch_size rows."""
    return devices.StepShape(model_cfg.n_embd, cfg.batch_size * model_cfg.block_size)


def _configs(overrides: dict, preset: str, start: Start, kind: str, device: str, preset_given: bool):
    """Defaults, then preset, then the checkpoint's settings, then the command line. Trained weights
    give the model's shape; a resumed run also takes its training settings. A checkpoint trained with
    another device's preset gets this device's settings for what depends on the device (compile,
    precision, evaluation batches, the batch's split): devices.adapt_to_device."""
    model_cfg = apply(GPTConfig(), preset_values(preset))
    cfg = apply(TrainConfig(), preset_values(preset))
    source = start.state
    if source is not None:
        if source.get("model_kind", "gpt") != kind:
            raise UserError(f"the checkpoint holds a {source.get('model_kind')} model; use {source.get('model_kind')}'s script.")
        model_cfg = apply(GPTConfig(), source["model_config"])
        _check_shape_kept(model_cfg, overrides)
    if start.resumed_state is not None:
        cfg = apply(TrainConfig(), start.resumed_state["train_config"])
        cfg = dataclasses.replace(cfg, out="")  # a resumed run writes a new file unless --out says where
    here = devices.default_preset(device)
    if source is not None and devices.should_adapt(source.get("preset"), here, preset_given):
        settings, changes = devices.adapt_to_device(
            dataclasses.asdict(cfg), dataclasses.asdict(apply(TrainConfig(), preset_values(here))), set(overrides), device)
        cfg = TrainConfig(**settings)
        for line in changes:
            print(f"on {device}: {line}")
    if start.initial_weights is not None:  # fine-tuning keeps the tokenizer the weights were trained with
        kind = "gpt2" if start.mode == "pretrained" else tokenizer.from_checkpoint(start.initial_weights).kind
        cfg = dataclasses.replace(cfg, tokenizer=kind)
    return apply(model_cfg, overrides), apply(cfg, overrides)


def _check_shape_kept(model_cfg: GPTConfig, overrides: dict) -> None:
    for name, value in overrides.items():
        if hasattr(model_cfg, name) and name not in RESUMABLE_MODEL_FIELDS and getattr(model_cfg, name) != value:
            raise UserError(
                f"--{name}={value} differs from the checkpoint's {name}={getattr(model_cfg, name)}; "
                "a trained model keeps its shape. Drop the option or train a new model."
            )

