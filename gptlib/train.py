"""The training loop shared by gpt_final_version.py and bigram.py.

    python gpt_final_version.py --preset=tiny     # runs this loop on a GPT
    python bigram.py                              # and on the bigram table

It gets a model-building function from its caller and never imports a model file, so imports run
one way: config -> corpus/checkpoint -> train -> gpt_final_version/bigram -> model_handler.

Sections: several processes (torchrun) | from the command line to a model and data | pieces of the
loop | the run's state (class Run) | the loop itself (run) | what a run leaves behind.
"""
from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import math
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from config import GPTConfig, TrainConfig, preset_values
from gptlib import devices, lora, loss_curves, muon, pretrained, tokenizer
from gptlib.atomic_write import write_text_atomically
from gptlib.checkpoint import load_checkpoint, load_weights, save_checkpoint
from gptlib.cli import apply, help_text, parse_args
from gptlib.corpus import (
    END_MARK,
    INPUT_MARK,
    OUTPUT_MARK,
    TRAIN_FRACTION,
    CharVocab,
    PairBatches,
    TextDataset,
    ensure_default_corpus,
    held_out_split,
    is_pairs_file,
    pairs_dataset,
    pairs_vocab,
    prepared_dataset,
    read_pairs,
    read_text,
    seeded_generator,
)
from gptlib.devices import choose_device, default_preset
from gptlib.errors import UserError

# Model-shape fields that may change when resuming; the others must match the checkpoint's weights.
# (A change of attention class converts the weights and the optimizer state: the function is the same.)
RESUMABLE_MODEL_FIELDS = {"dropout", "attention"}
MEMMAP_ABOVE_BYTES = 256 << 20  # a text this large is read through a memory map even without --memmap
DEFAULT_BPE_VOCAB = 512  # --tokenizer=bpe without --vocab_size: 253 merges, small enough to train in a second
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
        return self._all_reduce([value], dist.ReduceOp.SUM)[0] / self.world_size

    def agree(self, values: list[float]) -> list[float]:
        """The largest of each value over all processes, on every process: flags (stop now?) and
        clocks (how long has the run taken?) then lead every process to the same decision."""
        if not self.distributed:
            return values
        return self._all_reduce(values, dist.ReduceOp.MAX)

    def wait_for_all(self) -> None:
        if self.distributed:
            dist.barrier()

    def _all_reduce(self, values: list[float], op) -> list[float]:
        tensor = torch.tensor(values, dtype=torch.float64)
        if self.backend == "nccl":
            tensor = tensor.cuda()
        dist.all_reduce(tensor, op=op)
        return tensor.tolist()


def start_processes(requested_device: str) -> tuple[Processes, str]:
    """Join torchrun's process group when started by torchrun: nccl on cuda (one GPU per process),
    gloo on the CPU. Only rank 0 writes to the terminal."""
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return Processes(), choose_device(requested_device)
    device = choose_device(requested_device)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    world_size = int(os.environ["WORLD_SIZE"])
    setup = devices.distributed_setup(device, local_rank, devices.probe(device))  # mps: refused, with the fix
    if setup.device.startswith("cuda"):
        torch.cuda.set_device(setup.device)
    dist.init_process_group(backend=setup.backend, device_id=setup.device_id)
    if rank != 0:  # one progress bar and one report, not world_size of them
        sys.stdout = open(os.devnull, "w")
    return Processes(rank, local_rank, world_size, setup.backend), setup.device


# ==============================================================================================
# From the command line to a model, a dataset and settings


def train_from_command_line(argv, build_model, kind: str, usage: str, convert_weights=None):
    """`convert_weights(weights, config, to)` moves weights between attention classes (the GPT's
    convert_attention_weights); models with one layout pass None."""
    args = parse_args(argv, [GPTConfig, TrainConfig])
    if args.help:
        print(help_text([GPTConfig, TrainConfig], usage))
        return None
    resume_path, init_path = args.overrides.get("resume", ""), args.overrides.get("init_from", "")
    if resume_path and init_path:
        raise UserError("--resume continues a run and --init_from starts a new one from trained weights; pick one.")
    state = load_checkpoint(resume_path) if resume_path else None
    init_state = load_start(init_path, args.overrides) if init_path else None
    processes, device = start_processes(args.overrides.get("device", TrainConfig.device))
    try:
        return _train(args, build_model, kind, state, init_state, processes, device, convert_weights)
    finally:
        if processes.distributed:
            dist.destroy_process_group()


