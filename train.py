"""The training loop shared by gpt_final_version.py and bigram.py.

It gets a model-building function from its caller and never imports a model file, so imports run
one way: config -> corpus/checkpoint -> train -> gpt_final_version/bigram -> model_handler.
"""
from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import math
import os
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from checkpoint import load_checkpoint, load_weights, save_checkpoint
from config import (GPTConfig, TrainConfig, UserError, apply, choose_device, default_preset, help_text,
                    parse_args, preset_values)
from corpus import (END_MARK, INPUT_MARK, OUTPUT_MARK, CharVocab, TextDataset, ensure_default_corpus, is_pairs_file,
                    pairs_dataset, pairs_vocab, prepared_dataset, read_pairs, read_text)

# Model-shape fields that may change when resuming; the others must match the checkpoint's weights.
RESUMABLE_MODEL_FIELDS = {"dropout"}
MEMMAP_ABOVE_BYTES = 256 << 20  # a text this large is read through a memory map even without --memmap


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


# ==============================================================================================
# Several processes: torchrun starts one per GPU (or several on a CPU) and sets RANK, WORLD_SIZE...


@dataclass
class Processes:
    """Where this process stands among those torchrun started; one process without torchrun."""
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    backend: str = ""

    @property
    def is_main(self) -> bool:  # rank 0 alone prints, evaluates into files, saves and samples
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def mean(self, value: float) -> float:
        """The mean of a number over all processes (every process gets it)."""
        if not self.distributed:
            return value
        tensor = torch.tensor([value], dtype=torch.float64)
        if self.backend == "nccl":
            tensor = tensor.cuda()
        dist.all_reduce(tensor)
        return tensor.item() / self.world_size

    def wait_for_all(self) -> None:
        if self.distributed:
            dist.barrier()


def start_processes(requested_device: str) -> tuple[Processes, str]:
    """Join torchrun's process group when started by torchrun: nccl on cuda (one GPU per process),
    gloo on the CPU. Only rank 0 writes to the terminal."""
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return Processes(), choose_device(requested_device)
    device = choose_device(requested_device)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    world_size = int(os.environ["WORLD_SIZE"])
    if device.startswith("mps"):
        raise UserError("torchrun with --device=mps: PyTorch has no distributed backend for mps; train in one process.")
    if device.startswith("cuda"):
        if local_rank >= torch.cuda.device_count():
            raise UserError(f"torchrun started {local_rank + 1}+ processes on this machine but it has "
                            f"{torch.cuda.device_count()} GPU(s): lower --nproc_per_node.")
        device = f"cuda:{local_rank}"
        torch.cuda.set_device(device)
    backend = "nccl" if device.startswith("cuda") else "gloo"
    dist.init_process_group(backend=backend)
    if rank != 0:  # one progress bar and one report, not world_size of them
        sys.stdout = open(os.devnull, "w")
    return Processes(rank, local_rank, world_size, backend), device


# ==============================================================================================
# From the command line to a model, a dataset and settings


def train_from_command_line(argv, build_model, kind: str, usage: str):
    args = parse_args(argv, [GPTConfig, TrainConfig])
    if args.help:
        print(help_text([GPTConfig, TrainConfig], usage))
        return None
    resume_path, init_path = args.overrides.get("resume", ""), args.overrides.get("init_from", "")
    if resume_path and init_path:
        raise UserError("--resume continues a run and --init_from starts a new one from trained weights; pick one.")
    state = load_checkpoint(resume_path) if resume_path else None
    init_state = load_checkpoint(init_path) if init_path else None
    processes, device = start_processes(args.overrides.get("device", TrainConfig.device))
    try:
        return _train(args, build_model, kind, state, init_state, processes, device)
    finally:
        if processes.distributed:
            dist.destroy_process_group()


