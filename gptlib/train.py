"""The training loop shared by gpt_final_version.py and bigram.py.

    python gpt_final_version.py --preset=tiny     # runs this loop on a GPT
    python bigram.py                              # and on the bigram table

How data flows from argv to the first step, each stage one function call in train_from_command_line:
options (gptlib.cli) -> what the run starts from (gptlib.start.read_start) -> processes and device ->
settings settled once (gptlib.start.settle) -> data (gptlib.run_data) -> the model (gptlib.build) ->
run(job) here. It gets the model class from its caller and never imports a model file.

Sections: from the command line to a job | pieces of the loop | the run's state (class Run) | the loop.
"""
from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import math
import signal
import sys
import threading
import time
from dataclasses import dataclass, field

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from config import GPTConfig, TrainConfig
from gptlib import devices, lora, loss_curves, optimizers, sharding
from gptlib.build import build_for_run, count_parameters, lora_reference
from gptlib.checkpoint import best_path, default_checkpoint_path, save_checkpoint
from gptlib.cli import help_text, parse_args
from gptlib.corpus import TextDataset, seeded_generator
from gptlib.errors import UserError
from gptlib.processes import Processes, agree_on, start_processes, stop_processes
from gptlib.run_data import load_dataset
from gptlib.run_report import bits_per_byte, print_startup, report, tokenizer_entries
from gptlib.start import Settings, read_start, requested_device, settle

CURVE_ROWS = 100  # rows of NAME.csv in a run whose --log_interval is 0 (automatic)
END_OF_RUN_SECONDS = 5.0  # a timed run keeps this for its sample and picture, beyond evaluation and save


@dataclass
class TrainResult:
    iters: int
    train_loss: float
    val_loss: float
    best_val_loss: float
    params: int
    tokens_per_s: float
    seconds: float
    checkpoint: str
    history: list = field(default_factory=list)  # (iteration, train loss, val loss) at each evaluation
    interrupted: str = ""  # the signal that stopped the run early ("SIGINT", "SIGTERM"), if any
    first_step_seconds: float = 0.0  # the first step, timed apart: torch.compile works there
    val_bpb: float = float("nan")  # val loss in bits per byte of text: compares across tokenizers
    test_metrics: dict = field(default_factory=dict)  # a classifier's held-out accuracy, F1, confusion (gptlib/classify.py)


@dataclass
class Job:
    """A run ready to go: its settings, its model with weights, its data, the checkpoint it resumes."""
    settings: Settings
    model: torch.nn.Module
    dataset: TextDataset
    resumed: dict | None = None  # the resumed checkpoint, in the model's attention class
    run_class: type | None = None  # Run, or a subclass with its own evaluation and report (gptlib/classify.py's)


# ==============================================================================================
# From the command line to a job


def train_from_command_line(argv, model_class, kind: str, usage: str, convert_weights=None):
    """`convert_weights(weights, config, to)` moves weights between attention classes (the GPT's
    convert_attention_weights); models with one layout pass None."""
    args = parse_args(argv, [GPTConfig, TrainConfig])
    if args.help:
        print(help_text([GPTConfig, TrainConfig], usage))
        return None
    if args.overrides.get("task", "lm") != "lm":  # gpt_final_version.py sends --task=classify to gptlib/classify.py
        raise UserError(f"--task={args.overrides['task']} needs a GPT's hidden states: python gpt_final_version.py --task=classify")
    start = read_start(args.overrides)
    processes, device = start_processes(devices.choose_device(requested_device(args.overrides, start)))
    try:
        settings = settle(args, start, kind, processes, device)
        dataset = _load_data_once_per_machine(settings, args.overrides.get("vocab_size"))
        model_cfg = dataclasses.replace(settings.model_cfg, vocab_size=len(dataset.vocab))
        dataset.check_fits(model_cfg.block_size)
        settings = dataclasses.replace(settings, model_cfg=model_cfg)
        model, resumed = build_for_run(model_class, model_cfg, settings.cfg, start, convert_weights)
        return run(Job(settings, model, dataset, resumed))
    finally:
        stop_processes(processes)