def _train(args, build_model, kind, state, init_state, processes, device, convert_weights):
    resume_path, init_path = args.overrides.get("resume", ""), args.overrides.get("init_from", "")
    preset = (args.preset or (state or init_state or {}).get("preset")
              or ("bigram" if kind == "bigram" else default_preset(device)))
    model_cfg, cfg = _settings(args.overrides, preset, state, init_state, kind, device, args.preset is not None)
    model_cfg.validate()  # refuse a bad shape or precision before any download or file read
    cfg.validate()
    facts = devices.probe(device)
    precision = devices.choose_dtype(cfg.dtype, facts)
    # The first process of each machine downloads or prepares the data, the others then read it
    # (machines may not share a filesystem; where they do, writes are atomic, so repeats are harmless).
    if processes.local_rank != 0:
        processes.wait_for_all()
    dataset = load_dataset(cfg, state, init_state, args.overrides.get("vocab_size"))
    if processes.local_rank == 0:
        processes.wait_for_all()
    model_cfg = dataclasses.replace(model_cfg, vocab_size=len(dataset.vocab))
    dataset.check_fits(model_cfg.block_size)
    cfg = dataclasses.replace(cfg, init_from=base_reference(cfg.init_from)) if cfg.lora_rank and not state else cfg
    model, state = prepare_model(build_model, model_cfg, cfg, state, init_state, resume_path, init_path, convert_weights)
    changed = {k: v for k, v in args.overrides.items() if k not in ("resume",)}
    return run(model, model_cfg, cfg, dataset, device, kind, preset, changed, state, processes, facts, precision)


# ==============================================================================================
# Where the weights start: fresh, a checkpoint (--resume, --init_from), GPT-2's (pretrained.py),
# and LoRA adapters on any of them (lora.py)


def load_start(source: str, overrides: dict) -> dict:
    """What --init_from names, as a checkpoint-like dict: a checkpoint of this project, or GPT-2's
    weights from a hub directory or name (its shape from config.json; --block_size may shrink it)."""
    if pretrained.is_pretrained_source(source):
        return pretrained.load_pretrained(source, overrides.get("block_size", 0), overrides.get("dropout", 0.0))
    if not Path(source).exists():
        raise UserError(f"--init_from={source} does not exist: give a checkpoint (.pt), a hub directory "
                        f"(config.json + weights) or one of {', '.join(pretrained.HUB_NAMES)}.")
    state = load_checkpoint(source)
    if "lora" in state:
        raise UserError(f"{source} holds LoRA adapters, not a whole model: start from a merged copy "
                        f"(python model_handler.py {source} --export=merged.pt).")
    return state


def base_reference(source: str) -> str:
    """How a LoRA checkpoint names its base: a hub name as it is, a path made absolute, so resuming
    and sampling find it from any directory."""
    return source if source in pretrained.HUB_NAMES and not Path(source).exists() else str(Path(source).resolve())


def prepare_model(build_model, model_cfg: GPTConfig, cfg: TrainConfig, state: dict | None, init_state: dict | None,
                  resume_path: str = "", init_path: str = "", convert_weights=None):
    """The model a run starts from, with its weights; returns it and the resumed state (converted
    to the model's attention class when that changed). A LoRA run gets its adapters, and everything
    else frozen, here: before the optimizer or DistributedDataParallel see the parameters."""
    torch.manual_seed(cfg.seed)  # the same seed gives the same initial weights (and adapters)
    model = build_model(model_cfg)
    if state and "lora" in state:
        saved = (state["lora"]["rank"], state["lora"]["alpha"])
        if (cfg.lora_rank, cfg.lora_alpha) != saved:
            raise UserError(f"{resume_path} trained LoRA adapters of rank {saved[0]}, alpha {saved[1]:g}; "
                            "a resumed run keeps them: drop --lora_rank / --lora_alpha.")
        load_weights(model, load_lora_base(state, resume_path)["model"], state["lora"]["base"])
        _add_lora(model, model_cfg, state["lora"]["rank"], state["lora"]["alpha"], state["lora"].get("rows_from"))
        load_weights(model, {**lora.base_weights(model), **state["model"]}, resume_path)
        return model, state
    if state:
        if cfg.lora_rank:
            raise UserError(f"{resume_path} trained every weight; --lora_rank applies to a new run from it "
                            f"(--init_from={resume_path} --lora_rank={cfg.lora_rank}).")
        state = switch_attention(state, model_cfg, build_model, convert_weights)
        load_weights(model, state["model"], resume_path)
    elif init_state:
        init_state = switch_attention(init_state, model_cfg, build_model, convert_weights)
        grown = model_cfg.vocab_size != init_state["model_config"]["vocab_size"]
        if cfg.lora_rank and grown and cfg.tokenizer == "char":
            raise UserError(f"the data has characters that {init_path}'s vocabulary lacks; LoRA trains adapters "
                            "only and cannot learn new embedding rows: fine-tune without --lora_rank.")
        weights = init_state["model"]
        if grown and cfg.tokenizer != "char":  # the chat markers' special ids, appended (with_chat_markers)
            weights = extend_vocab_rows(weights, model_cfg.vocab_size)
        load_weights_extending_vocab(model, weights, init_path)
        if cfg.lora_rank:  # the appended marker rows learn beside the adapters (lora.TrainedRows)
            rows_from = init_state["model_config"]["vocab_size"] if grown and cfg.tokenizer != "char" else None
            _add_lora(model, model_cfg, cfg.lora_rank, cfg.lora_alpha, rows_from)
    return model, state