def _train(args, build_model, kind, state, init_state, processes, device):
    resume_path, init_path = args.overrides.get("resume", ""), args.overrides.get("init_from", "")
    preset = (args.preset or (state or init_state or {}).get("preset")
              or ("bigram" if kind == "bigram" else default_preset(device)))
    model_cfg, cfg = _settings(args.overrides, preset, state, init_state, kind)
    model_cfg.validate()  # refuse a bad shape before any download or file read
    cfg.validate()
    # The first process of each machine downloads or prepares the data, the others then read it
    # (machines may not share a filesystem; where they do, writes are atomic, so repeats are harmless).
    if processes.local_rank != 0:
        processes.wait_for_all()
    dataset = load_dataset(cfg, state, init_state)
    if processes.local_rank == 0:
        processes.wait_for_all()
    model_cfg = dataclasses.replace(model_cfg, vocab_size=len(dataset.vocab))
    dataset.check_fits(model_cfg.block_size)
    torch.manual_seed(cfg.seed)  # the same seed gives the same initial weights
    model = build_model(model_cfg)
    if state:
        load_weights(model, state["model"], resume_path)
    elif init_state:
        load_weights_extending_vocab(model, init_state["model"], init_path)
    changed = {k: v for k, v in args.overrides.items() if k not in ("resume",)}
    return run(model, model_cfg, cfg, dataset, device, kind, preset, changed, state, processes)


def _settings(overrides: dict, preset: str, state: dict | None, init_state: dict | None, kind: str):
    """Defaults, then preset, then the resumed checkpoint's settings, then the command line.
    Starting from trained weights (--init_from) takes the model's shape from that checkpoint."""
    model_cfg = apply(GPTConfig(), preset_values(preset))
    cfg = apply(TrainConfig(), preset_values(preset))
    source = state or init_state
    if source is not None:
        if source.get("model_kind", "gpt") != kind:
            raise UserError(f"the checkpoint holds a {source.get('model_kind')} model; use {source.get('model_kind')}'s script.")
        model_cfg = apply(GPTConfig(), source["model_config"])
        for name, value in overrides.items():
            if hasattr(model_cfg, name) and name not in RESUMABLE_MODEL_FIELDS and getattr(model_cfg, name) != value:
                raise UserError(
                    f"--{name}={value} differs from the checkpoint's {name}={getattr(model_cfg, name)}; "
                    "a trained model keeps its shape. Drop the option or train a new model."
                )
    if state is not None:
        cfg = apply(TrainConfig(), state["train_config"])
        cfg = dataclasses.replace(cfg, out="")  # a resumed run writes a new file unless --out says where
    return apply(model_cfg, overrides), apply(cfg, overrides)


def load_dataset(cfg: TrainConfig, state: dict | None, init_state: dict | None) -> TextDataset:
    """Plain text, or chat pairs from a .jsonl file. A resumed run keeps its vocabulary; a run
    started from trained weights extends that model's vocabulary with the new characters."""
    if _use_memmap(cfg):
        return _memmap_dataset(cfg, state, init_state)
    pairs = read_pairs(cfg.data) if is_pairs_file(cfg.data) else None
    text = None if pairs else read_text(cfg.data)
    if state:
        vocab = CharVocab(state["vocab"])
        unknown = sorted((set(text) if text else pairs_vocab(pairs).index.keys()) - vocab.index.keys())
        if unknown:
            shown = ", ".join(repr(ch) for ch in unknown[:10])
            raise UserError(f"{cfg.data} has character(s) {shown} that the resumed model's vocabulary lacks; "
                            "start a new run from its weights with --init_from instead of --resume.")
    else:
        base = CharVocab(init_state["vocab"]) if init_state else None
        if pairs:
            vocab = pairs_vocab(pairs, base)
        else:
            vocab = CharVocab.from_text(text) if base is None else \
                CharVocab(base.chars + sorted(set(text) - set(base.chars)))
    return pairs_dataset(pairs, vocab, cfg.seed) if pairs else TextDataset.from_text(text, vocab)


def _use_memmap(cfg: TrainConfig) -> bool:
    if is_pairs_file(cfg.data):
        if cfg.memmap:
            raise UserError("--memmap is for plain text; chat pairs (.jsonl) are read into memory.")
        return False
    ensure_default_corpus(cfg.data)
    size = Path(cfg.data).stat().st_size if Path(cfg.data).is_file() else 0
    if size > MEMMAP_ABOVE_BYTES and not cfg.memmap:
        print(f"note: {cfg.data} is {size / 2**20:,.0f} MB: reading it through a memory map (as with --memmap)")
    return cfg.memmap or size > MEMMAP_ABOVE_BYTES