def _load_data_once_per_machine(settings: Settings, vocab_size: int | None) -> TextDataset:
    """The first process of each machine downloads or prepares the data, the others then read it
    (machines may not share a filesystem; where they do, writes are atomic, so repeats are harmless)."""
    processes = settings.processes
    if processes.local_rank != 0:
        processes.wait_for_all()
    dataset = load_dataset(settings.cfg, settings.start, vocab_size)
    if processes.local_rank == 0:
        processes.wait_for_all()
    return dataset


# ==============================================================================================
# Pieces of the loop


def keep_freed_memory_in_process() -> None:
    """On Linux, glibc gives every freed block above 32 MB straight back to the kernel, so each step
    of a large model page-faults (and zero-fills) its activations again: the lecture shape ran 36%
    slower for it on a 2-core CPU. Serving big blocks from the heap and never trimming it lets later
    steps reuse warm memory. Elsewhere (macOS, Windows, musl) this does nothing."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-4, 0)  # M_MMAP_MAX: never satisfy malloc with a fresh mmap
        libc.mallopt(-1, 2**31 - 1)  # M_TRIM_THRESHOLD: keep freed heap memory for reuse
    except (OSError, AttributeError):
        pass



@torch.no_grad()
def estimate_loss(model, dataset: TextDataset, cfg: TrainConfig, block_size: int, device: str,
                  autocast=None, processes: Processes | None = None) -> dict:
    """Mean loss over eval_iters batches of each split, in eval mode (no dropout), without gradients.

    The batches come from their own fixed-seed generator: every evaluation sees the same windows
    (so successive numbers compare), and training's random stream is left untouched. Under torchrun
    each process scores its slice of the same global batches and the means are averaged, so every
    process gets the same numbers.
    """
    autocast, processes = autocast or contextlib.nullcontext(), processes or Processes()
    was_training = model.training
    model.eval()
    losses = {}
    for split in ("train", "val"):
        generator = seeded_generator(cfg.seed + 1)
        total = torch.zeros((), device=device)
        for _ in range(cfg.eval_iters):
            x, y = dataset.get_batch(split, cfg.batch_size, block_size, generator, device,
                                     processes.rank, processes.world_size)
            with autocast:
                _, loss = model(x, y)
            total += loss.float()
        losses[split] = processes.mean(total.item() / cfg.eval_iters)
    model.train(was_training)
    return losses


def train_step(model, optimizer, scaler, dataset, cfg, model_cfg, device, autocast, batches,
               processes: Processes | None = None) -> float:
    """One optimizer step over gradient_accumulation_steps micro-batches; returns the mean loss
    (over all processes, so that every process sees the same number and stops together on a nan)."""
    processes = processes or Processes()
    total = 0.0
    steps = cfg.gradient_accumulation_steps
    for micro_step in range(steps):
        x, y = dataset.get_batch("train", cfg.batch_size, model_cfg.block_size, batches, device,
                                 processes.rank, processes.world_size)
        # under DDP, gradients are averaged across processes on the last micro-step only
        last = micro_step == steps - 1
        sync = model.no_sync() if isinstance(model, DistributedDataParallel) and not last else contextlib.nullcontext()
        if steps > 1 and sharding.is_sharded(model):  # FSDP: reduce-scatter the gradients once, on the last micro-step
            model.set_requires_gradient_sync(last)
        with sync:
            with autocast:
                _, loss = model(x, y)
                loss = loss / steps
            scaler.scale(loss).backward()
        total += loss.item()
    if cfg.grad_clip > 0:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return processes.mean(total)


class StopSignals:
    """Ctrl-C (SIGINT) and SIGTERM (what kill, docker stop, Kubernetes and batch schedulers send)
    ask the loop to stop after the step in progress, save where it got to and report as usual.
    A second Ctrl-C stops at once, without saving. Outside the main thread (where Python allows
    no handlers) nothing is installed and Ctrl-C raises KeyboardInterrupt as usual."""

    def __init__(self, announce: bool = True):
        self.requested = ""  # the name of the first signal received
        self.announce = announce  # say so when one arrives (rank 0 only under torchrun)
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._on_signal)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _on_signal(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt  # asked twice: the user wants out now
        if not self.requested and self.announce:  # said at once: a long step may take a while to finish
            print(f"\n{signal.Signals(signum).name}: stopping after the step in progress, then saving "
                  "(Ctrl-C again stops at once, without saving)", file=sys.stderr, flush=True)
        self.requested = self.requested or signal.Signals(signum).name


# ==============================================================================================
# The state of one run: everything the loop reads and updates, in one place


@dataclass
class Run:
    model: torch.nn.Module  # the plain module: what is saved, evaluated and sampled
    step_model: torch.nn.Module  # what takes the steps: the model, maybe compiled, maybe in DDP
    eval_model: torch.nn.Module  # what evaluates: the compiled model on cuda, else the plain one
    model_cfg: GPTConfig
    cfg: TrainConfig
    dataset: TextDataset
    device: str
    precision: devices.DtypeChoice  # dtype, loss scaling and why (devices.choose_dtype)
    autocast: object  # a context manager: autocast to dtype, or nothing for float32
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    batches: torch.Generator  # the training batches' own random stream (saved, so resume is exact)
    processes: Processes
    kind: str  # "gpt" or "bigram": which script can resume the checkpoint
    preset: str
    changed: dict  # the options given on the command line, for notes.txt
    out: str  # the checkpoint path
    compiled: bool = False  # torch.compile in use (asked for, and possible on this device)
    iter_num: int = 0
    start_iter: int = 0  # where this invocation started (above 0 when resuming)
    best_val: float = float("inf")
    losses: dict = field(default_factory=dict)  # the latest evaluation: {"train": ..., "val": ...}
    history: list = field(default_factory=list)  # (iteration, train loss, val loss) of each evaluation
    curve: list = field(default_factory=list)  # rows of NAME.csv, earlier runs of this checkpoint included
    batch_losses: list = field(default_factory=list)  # training losses since the last row of the curve
    train_seconds: float = 0.0  # time in training steps, the first one apart (compiling happens there)
    first_step_seconds: float = 0.0
    eval_seconds: float = 0.0
    earlier_seconds: float = 0.0  # wall time of the runs this one resumes
    last_eval_seconds: float = 0.0  # how long the end of a timed run must keep for its evaluation...
    last_save_seconds: float = 1.0  # ...and its save
    started: float = field(default_factory=time.time)

    @classmethod
    def start(cls, job: Job) -> Run:
        """Move the model to its device and build what trains it; with a checkpoint, put the
        optimizer, the iteration, the random streams and the loss curve back where they were."""
        s, model = job.settings, job.model
        model_cfg, cfg, device, processes, facts, precision = s.model_cfg, s.cfg, s.device, s.processes, s.facts, s.precision
        kind, preset, state = s.kind, s.preset, job.resumed
        devices.set_tf32(devices.use_tf32(precision.dtype, facts))  # --dtype=float32 stays float32
        if device == "cpu":
            keep_freed_memory_in_process()
        model.to(device)
        sharded = cfg.fsdp and processes.distributed
        if sharded:  # before the optimizer sees the parameters: it holds (and updates) slices
            sharding.shard(model)
        optimizer = optimizers.configure_optimizer(model, cfg, device)
        batches = seeded_generator(cfg.seed)
        out = agree_on(cfg.out or default_checkpoint_path(preset if kind == "gpt" else kind), processes)
        use_compile, compile_note = devices.compile_decision(cfg.compile and not sharded, facts)
        if compile_note and processes.is_main:
            print(compile_note)  # once, e.g. a GPU too old for Triton: training without torch.compile
        step_model = torch.compile(model) if use_compile else model  # checkpoints save `model`, never this
        # evaluation on the compiled module where that pays (cuda): one extra compile for eval mode
        eval_model = step_model if use_compile and devices.compile_evaluation(True, facts) else model
        if processes.distributed and not sharded:  # gradients are averaged across processes during backward
            step_model = DistributedDataParallel(step_model, device_ids=[processes.local_rank] if device.startswith("cuda") else None)
        r = cls(model, step_model, eval_model, model_cfg, cfg, job.dataset, device, precision,
                devices.autocast_context(precision), optimizer, devices.grad_scaler(precision), batches,
                processes, kind, preset, s.changed, out, compiled=use_compile)
        if state:
            r.restore(state)
        if processes.distributed:  # the same batch stream everywhere (each takes its slice), its own dropout
            torch.manual_seed(cfg.seed + 1000 * processes.rank + r.iter_num)
        return r

    def restore(self, state: dict) -> None:
        self.iter_num = self.start_iter = state["iter_num"]
        self.best_val = state.get("best_val_loss", float("inf"))
        self.curve = [row for row in state.get("curve", []) if row["step"] <= self.iter_num]
        self.earlier_seconds = self.curve[-1]["seconds"] if self.curve else 0.0
        if "optimizer" not in state:
            print("note: the checkpoint has no optimizer state (an exported copy): starting a fresh optimizer")
            return
        saved_kind = state.get("train_config", {}).get("optimizer", "adamw")
        if saved_kind != self.cfg.optimizer:
            print(f"note: the checkpoint was trained with --optimizer={saved_kind}; its state does not fit "
                  f"{self.cfg.optimizer}, so a fresh optimizer starts (the weights continue)")
            return
        if sharding.is_sharded(self.model) or any(isinstance(key, str) for key in state["optimizer"]["state"]):
            sharding.load_optimizer_state(self.model, self.optimizer, state["optimizer"])  # by parameter names
        else:
            self.optimizer.load_state_dict(state["optimizer"])
        rng = state["rng"]
        torch.set_rng_state(rng["torch"])
        self.batches.set_state(rng["batches"])
        if "cuda" in rng and self.device.startswith("cuda"):
            torch.cuda.set_rng_state(rng["cuda"], self.device)

    @property
    def dtype(self) -> str:
        return self.precision.dtype

    @property
    def tokens_per_iter(self) -> int:
        return (self.cfg.batch_size * self.model_cfg.block_size * self.cfg.gradient_accumulation_steps
                * self.processes.world_size)

    @property
    def tokens_per_s(self) -> float:
        """Steady-state speed: steps after the first (which includes torch.compile's work)."""
        timed_steps = self.iter_num - self.start_iter - 1
        if timed_steps < 1 or self.train_seconds <= 0:
            steps, seconds = self.iter_num - self.start_iter, self.train_seconds + self.first_step_seconds
            return self.tokens_per_iter * steps / seconds if seconds > 0 else 0.0
        return self.tokens_per_iter * timed_steps / self.train_seconds

    # ------------------------------------------------------------------------------------------
    # A run with a time budget (--max_minutes): its clock, and what the end of the run needs

    @property
    def budget_seconds(self) -> float:
        return 60.0 * self.cfg.max_minutes

    def elapsed(self) -> float:
        """Wall time of this run, the runs it resumes included."""
        return self.earlier_seconds + time.time() - self.started

    def reserve_seconds(self) -> float:
        """Time to keep for the final evaluation, save, sample and picture. Before any evaluation,
        estimated from the steps: one evaluation batch costs about a third of a training step."""
        steps = self.iter_num - self.start_iter - 1
        step = self.train_seconds / steps if steps > 0 else self.first_step_seconds
        evaluation = self.last_eval_seconds or 2 * self.cfg.eval_iters * step / 3
        return evaluation + self.last_save_seconds + END_OF_RUN_SECONDS

    def out_of_time(self, elapsed: float) -> bool:
        return bool(self.budget_seconds) and elapsed + self.reserve_seconds() >= self.budget_seconds

    def time_fraction(self, elapsed: float) -> float | None:
        """How far through its training time a timed run is (the schedule follows it); None untimed."""
        if not self.budget_seconds:
            return None
        return min(1.0, elapsed / max(1e-9, self.budget_seconds - self.reserve_seconds()))

    def steps_done(self) -> bool:
        return not self.budget_seconds and self.iter_num >= self.cfg.max_iters

    # ------------------------------------------------------------------------------------------
    # What the loop asks of it

    def evaluation_due(self) -> bool:
        return self.iter_num % self.cfg.eval_interval == 0 and self.iter_num > self.start_iter

    def curve_row_due(self) -> bool:
        if self.iter_num == self.start_iter:
            return False
        if self.budget_seconds and not self.cfg.log_interval:  # steps unknown: a row every 1% of the time
            since = self.curve[-1]["seconds"] if self.curve else self.earlier_seconds
            return self.elapsed() - since >= self.budget_seconds / CURVE_ROWS
        interval = self.cfg.log_interval or max(1, self.cfg.max_iters // CURVE_ROWS)
        return self.iter_num % interval == 0

    def periodic_save_due(self) -> bool:
        every = self.cfg.save_interval
        return bool(every) and self.iter_num % every == 0 and (self.budget_seconds or self.iter_num < self.cfg.max_iters)

    def step(self, elapsed: float) -> tuple[float, float]:
        """One optimizer step at the scheduled learning rate; returns the loss and the rate."""
        lr = optimizers.learning_rate_at(self.iter_num, self.cfg, self.time_fraction(elapsed))
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)  # Muon's matrices keep their own scale
        t0 = time.time()
        loss = train_step(self.step_model, self.optimizer, self.scaler, self.dataset, self.cfg, self.model_cfg,
                          self.device, self.autocast, self.batches, self.processes)
        self.iter_num += 1
        if not math.isfinite(loss):
            raise UserError(
                f"the loss became {loss} at iteration {self.iter_num}; nothing was saved from this run. "
                f"Lower --learning_rate (now {self.cfg.learning_rate:g}) or --grad_clip, or use --dtype=float32.")
        if self.iter_num == self.start_iter + 1:  # compiling and warming up happen in the first step
            self.first_step_seconds = time.time() - t0
        else:
            self.train_seconds += time.time() - t0
        self.batch_losses.append(loss)
        return loss, lr

    def evaluate(self, write=print) -> None:
        t0 = time.time()
        # On a CPU the val loss is the float32 model's whichever dtype trains it, so runs in float32 and
        # bfloat16 compare (the CPU's evaluation is a small share of a run); on a GPU, nanoGPT's way,
        # it is computed under the training autocast.
        autocast = None if self.device.startswith("cpu") else self.autocast
        self.losses = estimate_loss(self.eval_model, self.dataset, self.cfg, self.model_cfg.block_size, self.device,
                                    autocast, self.processes)
        seconds = self.last_eval_seconds = time.time() - t0
        self.eval_seconds += seconds
        self.history.append((self.iter_num, self.losses["train"], self.losses["val"]))
        write(f"step {self.iter_num}: train loss {self.losses['train']:.4f}, val loss {self.losses['val']:.4f} "
              f"= {self.val_bpb:.4f} bits per byte (eval {seconds:.1f}s, {t0 - self.started:.0f}s into the run)")

    @property
    def val_bpb(self) -> float:
        """The latest val loss in bits per byte: (nats per token) x (tokens per byte) / ln 2."""
        return bits_per_byte(self.losses["val"], self.dataset, "val")

    def keep_if_best(self) -> None:
        """With periodic saving, the best-val model is kept apart, so a worse later one never replaces it."""
        if self.losses["val"] < self.best_val and self.cfg.save_interval:
            self.save(best_path(self.out), best_val=self.losses["val"])
        self.best_val = min(self.best_val, self.losses["val"])

    def add_curve_row(self, val_loss: float | None = None) -> None:
        """One row of NAME.csv: the mean training loss since the last row, and val loss if evaluated."""
        if self.curve and self.curve[-1]["step"] == self.iter_num:  # evaluated again at the same step
            self.curve[-1]["val_loss"] = val_loss if val_loss is not None else self.curve[-1]["val_loss"]
        elif self.batch_losses or val_loss is not None:
            self.curve.append(self._curve_row(val_loss))
        self.batch_losses = []
        if self.processes.is_main:
            loss_curves.write_csv(self.curve, loss_curves.curve_paths(self.out)[0])

    def _curve_row(self, val_loss: float | None) -> dict:
        previous = self.curve[-1] if self.curve else {"step": 0, "tokens": 0}
        steps = self.iter_num - previous["step"]
        return {
            "step": self.iter_num, "tokens": previous["tokens"] + steps * self.tokens_per_iter,
            "train_loss": sum(self.batch_losses) / len(self.batch_losses) if self.batch_losses else None,
            "val_loss": val_loss, "learning_rate": self.optimizer.param_groups[0]["lr"],
            "tokens_per_s": self.tokens_per_s if steps else 0.0,
            "seconds": self.earlier_seconds + time.time() - self.started}

    def save(self, path: str | None = None, best_val: float | None = None) -> None:
        t0 = time.time()
        gathered = self.gather_shards()  # every process takes part; rank 0 receives
        if self.processes.is_main:  # one writer; the others hold the same weights (or their slices)
            save_checkpoint(self.checkpoint_state(best_val, gathered), path or self.out)
            self.last_save_seconds = time.time() - t0

    def gather_shards(self) -> tuple[dict, dict] | None:
        """A sharded model's whole weights and optimizer state, on rank 0: (weights, optimizer)."""
        if not sharding.is_sharded(self.model):
            return None
        return sharding.full_weights(self.model), sharding.full_optimizer_state(self.model, self.optimizer)

    def unsharded(self) -> torch.nn.Module:
        """The model as one plain module on rank 0, for the end-of-run sample (a sharded one runs only
        with every process); the sharded model elsewhere. Every process must call it."""
        if not sharding.is_sharded(self.model):
            return self.model
        weights = sharding.full_weights(self.model)
        if not self.processes.is_main:
            return self.model
        plain = sharding.plain_class(self.model)(self.model_cfg)
        plain.load_state_dict(weights)
        return plain.to(self.device).eval()

    def checkpoint_state(self, best_val: float | None = None, gathered: tuple[dict, dict] | None = None) -> dict:
        rng = {"torch": torch.get_rng_state(), "batches": self.batches.get_state()}
        if self.device.startswith("cuda"):
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        extra = {}
        weights = gathered[0] if gathered else self.model.state_dict()  # the plain module's, never a wrapper's
        if self.cfg.lora_rank:  # the adapters alone, and where their base is
            weights = lora.adapter_weights(self.model)
            extra["lora"] = lora_reference(self.model, self.model_cfg, self.cfg)
        return {
            **extra,
            "model_kind": self.kind,
            "model": weights,
            "model_config": dataclasses.asdict(self.model_cfg),
            "train_config": dataclasses.asdict(self.cfg),
            "preset": self.preset,
            **tokenizer_entries(self.dataset.vocab),
            "optimizer": gathered[1] if gathered else self.optimizer.state_dict(),
            "iter_num": self.iter_num,
            "best_val_loss": self.best_val if best_val is None else best_val,
            "rng": rng,
            "curve": self.curve,
        }

    def print_startup(self) -> None:
        print_startup(self)

    def report(self, result: TrainResult) -> None:
        report(self, result)

    def result(self, interrupted: str) -> TrainResult:
        return TrainResult(self.iter_num, self.losses["train"], self.losses["val"], self.best_val,
                           count_parameters(self.model), self.tokens_per_s, time.time() - self.started, self.out,
                           self.history, interrupted, self.first_step_seconds, self.val_bpb)



# ==============================================================================================
# The loop


def run(job: Job) -> TrainResult:
    """Train `job` to its end (steps, minutes or a signal); evaluate, save and report inside one loop."""
    r = (job.run_class or Run).start(job)
    processes, cfg = r.processes, r.cfg
    if processes.is_main:
        r.print_startup()
    bar = tqdm(total=None if cfg.max_minutes else cfg.max_iters, initial=r.iter_num, unit="it", dynamic_ncols=True,
               disable=None if cfg.progress and processes.is_main else True)
    with StopSignals(announce=processes.is_main) as stop:
        try:
            while not r.steps_done():
                evaluated = r.evaluation_due()
                if evaluated:
                    r.evaluate(bar.write)
                    r.keep_if_best()
                if evaluated or r.curve_row_due():
                    r.add_curve_row(r.losses["val"] if evaluated else None)
                # every process takes the same decision at the same step, on the slowest clock
                signalled, time_up, elapsed = processes.agree([bool(stop.requested), r.out_of_time(r.elapsed()),
                                                               r.elapsed()])
                if signalled:
                    stop.requested = stop.requested or "SIGTERM"  # (it reached another process)
                if signalled or time_up:
                    break
                loss, lr = r.step(elapsed)
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", tok_s=f"{r.tokens_per_s:,.0f}")
                if r.periodic_save_due():
                    r.save()
        except KeyboardInterrupt:  # Ctrl-C where no handler could be installed (else: the second one)
            if stop.requested:
                raise
            stop.requested = "SIGINT"
        bar.close()
        if stop.requested:  # save first: a scheduler's SIGKILL may follow SIGTERM within seconds
            r.save()
            if processes.is_main:
                print(f"{stop.requested} at iteration {r.iter_num}: saved {r.out}; evaluating before exit")
        if r.iter_num > r.start_iter or not r.history:
            r.evaluate()
            r.best_val = min(r.best_val, r.losses["val"])
            r.add_curve_row(r.losses["val"])
        r.save()
    r.model = r.unsharded()
    result = r.result(stop.requested)
    if processes.is_main:
        r.report(result)
    processes.wait_for_all()  # no process leaves before the checkpoint is written
    return result