def _add_lora(model, model_cfg: GPTConfig, rank: int, alpha: float, rows_from: int | None = None) -> None:
    if model_cfg.attention != "fast":
        raise UserError("LoRA adapts the fused attention's qkv and proj layers: use --attention=fast "
                        "(the per-Head model converts to it with the same function).")
    lora.add_adapters(model, rank, alpha, rows_from)
    lora.freeze_all_but_adapters(model)


def load_lora_base(state: dict, path: str) -> dict:
    """The base model a LoRA checkpoint's adapters were trained on, found where the run found it
    and checked against the fingerprint saved with them."""
    reference = state["lora"]
    base = reference["base"]
    if base not in pretrained.HUB_NAMES and not Path(base).exists():
        raise UserError(f"{path} holds LoRA adapters for the base model {base}, which is not there any more "
                        "(moved or deleted?): put it back at that path, or export a merged copy where it is.")
    config = reference["model_config"]
    base_state = load_start(base, {"block_size": config["block_size"], "dropout": config["dropout"]})
    if config["vocab_size"] > base_state["model_config"]["vocab_size"]:  # the chat markers' rows, rebuilt
        base_state = {**base_state, "model": extend_vocab_rows(base_state["model"], config["vocab_size"])}
    if not lora.same_fingerprint(lora.fingerprint(base_state["model"]), reference["base_fingerprint"]):
        raise UserError(f"{base} is not the base model {path}'s adapters were trained on (its weights differ).")
    return base_state


def lora_reference(model, model_cfg: GPTConfig, cfg: TrainConfig) -> dict:
    """What a LoRA checkpoint keeps besides its adapters, to rebuild base + adapters later."""
    return {"rank": cfg.lora_rank, "alpha": cfg.lora_alpha, "targets": list(lora.TARGETS), "base": cfg.init_from,
            "rows_from": lora.trained_rows_from(model),
            "base_fingerprint": lora.fingerprint(lora.base_weights(model)),
            "model_config": dataclasses.asdict(model_cfg)}


def _settings(overrides: dict, preset: str, state: dict | None, init_state: dict | None, kind: str,
              device: str = "cpu", preset_given: bool = False):
    """Defaults, then preset, then the resumed checkpoint's settings, then the command line.
    Starting from trained weights (--init_from) takes the model's shape from that checkpoint.
    A checkpoint trained with another device's preset gets this device's settings for what
    depends on the device (compile, precision, evaluation batches, the batch's split): devices.py."""
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
    here = default_preset(device)
    if source is not None and devices.should_adapt(source.get("preset"), here, preset_given):
        settings, changes = devices.adapt_to_device(
            dataclasses.asdict(cfg), dataclasses.asdict(apply(TrainConfig(), preset_values(here))), set(overrides), device)
        cfg = TrainConfig(**settings)
        for line in changes:
            print(f"on {device}: {line}")
    if init_state is not None:  # fine-tuning keeps the tokenizer the weights were trained with
        kind = "gpt2" if "pretrained" in init_state else tokenizer.from_checkpoint(init_state).kind
        cfg = dataclasses.replace(cfg, tokenizer=kind)
    return apply(model_cfg, overrides), apply(cfg, overrides)


def switch_attention(state: dict, model_cfg: GPTConfig, build_model, convert_weights) -> dict:
    """A checkpoint of one attention class made ready for the other (--attention=fast on a
    checkpoint trained with heads, or back): weights and Adam's moments are converted, so resuming
    continues the same run. A checkpoint already in model_cfg's class is returned as it is."""
    saved = state["model_config"].get("attention", "fast")
    if convert_weights is None or saved == model_cfg.attention:
        return state
    state = dict(state)
    convert = lambda tensors: convert_weights(tensors, model_cfg, model_cfg.attention)
    state["model"] = convert(state["model"])
    if state.get("train_config", {}).get("optimizer") == "muon":  # Muon orthogonalizes each matrix
        state.pop("optimizer", None)  # as it is; the other layout's matrices are other matrices
    if "optimizer" in state:
        with torch.device("meta"):  # shapes and names only: no memory, no initialisation cost
            old_groups = decay_groups(build_model(dataclasses.replace(model_cfg, attention=saved)).named_parameters())
            new_groups = decay_groups(build_model(model_cfg).named_parameters())
        state["optimizer"] = convert_optimizer_state(state["optimizer"], old_groups, new_groups, convert)
    state["model_config"] = {**state["model_config"], "attention": model_cfg.attention}
    print(f"note: converted the checkpoint's attention from {saved!r} to {model_cfg.attention!r} (the same function)")
    return state