def _memmap_dataset(cfg: TrainConfig, state: dict | None, init_state: dict | None) -> TextDataset:
    base = CharVocab((state or init_state)["vocab"]) if (state or init_state) else None
    dataset = prepared_dataset(cfg.data, cfg.min_char_count, base)
    if state and dataset.vocab.chars != state["vocab"]:
        raise UserError(f"{cfg.data} (prepared) has a vocabulary of {len(dataset.vocab)} characters that differs from "
                        f"the resumed model's {len(state['vocab'])}; start a new run from its weights with --init_from.")
    meta = dataset.prepared
    if meta["replaced_chars"]:
        print(f"data: {meta['rare_chars']} character(s) rarer than --min_char_count={cfg.min_char_count} "
              f"({meta['replaced_chars']:,} occurrences) are read as {meta['unknown_char']!r}")
    return dataset


def load_weights_extending_vocab(model, weights: dict, path: str) -> None:
    """Load trained weights into a model whose vocabulary grew: the rows of known characters (token
    embedding, output layer) keep their trained values; rows of new characters keep their fresh
    initialisation. Every other tensor must match exactly (load_weights says which do not)."""
    merged = {}
    for name, fresh in model.state_dict().items():
        old = weights.get(name)
        grown = (old is not None and old.dim() == fresh.dim() and old.shape[1:] == fresh.shape[1:]
                 and old.shape[0] < fresh.shape[0])
        if grown:
            row_mix = fresh.clone()
            row_mix[:old.shape[0]] = old
            merged[name] = row_mix
        elif old is not None:
            merged[name] = old
    load_weights(model, merged, path)


# ==============================================================================================
# Pieces of the loop


def autocast_context(device: str, dtype: str):
    """Mixed precision where it pays: bfloat16 on cuda by default; float32 elsewhere unless asked."""
    device_type = device.split(":")[0]
    if dtype == "auto":
        dtype = "bfloat16" if device_type == "cuda" and torch.cuda.is_bf16_supported() else \
            "float16" if device_type == "cuda" else "float32"
    if device_type == "cuda":  # TF32 matmuls: float32 range, much faster on Ampere and later
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if dtype == "float32":
        return contextlib.nullcontext(), dtype
    return torch.autocast(device_type=device_type, dtype=getattr(torch, dtype)), dtype


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