def load_dataset(cfg: TrainConfig, state: dict | None, init_state: dict | None,
                 vocab_size: int | None = None) -> TextDataset:
    """Plain text, or chat pairs from a .jsonl file. A resumed run keeps its vocabulary; a run
    started from trained weights extends that model's vocabulary with the new characters.
    `vocab_size` (--vocab_size) is the size to train BPE to; characters and GPT-2 take theirs from the data."""
    if init_state is not None and "pretrained" in init_state and not state:
        return pretrained_dataset(cfg, init_state)
    source = state or init_state
    saved_kind = tokenizer.from_checkpoint(source).kind if source else cfg.tokenizer
    if saved_kind != cfg.tokenizer:
        raise UserError(f"the checkpoint's tokenizer is {saved_kind!r}; --tokenizer={cfg.tokenizer} cannot change "
                        "what its token ids mean. Drop the option, or train a new model.")
    if vocab_size is not None and not source and cfg.tokenizer != "bpe":
        given = "the text's own characters" if cfg.tokenizer == "char" else "GPT-2's 50,257 tokens"
        raise UserError(f"--vocab_size={vocab_size} is for --tokenizer=bpe; with --tokenizer={cfg.tokenizer} the "
                        f"vocabulary is {given}. Drop --vocab_size or use --tokenizer=bpe.")
    if cfg.tokenizer != "char":
        return subword_dataset(cfg, source, vocab_size)
    if _use_memmap(cfg):
        return _memmap_dataset(cfg, state, init_state)
    pairs = read_pairs(cfg.data) if is_pairs_file(cfg.data) else None
    text = None if pairs else read_text(cfg.data)
    if state:
        vocab = tokenizer.from_checkpoint(state)
        unknown = sorted((set(text) if text else pairs_vocab(pairs).index.keys()) - vocab.index.keys())
        if unknown:
            shown = ", ".join(repr(ch) for ch in unknown[:10])
            raise UserError(f"{cfg.data} has character(s) {shown} that the resumed model's vocabulary lacks; "
                            "start a new run from its weights with --init_from instead of --resume.")
    else:
        base = tokenizer.from_checkpoint(init_state) if init_state else None
        if pairs:
            vocab = pairs_vocab(pairs, base)
        else:
            vocab = CharVocab.from_text(text) if base is None else \
                CharVocab(base.chars + sorted(set(text) - set(base.chars)))
    return pairs_dataset(pairs, vocab, cfg.seed) if pairs else TextDataset.from_text(text, vocab)


def pretrained_dataset(cfg: TrainConfig, init_state: dict) -> TextDataset:
    """Text for a model started from GPT-2's weights, in GPT-2's tokens (the tokenizer files of its
    directory), which the checkpoint then keeps as its tokenizer."""
    source = init_state["pretrained"]["source"]
    if cfg.tokenizer != "gpt2":
        raise UserError(f"{source} reads GPT-2's tokens; drop --tokenizer={cfg.tokenizer}.")
    tokens = pretrained.hub_tokenizer(init_state)
    if tokens is None:
        raise UserError(f"{source} has no tokenizer files (vocab.json + merges.txt, encoder.json + vocab.bpe, or "
                        "tokenizer.json): copy GPT-2's into that directory.")
    if is_pairs_file(cfg.data):
        return PairBatches(read_pairs(cfg.data), tokenizer.with_chat_markers(tokens), cfg.seed)
    return TextDataset.from_text(_text_for_subwords(cfg), tokens)


def subword_dataset(cfg: TrainConfig, source: dict | None, vocab_size: int | None):
    """Text in byte-level BPE tokens: the checkpoint's tokenizer when there is one, GPT-2's from its
    files, or one trained here on the training split (the val text stays unseen). Chat pairs come
    as whole pairs (PairBatches), the markers as special ids."""
    pairs = read_pairs(cfg.data) if is_pairs_file(cfg.data) else None
    if pairs is None:
        text = _text_for_subwords(cfg)
        training_text = text[:int(TRAIN_FRACTION * len(text))]
    else:  # BPE learns from the training pairs' words only; the markers are its specials
        training_text = "\n".join(side for pair in held_out_split(pairs, cfg.seed)["train"] for side in pair)
    if source:
        tokens = tokenizer.from_checkpoint(source)
    elif cfg.tokenizer == "gpt2":
        if not Path(cfg.tokenizer_dir).is_dir():
            raise UserError(f"--tokenizer=gpt2 needs GPT-2's tokenizer files in {cfg.tokenizer_dir!r} (encoder.json + "
                            "vocab.bpe, vocab.json + merges.txt, or tokenizer.json): put them there or pass --tokenizer_dir=DIR.")
        tokens = tokenizer.GPT2Tokenizer.from_directory(cfg.tokenizer_dir)
    else:
        started = time.time()
        tokens = tokenizer.ByteBPE.train(training_text, vocab_size or DEFAULT_BPE_VOCAB)
        print(f"tokenizer: byte-level BPE of {len(tokens)} tokens trained on the training split in {time.time() - started:.1f}s")
    if pairs is not None:
        return PairBatches(pairs, tokenizer.with_chat_markers(tokens), cfg.seed)
    return TextDataset.from_text(text, tokens)


def _text_for_subwords(cfg: TrainConfig) -> str:
    """The text, where byte-level tokens can read it for now: plain text held in memory (chat
    pairs go to PairBatches)."""
    if cfg.memmap or (Path(cfg.data).is_file() and Path(cfg.data).stat().st_size > MEMMAP_ABOVE_BYTES):
        raise UserError(f"byte-level tokens (BPE, GPT-2's) read the text into memory for now; memory-mapped corpora "
                        f"(--memmap, or files above {MEMMAP_ABOVE_BYTES >> 20} MB) are characters only.")
    return read_text(cfg.data)


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
    base = tokenizer.from_checkpoint(state or init_state) if (state or init_state) else None
    dataset = prepared_dataset(cfg.data, cfg.min_char_count, base)
    if state and dataset.vocab.chars != base.chars:
        raise UserError(f"{cfg.data} (prepared) has a vocabulary of {len(dataset.vocab)} characters that differs from "
                        f"the resumed model's {len(base)}; start a new run from its weights with --init_from.")
    meta = dataset.prepared
    if meta["replaced_chars"]:
        print(f"data: {meta['rare_chars']} character(s) rarer than --min_char_count={cfg.min_char_count} "
              f"({meta['replaced_chars']:,} occurrences) are read as {meta['unknown_char']!r}")
    return dataset


MARKER_ROW_SEED = 1234  # the markers' rows are a fixed function of the base (see extend_vocab_rows)


def extend_vocab_rows(weights: dict, vocab_size: int) -> dict:
    """Weights with the vocabulary-sized tensors (token embedding, output layer, tied or not)
    grown to vocab_size rows for special ids appended at the end (the chat markers).

    A new row is the mean of the trained rows plus a small fixed offset: the mean keeps the new
    token's output logit ordinary at the start (a fresh random row would be far from where the
    trained ones live), the offset keeps the three markers apart as inputs. The starting rows are
    a fixed function of the base, so a LoRA checkpoint rebuilds them from its base (fingerprint
    included) and keeps only what its lora_rows learned (lora.TrainedRows)."""
    grown = {}
    for name, tensor in weights.items():
        is_vocab = name.endswith(("token_embedding.weight", "lm_head.weight", "lm_head.bias"))
        if not is_vocab or tensor.shape[0] >= vocab_size:
            grown[name] = tensor
            continue
        extra = vocab_size - tensor.shape[0]
        mean = tensor.float().mean(dim=0, keepdim=True)
        scale = tensor.float().std().item() * 0.1
        generator = torch.Generator().manual_seed(MARKER_ROW_SEED)  # per tensor: tied copies stay equal
        offset = torch.randn((extra, *tensor.shape[1:]), generator=generator) * scale
        grown[name] = torch.cat([tensor, (mean + offset).to(tensor.dtype)])
    return grown


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


def decay_groups(named_parameters) -> tuple[list[str], list[str]]:
    """Parameter names in the optimizer's two groups: those that get weight decay (matrices and
    embeddings) and those that do not (biases, LayerNorm gains)."""
    named = [(n, p) for n, p in named_parameters if p.requires_grad]
    return [n for n, p in named if p.dim() >= 2], [n for n, p in named if p.dim() < 2]


def configure_optimizer(model, cfg: TrainConfig, device: str):
    """AdamW; weight decay on matrices and embeddings only, never on biases or LayerNorm gains.
    With --optimizer=muon the blocks' matrices move to a third group that Muon steps (muon.py)."""
    params = dict(model.named_parameters())
    decayed, not_decayed = decay_groups(params.items())
    if cfg.optimizer == "muon":
        matrices = [n for n in decayed if muon.is_hidden_matrix(n, params[n])]
        decayed = [n for n in decayed if n not in matrices]
    groups = [
        {"params": [params[n] for n in decayed], "weight_decay": cfg.weight_decay},
        {"params": [params[n] for n in not_decayed], "weight_decay": 0.0},
    ]
    if cfg.optimizer == "muon":  # last, so that group 0's rate stays the one the curve reports
        groups.append({"params": [params[n] for n in matrices], "weight_decay": cfg.muon_weight_decay, "muon": True,
                       "lr_scale": cfg.muon_lr / cfg.learning_rate})
        return muon.Muon(groups, lr=cfg.learning_rate, momentum=cfg.muon_momentum, betas=(cfg.beta1, cfg.beta2),
                         newton_schulz_dtype=muon.newton_schulz_dtype(device))
    fused = True if device.startswith("cuda") else None  # one kernel for all parameters on cuda
    return torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=(cfg.beta1, cfg.beta2), fused=fused)


def convert_optimizer_state(saved: dict, old_groups, new_groups, convert) -> dict:
    """AdamW's state_dict for one parameter layout re-keyed for another (groups as decay_groups
    gives them). Its per-parameter moments have the parameters' shapes, so `convert`, which maps
    weights by name, maps them too."""
    old_names, new_names = [*old_groups[0], *old_groups[1]], [*new_groups[0], *new_groups[1]]
    by_name = {name: saved["state"][i] for i, name in enumerate(old_names) if i in saved["state"]}
    if not by_name:  # a fresh optimizer that never stepped
        return {"state": {}, "param_groups": _regrouped(saved, new_groups)}
    moments = {key: convert({n: s[key] for n, s in by_name.items()}) for key in ("exp_avg", "exp_avg_sq")}
    step = next(iter(by_name.values()))["step"]  # every parameter has taken the same steps
    state = {i: {"step": step.clone(), "exp_avg": moments["exp_avg"][n], "exp_avg_sq": moments["exp_avg_sq"][n]}
             for i, n in enumerate(new_names) if n in moments["exp_avg"]}
    return {"state": state, "param_groups": _regrouped(saved, new_groups)}