def configure_optimizer(model, cfg: TrainConfig, device: str):
    """AdamW; weight decay on matrices and embeddings only, never on biases or LayerNorm gains."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    fused = True if device.startswith("cuda") else None  # one kernel for all parameters on cuda
    return torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=(cfg.beta1, cfg.beta2), fused=fused)


def learning_rate_at(it: int, cfg: TrainConfig) -> float:
    """Linear warm-up to learning_rate, then cosine decay to min_lr at lr_decay_iters (or max_iters)."""
    decay_iters = cfg.lr_decay_iters or cfg.max_iters
    if it < cfg.warmup_iters:
        return cfg.learning_rate * (it + 1) / (cfg.warmup_iters + 1)
    if it >= decay_iters:
        return cfg.min_lr
    progress = (it - cfg.warmup_iters) / max(1, decay_iters - cfg.warmup_iters)
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (cfg.learning_rate - cfg.min_lr)


@torch.no_grad()
def estimate_loss(model, dataset: TextDataset, cfg: TrainConfig, block_size: int, device: str,
                  autocast=contextlib.nullcontext(), processes: Processes = Processes()) -> dict:
    """Mean loss over eval_iters batches of each split, in eval mode (no dropout), without gradients.

    The batches come from their own fixed-seed generator: every evaluation sees the same windows
    (so successive numbers compare), and training's random stream is left untouched. Under torchrun
    each process scores its slice of the same global batches and the means are averaged, so every
    process gets the same numbers.
    """
    was_training = model.training
    model.eval()
    losses = {}
    for split in ("train", "val"):
        generator = torch.Generator().manual_seed(cfg.seed + 1)
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


def best_path(out: str) -> str:
    """Where periodic saving keeps the best-val checkpoint: beside the latest, never over it."""
    return str(Path(out).with_suffix("")) + ".best.pt"


def default_checkpoint_path(name: str) -> str:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path = Path("models") / f"{name}-{stamp}.pt"
    n = 1
    while path.exists():  # never overwrite an earlier run's file
        n += 1
        path = Path("models") / f"{name}-{stamp}-{n}.pt"
    return str(path)


# ==============================================================================================
# The loop


def run(model, model_cfg: GPTConfig, cfg: TrainConfig, dataset: TextDataset, device: str, kind: str,
        preset: str, changed: dict, state: dict | None = None, processes: Processes = Processes()) -> TrainResult:
    autocast, dtype = autocast_context(device, cfg.dtype)
    if device == "cpu":
        keep_freed_memory_in_process()
    model.to(device)
    optimizer = configure_optimizer(model, cfg, device)
    scaler = torch.amp.GradScaler(enabled=(dtype == "float16"))
    batches = torch.Generator().manual_seed(cfg.seed)  # training batches have their own random stream
    iter_num, best_val = 0, float("inf")
    if state:
        iter_num, best_val = state["iter_num"], state.get("best_val_loss", float("inf"))
        if "optimizer" in state:
            optimizer.load_state_dict(state["optimizer"])
            _restore_rng(state["rng"], batches, device)
        else:
            print("note: the checkpoint has no optimizer state (an exported copy): starting a fresh optimizer")
    if processes.distributed:  # the same batch stream everywhere (each takes its slice), its own dropout
        torch.manual_seed(cfg.seed + 1000 * processes.rank + iter_num)
    out = cfg.out or default_checkpoint_path(preset if kind == "gpt" else kind)
    out = _agree_on(out, processes)
    step_model = torch.compile(model) if cfg.compile else model  # checkpoints save `model`, never this
    if processes.distributed:  # gradients are averaged across processes during backward
        step_model = DistributedDataParallel(step_model, device_ids=[processes.local_rank] if device.startswith("cuda") else None)
    tokens_per_iter = cfg.batch_size * model_cfg.block_size * cfg.gradient_accumulation_steps * processes.world_size
    _print_startup(model, model_cfg, cfg, dataset, device, dtype, preset, tokens_per_iter, iter_num, out, processes)

    history, losses, interrupted = [], {}, False
    run_started = time.time()
    train_seconds = eval_seconds = 0.0
    start_iter, started = iter_num, time.time()
    bar = tqdm(total=cfg.max_iters, initial=iter_num, unit="it", dynamic_ncols=True,
               disable=None if cfg.progress and processes.is_main else True)
    try:
        while iter_num < cfg.max_iters:
            if iter_num % cfg.eval_interval == 0 and iter_num > start_iter:
                losses, seconds = _evaluate(model, dataset, cfg, model_cfg, device, autocast, iter_num, bar,
                                            run_started, processes)
                eval_seconds += seconds
                history.append((iter_num, losses["train"], losses["val"]))
                if losses["val"] < best_val and cfg.save_interval and processes.is_main:  # the best is kept apart
                    save_checkpoint(_checkpoint_state(model, model_cfg, cfg, dataset, optimizer, iter_num,
                                                      losses["val"], batches, kind, preset, device), best_path(out))
                best_val = min(best_val, losses["val"])
            t0 = time.time()
            lr = learning_rate_at(iter_num, cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss = _train_step(step_model, optimizer, scaler, dataset, cfg, model_cfg, device, autocast, batches,
                               processes)
            iter_num += 1
            if not math.isfinite(loss):
                raise UserError(
                    f"the loss became {loss} at iteration {iter_num}; nothing was saved from this run. "
                    f"Lower --learning_rate (now {cfg.learning_rate:g}) or --grad_clip, or use --dtype=float32."
                )
            train_seconds += time.time() - t0
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}",
                            tok_s=f"{tokens_per_iter * (iter_num - start_iter) / train_seconds:,.0f}")
            if cfg.save_interval and iter_num % cfg.save_interval == 0 and iter_num < cfg.max_iters and processes.is_main:
                save_checkpoint(_checkpoint_state(model, model_cfg, cfg, dataset, optimizer, iter_num,
                                                  best_val, batches, kind, preset, device), out)
    except KeyboardInterrupt:
        interrupted = True
        bar.write(f"interrupted at iteration {iter_num}: saving a checkpoint of where training got to")
    bar.close()

    if iter_num > start_iter or not history:
        losses, seconds = _evaluate(model, dataset, cfg, model_cfg, device, autocast, iter_num, None,
                                    run_started, processes)
        eval_seconds += seconds
        history.append((iter_num, losses["train"], losses["val"]))
        best_val = min(best_val, losses["val"])
    if processes.is_main:
        save_checkpoint(_checkpoint_state(model, model_cfg, cfg, dataset, optimizer, iter_num, best_val,
                                          batches, kind, preset, device), out)
    wall = time.time() - started
    tokens_per_s = tokens_per_iter * (iter_num - start_iter) / train_seconds if train_seconds else 0.0
    result = TrainResult(iter_num, losses["train"], losses["val"], best_val, _num_params(model),
                         tokens_per_s, wall, out, history)
    if processes.is_main:
        _report(result, model, dataset, cfg, device, dtype, preset, changed, interrupted, eval_seconds)
    processes.wait_for_all()  # no process leaves before the checkpoint is written
    return result


def _report(result, model, dataset, cfg, device, dtype, preset, changed, interrupted, eval_seconds) -> None:
    """Rank 0's account of a finished run: where it was saved, a sample, notes.txt, the final line."""
    out, wall, best_val = result.checkpoint, result.seconds, result.best_val_loss
    print(f"saved {out}{' (interrupted)' if interrupted else ''}; evaluation took {eval_seconds:.1f}s, "
          f"{100 * eval_seconds / max(wall, 1e-9):.0f}% of the run")
    if cfg.save_interval and Path(best_path(out)).exists():
        print(f"best val loss {best_val:.4f}: kept apart in {best_path(out)}")
    _write_sample(model, dataset, cfg, device, out)
    _append_notes(cfg, result, preset, changed, device, dtype)
    if dataset.pairs:
        print(f"val loss of replies only (held-out pairs): {result.val_loss:.4f}")
    print(f"final: iters={result.iters} train_loss={result.train_loss:.4f} val_loss={result.val_loss:.4f} "
          f"best_val_loss={result.best_val_loss:.4f} params={result.params} "
          f"tokens_per_s={result.tokens_per_s:.0f} seconds={result.seconds:.1f} checkpoint={result.checkpoint}")