def _regrouped(saved: dict, new_groups) -> list[dict]:
    """The saved groups' settings (lr, betas, weight decay...) over the new layout's indices."""
    first = len(new_groups[0])
    return [dict(saved["param_groups"][0], params=list(range(first))),
            dict(saved["param_groups"][1], params=list(range(first, first + len(new_groups[1]))))]


def learning_rate_at(it: int, cfg: TrainConfig, time_fraction: float | None = None) -> float:
    """Linear warm-up to learning_rate, then cosine decay to min_lr at lr_decay_iters (or max_iters);
    with --schedule=wsd, the peak held until the last decay_fraction of the run, then a straight line
    down to min_lr. A run with a time budget (--max_minutes) counts the fraction of its time used."""
    if it < cfg.warmup_iters:
        return cfg.learning_rate * (it + 1) / (cfg.warmup_iters + 1)
    if time_fraction is not None:
        progress = time_fraction
    else:
        decay_iters = cfg.lr_decay_iters or cfg.max_iters
        progress = (it - cfg.warmup_iters) / max(1, decay_iters - cfg.warmup_iters)
    if progress >= 1:
        return cfg.min_lr
    if cfg.schedule == "wsd":
        remaining = 1.0 - progress
        return cfg.min_lr + min(1.0, remaining / cfg.decay_fraction) * (cfg.learning_rate - cfg.min_lr)
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (cfg.learning_rate - cfg.min_lr)


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


def _agree_on(path: str, processes: Processes) -> str:
    """Rank 0's checkpoint path for every process (a timestamped default could differ by a second)."""
    if not processes.distributed:
        return path
    shared = [path]
    dist.broadcast_object_list(shared, src=0)
    return shared[0]


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
    def start(cls, model, model_cfg, cfg, dataset, device, kind, preset, changed, state, processes,
              facts: devices.DeviceFacts, precision: devices.DtypeChoice) -> Run:
        """Move the model to its device and build what trains it; with a checkpoint, put the
        optimizer, the iteration, the random streams and the loss curve back where they were."""
        devices.set_tf32(devices.use_tf32(precision.dtype, facts))  # --dtype=float32 stays float32
        if device == "cpu":
            keep_freed_memory_in_process()
        model.to(device)
        optimizer = configure_optimizer(model, cfg, device)
        batches = seeded_generator(cfg.seed)
        out = _agree_on(cfg.out or default_checkpoint_path(preset if kind == "gpt" else kind), processes)
        use_compile, compile_note = devices.compile_decision(cfg.compile, facts)
        if compile_note and processes.is_main:
            print(compile_note)  # once, e.g. a GPU too old for Triton: training without torch.compile
        step_model = torch.compile(model) if use_compile else model  # checkpoints save `model`, never this
        # evaluation on the compiled module where that pays (cuda): one extra compile for eval mode
        eval_model = step_model if use_compile and devices.compile_evaluation(True, facts) else model
        if processes.distributed:  # gradients are averaged across processes during backward
            step_model = DistributedDataParallel(step_model, device_ids=[processes.local_rank] if device.startswith("cuda") else None)
        r = cls(model, step_model, eval_model, model_cfg, cfg, dataset, device, precision,
                devices.autocast_context(precision), optimizer, devices.grad_scaler(precision), batches,
                processes, kind, preset, changed, out, compiled=use_compile)
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
        lr = learning_rate_at(self.iter_num, self.cfg, self.time_fraction(elapsed))
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
        self.losses = estimate_loss(self.eval_model, self.dataset, self.cfg, self.model_cfg.block_size, self.device,
                                    self.autocast, self.processes)
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
        if self.processes.is_main:  # one writer; the others hold the same weights
            t0 = time.time()
            save_checkpoint(self.checkpoint_state(best_val), path or self.out)
            self.last_save_seconds = time.time() - t0

    def checkpoint_state(self, best_val: float | None = None) -> dict:
        rng = {"torch": torch.get_rng_state(), "batches": self.batches.get_state()}
        if self.device.startswith("cuda"):
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        extra = {}
        weights = self.model.state_dict()  # the plain module's weights, never a compiled wrapper's
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
            "optimizer": self.optimizer.state_dict(),
            "iter_num": self.iter_num,
            "best_val_loss": self.best_val if best_val is None else best_val,
            "rng": rng,
            "curve": self.curve,
        }

    def result(self, interrupted: str) -> TrainResult:
        return TrainResult(self.iter_num, self.losses["train"], self.losses["val"], self.best_val,
                           _num_params(self.model), self.tokens_per_s, time.time() - self.started, self.out,
                           self.history, interrupted, self.first_step_seconds, self.val_bpb)