def _agree_on(path: str, processes: Processes) -> str:
    """Rank 0's checkpoint path for every process (a timestamped default could differ by a second)."""
    if not processes.distributed:
        return path
    shared = [path]
    dist.broadcast_object_list(shared, src=0)
    return shared[0]


def _train_step(model, optimizer, scaler, dataset, cfg, model_cfg, device, autocast, batches,
                processes: Processes = Processes()) -> float:
    """One optimizer step over gradient_accumulation_steps micro-batches; returns the mean loss
    (over all processes, so that every process sees the same number and stops together on a nan)."""
    total = 0.0
    steps = cfg.gradient_accumulation_steps
    for micro_step in range(steps):
        x, y = dataset.get_batch("train", cfg.batch_size, model_cfg.block_size, batches, device,
                                 processes.rank, processes.world_size)
        # under DDP, gradients are averaged across processes on the last micro-step only
        last = micro_step == steps - 1
        sync = model.no_sync() if isinstance(model, DistributedDataParallel) and not last else contextlib.nullcontext()
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


def _evaluate(model, dataset, cfg, model_cfg, device, autocast, iter_num, bar, run_started, processes):
    t0 = time.time()
    losses = estimate_loss(model, dataset, cfg, model_cfg.block_size, device, autocast, processes)
    seconds = time.time() - t0
    line = (f"step {iter_num}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f} "
            f"(eval {seconds:.1f}s, {t0 - run_started:.0f}s into the run)")
    (bar.write if bar is not None else print)(line)
    return losses, seconds


# ==============================================================================================
# What a run leaves behind: checkpoint, sample, notes


def _checkpoint_state(model, model_cfg, cfg, dataset, optimizer, iter_num, best_val, batches, kind,
                      preset, device) -> dict:
    rng = {"torch": torch.get_rng_state(), "batches": batches.get_state()}
    if device.startswith("cuda"):
        rng["cuda"] = torch.cuda.get_rng_state(device)
    return {
        "model_kind": kind,
        "model": model.state_dict(),  # the plain module's weights, never a compiled wrapper's
        "model_config": dataclasses.asdict(model_cfg),
        "train_config": dataclasses.asdict(cfg),
        "preset": preset,
        "vocab": dataset.vocab.chars,
        "optimizer": optimizer.state_dict(),
        "iter_num": iter_num,
        "best_val_loss": best_val,
        "rng": rng,
    }


def _restore_rng(rng: dict, batches: torch.Generator, device: str) -> None:
    torch.set_rng_state(rng["torch"])
    batches.set_state(rng["batches"])
    if "cuda" in rng and device.startswith("cuda"):
        torch.cuda.set_rng_state(rng["cuda"], device)


def _write_sample(model, dataset, cfg, device, checkpoint_path) -> None:
    if cfg.sample_chars == 0:
        return
    generator = torch.Generator().manual_seed(cfg.seed)
    model.eval()
    if dataset.pairs:  # a chat model answers a held-out message, stopping at the end marker
        their = (dataset.pairs["val"] or dataset.pairs["train"])[0][0]
        start = torch.tensor([dataset.vocab.encode(INPUT_MARK + their + OUTPUT_MARK)], device=device)
        ids = model.generate(start, cfg.sample_chars, temperature=0.8, generator=generator,
                             stop_token=dataset.vocab.index[END_MARK])
        reply = dataset.vocab.decode(ids[0, start.shape[1]:].tolist()).split(END_MARK)[0]
        text = f"> {their}\n< {reply}"
    else:
        start = torch.tensor([dataset.vocab.encode("\n")] if "\n" in dataset.vocab.index else [[0]], device=device)
        ids = model.generate(start, cfg.sample_chars, temperature=0.8, top_k=None, generator=generator)
        text = dataset.vocab.decode(ids[0, 1:].tolist())
    model.train()
    print(f"--- sample ({cfg.sample_chars} characters at most) ---\n{text}\n---")
    if cfg.samples_dir:
        path = Path(cfg.samples_dir) / (Path(checkpoint_path).stem + ".txt")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"sample written to {path}")


def _append_notes(cfg, result: TrainResult, preset, changed, device, dtype) -> None:
    if not cfg.notes:
        return
    settings = " ".join(f"{k}={v}" for k, v in changed.items()) or "(preset defaults)"
    line = (f"{datetime.now():%Y-%m-%d %H:%M} | {result.checkpoint} | params={result.params} | "
            f"preset={preset} {settings} | iters={result.iters} train_loss={result.train_loss:.4f} "
            f"val_loss={result.val_loss:.4f} best_val_loss={result.best_val_loss:.4f} | "
            f"{result.seconds:.1f}s | {device} {dtype} | {result.tokens_per_s:.0f} tokens/s\n")
    with open(cfg.notes, "a", encoding="utf-8") as notes:
        notes.write(line)


def _num_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def _print_startup(model, model_cfg, cfg, dataset, device, dtype, preset, tokens_per_iter, iter_num, out, processes):
    shape = (f"{model_cfg.n_layer} layers, {model_cfg.n_head} heads, {model_cfg.n_embd} wide, "
             f"context {model_cfg.block_size}, {model_cfg.attention} attention")
    print(f"device: {device}, dtype: {dtype}, preset: {preset}")
    if processes.distributed:
        print(f"processes: {processes.world_size} (torchrun, {processes.backend}); this is rank 0 of them")
    print(f"model: {type(model).__name__} with {_num_params(model):,} parameters ({shape})")
    per_process = f" x {processes.world_size} processes" if processes.distributed else ""
    print(f"tokens per iteration: {tokens_per_iter:,} (batch {cfg.batch_size} x context {model_cfg.block_size}"
          f" x {cfg.gradient_accumulation_steps} accumulation steps{per_process})")
    n_train, n_val = len(dataset.splits["train"]), len(dataset.splits["val"])
    print(f"data: {cfg.data}: vocabulary {len(dataset.vocab)}, {n_train:,} train / {n_val:,} val tokens")
    if dataset.prepared:
        print(f"data: memory-mapped from {cfg.data}.bin ({dataset.prepared['dtype']}); the text is never read into memory")
    if dataset.pairs:
        print(f"chat pairs: {len(dataset.pairs['train']):,} train / {len(dataset.pairs['val']):,} held-out val; "
              "losses count reply characters only (their side is masked)")
    if cfg.init_from:
        print(f"starting from the weights of {cfg.init_from}")
    resumed = f", resuming at iteration {iter_num}" if iter_num else ""
    print(f"training to iteration {cfg.max_iters}{resumed}; checkpoint: {out}")