# ==============================================================================================
# The loop


def run(model, model_cfg: GPTConfig, cfg: TrainConfig, dataset: TextDataset, device: str, kind: str,
        preset: str, changed: dict, state: dict | None = None, processes: Processes | None = None,
        facts: devices.DeviceFacts | None = None, precision: devices.DtypeChoice | None = None) -> TrainResult:
    processes = processes or Processes()
    facts = facts or devices.probe(device)
    precision = precision or devices.choose_dtype(cfg.dtype, facts)
    r = Run.start(model, model_cfg, cfg, dataset, device, kind, preset, changed, state, processes, facts, precision)
    if processes.is_main:
        print_startup(r)
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
    result = r.result(stop.requested)
    if processes.is_main:
        report(r, result)
    processes.wait_for_all()  # no process leaves before the checkpoint is written
    return result


# ==============================================================================================
# What a run leaves behind: checkpoint, loss curve, sample, notes, the final line


def report(r: Run, result: TrainResult) -> None:
    """Rank 0's account of a finished run: where it was saved, the picture, a sample, notes.txt,
    the final line."""
    wall = result.seconds
    print(f"saved {r.out}{' (interrupted)' if result.interrupted else ''}; evaluation took {r.eval_seconds:.1f}s, "
          f"{100 * r.eval_seconds / max(wall, 1e-9):.0f}% of the run")
    if r.cfg.save_interval and Path(best_path(r.out)).exists():
        print(f"best val loss {result.best_val_loss:.4f}: kept apart in {best_path(r.out)}")
    if r.budget_seconds:
        print(f"time budget {r.cfg.max_minutes:g} min: {r.iter_num - r.start_iter} steps in this run, "
              f"{r.elapsed():.0f} s of {r.budget_seconds:.0f} s used so far")
    if r.compiled and r.iter_num > r.start_iter:
        print(f"compiling (the first step) took {r.first_step_seconds:.1f}s; tokens/s below leaves it out")
    draw_curve(r)
    write_sample(r.model, r.dataset, r.cfg, r.device, r.out)
    append_notes(r, result)
    if r.dataset.pairs:
        print(f"val loss of replies only (held-out pairs): {result.val_loss:.4f}")
    print(f"final: iters={result.iters} train_loss={result.train_loss:.4f} val_loss={result.val_loss:.4f} "
          f"best_val_loss={result.best_val_loss:.4f} val_bpb={result.val_bpb:.4f} params={result.params} "
          f"tokens_per_s={result.tokens_per_s:.0f} seconds={result.seconds:.1f} checkpoint={result.checkpoint}")


def draw_curve(r: Run) -> None:
    csv_path, png_path = loss_curves.curve_paths(r.out)
    title = f"{Path(r.out).stem}: {r.preset} preset, {_num_params(r.model):,} parameters"
    if loss_curves.plot_run(r.curve, png_path, title):
        print(f"loss curve: {png_path} (numbers in {csv_path})")
    else:
        print(f"loss curve: {csv_path}; {loss_curves.missing_matplotlib_hint(r.out)}")


def write_sample(model, dataset, cfg, device, checkpoint_path) -> None:
    if cfg.sample_chars == 0:
        return
    generator = seeded_generator(cfg.seed)
    model.eval()
    if dataset.pairs:  # a chat model answers a held-out message, stopping at the end marker
        their = (dataset.pairs["val"] or dataset.pairs["train"])[0][0]
        start = torch.tensor([dataset.vocab.encode_with_specials(INPUT_MARK + their + OUTPUT_MARK)], device=device)
        ids = model.generate(start, cfg.sample_chars, temperature=0.8, generator=generator,
                             stop_token=dataset.vocab.specials[END_MARK])
        reply = dataset.vocab.decode(ids[0, start.shape[1]:].tolist()).split(END_MARK)[0]
        text = f"> {their}\n< {reply}"
    else:
        start = torch.tensor([dataset.vocab.encode("\n") if dataset.vocab.can_encode("\n") else [0]], device=device)
        ids = model.generate(start, cfg.sample_chars, temperature=0.8, top_k=None, generator=generator)
        text = dataset.vocab.decode(ids[0, 1:].tolist())
    model.train()
    print(f"--- sample ({cfg.sample_chars} tokens at most) ---\n{text}\n---")
    if cfg.samples_dir:
        path = Path(cfg.samples_dir) / (Path(checkpoint_path).stem + ".txt")
        write_text_atomically(path, text)
        print(f"sample written to {path}")


def append_notes(r: Run, result: TrainResult) -> None:
    if not r.cfg.notes:
        return
    settings = " ".join(f"{k}={v}" for k, v in r.changed.items()) or "(preset defaults)"
    compiled = f" (+{r.first_step_seconds:.1f}s compiling)" if r.compiled else ""
    line = (f"{datetime.now():%Y-%m-%d %H:%M} | {result.checkpoint} | params={result.params} | "
            f"preset={r.preset} {settings} | iters={result.iters} train_loss={result.train_loss:.4f} "
            f"val_loss={result.val_loss:.4f} best_val_loss={result.best_val_loss:.4f} val_bpb={result.val_bpb:.4f} | "
            f"{result.seconds:.1f}s | {r.device} {r.dtype} | {result.tokens_per_s:.0f} tokens/s{compiled}\n")
    with open(r.cfg.notes, "a", encoding="utf-8") as notes:
        notes.write(line)


def bits_per_byte(loss: float, dataset: TextDataset, split: str) -> float:
    """A loss in nats per token as bits per byte of text: the number that compares a character
    model with a BPE one (for characters on ASCII text it is loss / ln 2)."""
    return loss / (math.log(2) * dataset.bytes_per_token(split))


def tokenizer_entries(vocab) -> dict:
    """The checkpoint's tokenizer: its state, and for characters also the "vocab" list that older
    code reads."""
    entries = {"tokenizer": vocab.state()}
    if vocab.kind == "char":
        entries["vocab"] = list(vocab.chars)
    return entries


def _num_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def optimizer_summary(r: Run) -> str:
    if not isinstance(r.optimizer, muon.Muon):
        return "AdamW"
    matrices = sum(len(g["params"]) for g in r.optimizer.param_groups if g["muon"])
    dtype = str(r.optimizer.newton_schulz_dtype).removeprefix("torch.")
    decay = f", weight decay {r.cfg.muon_weight_decay:g}" if r.cfg.muon_weight_decay else ""
    return (f"Muon (lr {r.cfg.muon_lr:g}{decay}) for the blocks' {matrices} matrices, Newton-Schulz in {dtype}; "
            "AdamW for the rest")


def print_startup(r: Run) -> None:
    m, cfg, processes, dataset = r.model_cfg, r.cfg, r.processes, r.dataset
    attention = {"heads": "per-Head (lecture)", "fast": "fused"}.get(getattr(m, "attention", ""), "")
    shape = (f"{m.n_layer} layers, {m.n_head} heads, {m.n_embd} wide, context {m.block_size}, "
             f"{attention} attention, {m.position} positions, {m.activation}, dropout {m.dropout}"
             + (", QK-norm" if getattr(m, "qk_norm", False) else ""))
    print(f"device: {r.device}, dtype: {r.dtype} ({r.precision.reason}), preset: {r.preset}")
    if processes.distributed:
        print(f"processes: {processes.world_size} (torchrun, {processes.backend}); this is rank 0 of them")
    print(f"model: {type(r.model).__name__} with {_num_params(r.model):,} parameters"
          + (f" ({shape})" if r.kind == "gpt" else ""))
    if cfg.lora_rank:
        trainable = sum(p.numel() for p in r.model.parameters() if p.requires_grad)
        print(f"LoRA: rank {cfg.lora_rank}, alpha {cfg.lora_alpha:g} on {', '.join(lora.TARGETS)}: {trainable:,} "
              f"trainable parameters, the other {_num_params(r.model) - trainable:,} frozen; base: {cfg.init_from}")
    per_process = f" x {processes.world_size} processes" if processes.distributed else ""
    print(f"tokens per iteration: {r.tokens_per_iter:,} (batch {cfg.batch_size} x context {m.block_size}"
          f" x {cfg.gradient_accumulation_steps} accumulation steps{per_process})")
    n_train, n_val = len(dataset.splits["train"]), len(dataset.splits["val"])
    print(f"data: {cfg.data}: {dataset.vocab.kind} tokenizer, vocabulary {len(dataset.vocab)}, "
          f"{n_train:,} train / {n_val:,} val tokens")
    if dataset.prepared:
        print(f"data: memory-mapped from {cfg.data}.bin ({dataset.prepared['dtype']}); the text is never read into memory")
    if dataset.pairs:
        print(f"chat pairs: {len(dataset.pairs['train']):,} train / {len(dataset.pairs['val']):,} held-out val; "
              + ("losses count reply characters only (their side is masked)" if dataset.vocab.kind == "char" else
                 "each row is one whole pair, padded; losses count the reply's tokens and the END only"))
    print(f"optimizer: {optimizer_summary(r)}; learning rate {cfg.learning_rate:g} -> {cfg.min_lr:g}, "
          + ("warm-up, cosine decay" if cfg.schedule == "cosine" else
             f"warm-up, stable, linear decay over the last {cfg.decay_fraction:.0%}"))
    if cfg.init_from:
        print(f"starting from the weights of {cfg.init_from}")
    resumed = f", resuming at iteration {r.iter_num}" if r.iter_num else ""
    goal = (f"for {cfg.max_minutes:g} minutes of wall-clock time (max_iters is not used)" if cfg.max_minutes
            else f"to iteration {cfg.max_iters}")
    print(f"training {goal}{resumed}; checkpoint: {r.out}")
