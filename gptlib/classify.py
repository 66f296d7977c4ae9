"""Fine-tuning a GPT to label texts, the learner's third stage: a classification head on our GPT.

    python gpt_final_version.py --task=classify --data=labels.csv                      # a fresh model
    python gpt_final_version.py --task=classify --data=labels.csv --init_from=models/shakespeare_char.pt
    python gpt_final_version.py --task=classify --data=labels.csv --init_from=gpt2 --trainable=last
    python gpt_final_version.py --task=classify --data=labels.csv --init_from=DIR --lora_rank=8
    python gpt_final_version.py --task=classify --data=labels.csv --resume=models/classifier-DATE.pt --max_iters=600
    python model_handler.py models/classifier-DATE.pt --classify="see you at the wall at 7?"

The model is class Classifier below: the GPT's last hidden states, pooled, then one linear layer.
Training is gptlib/train.py's loop (progress bar, --max_minutes, checkpoints, exact resume, the loss
curve) run with ClassifyRun, which evaluates accuracy instead of bits per byte and ends with the
held-out test split's accuracy, per-class precision/recall/F1 and confusion matrix
(gptlib/classify_report.py). The data is gptlib/classify_data.py's.

Sections: the head · building one · the run · using one.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from config import ClassifyConfig, GPTConfig, TrainConfig
from gptlib import devices, lora, loss_curves
from gptlib.build import add_lora, build_for_run, count_parameters
from gptlib.checkpoint import load_checkpoint, load_weights
from gptlib.classify_data import PADDING, encode_for_classifier, load_labelled, pad_rows
from gptlib.classify_report import metrics, metrics_paths, predict_split, summary, table, write_metrics
from gptlib.cli import apply, help_text, parse_args
from gptlib.errors import UserError
from gptlib.processes import Processes
from gptlib.run_report import append_note_line, draw_curve, optimizer_summary
from gptlib.start import read_start, requested_device, settle
from gptlib.train import Job, Run, TrainResult, run

USAGE = "usage: python gpt_final_version.py --task=classify --data=labels.csv [--init_from=CHECKPOINT] [--name=value ...]"
SECTIONS = [GPTConfig, TrainConfig, ClassifyConfig]

# ==============================================================================================
# The head


class Classifier(nn.Module):
    """A GPT that labels a text: its final hidden states, pooled into one vector per text, and a
    linear layer from that vector to one score per class.

    Pooling (--pooling): "mean", the default, averages the real positions' hidden states; "last" reads
    the last real token's, the only position of a causal model that has attended to every token
    (LLMs-from-scratch's choice). On our character models the mean measured as good or better (three
    seeds, docs/classify.md): the last position is one character, often a "." or "?", and a small
    model's state there carries less of the text than the average over all of its characters.

    Rows are padded on the right with -1. A real token never attends to a later position, so the
    padding changes nothing they compute: pooling has only to skip the padded positions."""

    def __init__(self, gpt: nn.Module, n_classes: int, pooling: str = "mean"):
        super().__init__()
        gpt.lm_head = nn.Identity()  # the GPT now returns its final hidden states (B, T, C), not logits
        self.gpt, self.pooling = gpt, pooling
        self.head = nn.Linear(gpt.config.n_embd, n_classes)
        nn.init.normal_(self.head.weight, std=0.02)  # as the GPT's layers: at the start every class scores ~0
        nn.init.zeros_(self.head.bias)

    def forward(self, idx, targets=None):
        """idx (B, T) token ids, -1 at padding -> class scores (B, K), and cross-entropy against targets (B,)."""
        real = idx != PADDING  # (B, T)
        hidden, _ = self.gpt(idx.clamp(min=0))  # (B, T, C); padded positions read token 0, then are skipped
        if self.pooling == "mean":
            weights = real.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1): 1 at real tokens, 0 at padding
            pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1)  # (B, C)
        else:  # "last"
            last = real.sum(dim=1) - 1  # (B,) the last real position of each row
            pooled = hidden[torch.arange(idx.shape[0], device=idx.device), last]  # (B, C)
        logits = self.head(pooled)  # (B, K)
        loss = None if targets is None else F.cross_entropy(logits.float(), targets)
        return logits, loss


def choose_trainable(model: Classifier, options: ClassifyConfig, lora_rank: int) -> str:
    """Freeze what --trainable (or LoRA) leaves out; the head always learns. Returns what trains, to say."""
    if lora_rank:  # the adapters were added, and the rest of the GPT frozen, by gptlib.build
        model.head.requires_grad_(True)
        return f"the head and LoRA adapters of rank {lora_rank}"
    model.requires_grad_(options.trainable == "all")
    if options.trainable == "last":
        for block in model.gpt.blocks[-options.last_blocks:]:
            block.requires_grad_(True)
        model.gpt.ln_f.requires_grad_(True)
    model.head.requires_grad_(True)
    return {"head": "the head alone (the GPT frozen)", "all": "every weight",
            "last": f"the head, the last {options.last_blocks} block(s) and the final norm"}[options.trainable]


# ==============================================================================================
# Building one: fresh, from trained weights (ours, GPT-2's, a hub Llama's), or a resumed classifier


def classifier_from_state(state: dict, path: str) -> Classifier:
    """The classifier a checkpoint of --task=classify holds (its GPT, adapters if any, and head)."""
    from gpt_final_version import GPT  # the library builds the model the scripts define

    config = apply(GPTConfig(), state["model_config"])
    gpt = GPT(config)
    saved = state["train_config"]
    if saved.get("lora_rank"):
        add_lora(gpt, config, saved["lora_rank"], saved["lora_alpha"], None, lora.target_layers(saved["lora_targets"]))
    model = Classifier(gpt, len(state["classifier"]["labels"]), state["classifier"]["pooling"])
    load_weights(model, state["model"], path)
    return model


def build_classifier(model_class, model_cfg: GPTConfig, cfg: TrainConfig, options: ClassifyConfig, start,
                     n_classes: int, convert_weights=None) -> tuple[Classifier, dict | None, str]:
    """The classifier a run trains, its resumed state (or None) and what trains in it."""
    state = start.resumed_state
    if state is None:  # gptlib.build's one builder: weights, vocabulary rows, LoRA
        gpt, _ = build_for_run(model_class, model_cfg, cfg, start, convert_weights)
        model = Classifier(gpt, n_classes, options.pooling)
    else:
        model = classifier_from_state(state, start.path)
    return model, state, choose_trainable(model, options, cfg.lora_rank)


def asked_for(argv: list[str]) -> bool:
    """Whether a command line trains a classifier (gpt_final_version.py's main dispatches on it)."""
    return "--task=classify" in argv


def train_from_command_line(argv, model_class, convert_weights=None) -> TrainResult | None:
    """gptlib/train.py's stages, with the classifier's data, model and run."""
    args = parse_args(argv, SECTIONS)
    if args.help:
        print(help_text(SECTIONS, USAGE))
        return None
    start = read_start(args.overrides)
    resumed = start.resumed_state
    if resumed is not None and resumed.get("model_kind") != "classifier":
        raise UserError(f"{start.path} is a language model's checkpoint: start a classifier from it with --init_from={start.path}.")
    if start.mode == "checkpoint" and start.state.get("model_kind") == "classifier":
        raise UserError(f"{start.path} is a classifier: continue it with --resume={start.path}, or start a new one "
                        "from a language model's checkpoint.")
    saved = {k: v for k, v in (resumed or {}).get("classifier", {}).items() if k != "labels"}
    if resumed is not None:
        _check_kept(args.overrides, {**saved, **resumed["train_config"]}, start.path)
    options = apply(apply(ClassifyConfig(), saved), args.overrides)
    if args.preset is None and resumed is None:
        args = dataclasses.replace(args, preset="classify")
    device = devices.choose_device(requested_device(args.overrides, start))
    settings = settle(args, start, "classifier" if resumed else "gpt", Processes(), device)
    settings = dataclasses.replace(settings, kind="classifier")
    cfg, model_cfg = settings.cfg, settings.model_cfg
    options.validate(model_cfg.n_layer)
    _refuse_what_does_not_apply(cfg, start)
    source = resumed or start.initial_weights
    if source is not None and "pretrained" in source:  # GPT-2's or a hub model's tokens, from its directory
        from gptlib.pretrained import hub_tokenizer
        source = {"tokenizer": _tokenizer_state(hub_tokenizer(source), start.path)}
    extend = options.trainable == "all" and not cfg.lora_rank  # new characters get rows only where they learn
    dataset = load_labelled(cfg.data, options, cfg, source, model_cfg.block_size,
                            (resumed or {}).get("classifier", {}).get("labels"), args.overrides.get("vocab_size"), extend)
    if dataset.vocab.kind in ("char", "bpe"):  # our own tokenizers: the vocabulary is the data's (grown rows load)
        model_cfg = dataclasses.replace(model_cfg, vocab_size=len(dataset.vocab))
    settings = dataclasses.replace(settings, model_cfg=model_cfg)
    model, state, trains = build_classifier(model_class, model_cfg, cfg, options, start, len(dataset.labels),
                                            convert_weights)
    dataset.trains = trains
    return run(Job(settings, model, dataset, state, run_class=ClassifyRun))


# A resumed classifier keeps what decides its parameters and its data's split.
KEPT_ON_RESUME = ("pooling", "trainable", "last_blocks", "columns", "val_fraction", "test_fraction", "lora_rank",
                  "lora_alpha", "lora_targets")


def _check_kept(overrides: dict, saved: dict, path: str) -> None:
    for name in KEPT_ON_RESUME:
        if name in overrides and name in saved and overrides[name] != saved[name]:
            raise UserError(f"{path} was trained with --{name}={saved[name]}; a resumed run keeps it. Drop --{name}, "
                            "or train a new classifier.")


def _refuse_what_does_not_apply(cfg: TrainConfig, start) -> None:
    if cfg.data == TrainConfig.data:
        raise UserError("--task=classify needs labelled texts: --data=labels.csv (or .jsonl) with a text and a label per row.")
    if cfg.optimizer == "muon":
        raise UserError("--task=classify trains with AdamW (Muon steps only a bare GPT's block matrices): add --optimizer=adamw.")
    if cfg.fsdp:
        raise UserError("--task=classify runs in one process: drop --fsdp.")
    written = [loss_curves.curve_paths(cfg.out)[0], *metrics_paths(cfg.out)] if cfg.out else []
    if any(Path(path).resolve() == Path(cfg.data).resolve() for path in written):
        raise UserError(f"--out={cfg.out} would write its loss curve or test metrics over --data={cfg.data}: "
                        "name the checkpoint differently.")


def _tokenizer_state(tokens, source: str) -> dict:
    if tokens is None:
        raise UserError(f"{source} has no tokenizer files (vocab.json + merges.txt, or tokenizer.json): "
                        "a classifier reads text, so it needs them; copy them into that directory.")
    return tokens.state()


# ==============================================================================================
# The run: gptlib.train's loop, evaluated and reported as a classifier


@dataclass
class ClassifyRun(Run):
    """Run with a classifier's evaluation (loss and accuracy over the whole val split, in order),
    start-up lines, checkpoint (the whole classifier and its labels) and report (the test split)."""

    val_accuracy: float = float("nan")

    def evaluate(self, write=print) -> None:
        t0 = time.time()
        autocast = None if self.device.startswith("cpu") else self.autocast  # as Run.evaluate
        size, limit = self.cfg.batch_size, self.cfg.eval_iters * self.cfg.batch_size
        train_loss, _, _ = predict_split(self.eval_model, self.dataset, "train", size, self.device, autocast, limit)
        val_loss, truth, predicted = predict_split(self.eval_model, self.dataset, "val", size, self.device, autocast)
        self.val_accuracy = sum(t == p for t, p in zip(truth, predicted)) / len(truth)
        self.losses = {"train": train_loss, "val": val_loss}
        seconds = self.last_eval_seconds = time.time() - t0
        self.eval_seconds += seconds
        self.history.append((self.iter_num, train_loss, val_loss))
        write(f"step {self.iter_num}: train loss {train_loss:.4f}, val loss {val_loss:.4f}, "
              f"val accuracy {self.val_accuracy:.3f} (eval {seconds:.1f}s, {t0 - self.started:.0f}s into the run)")

    @property
    def val_bpb(self) -> float:
        return float("nan")  # bits per byte measure next-token prediction; a classifier has accuracy

    def checkpoint_state(self, best_val: float | None = None, gathered=None) -> dict:
        state = super().checkpoint_state(best_val, gathered)
        state.pop("lora", None)  # the whole classifier is kept, adapters included: it loads on its own
        options = dataclasses.asdict(self.dataset.options)
        return {**state, "model_kind": "classifier", "model": self.model.state_dict(),
                "classifier": {"labels": self.dataset.labels, **options}}

    def print_startup(self) -> None:
        m, cfg, data = self.model_cfg, self.cfg, self.dataset
        print(f"device: {self.device}, dtype: {self.dtype} ({self.precision.reason}), preset: {self.preset}")
        print(f"model: a GPT of {m.n_layer} layers x {m.n_embd}, context {m.block_size}, {m.position} positions, with a "
              f"head of {len(data.labels)} classes on the {'last real token' if data.options.pooling == 'last' else 'mean of the tokens'}; "
              f"{count_parameters(self.model):,} parameters, {count_parameters(self.model, True):,} training: {data.trains}")
        print(f"data: {cfg.data}: {data.vocab.kind} tokenizer, vocabulary {len(data.vocab)}; split by label, "
              f"seed {cfg.seed}:")
        print(class_counts(data))
        if data.unreadable:
            print(f"note: {data.unreadable} text(s) hold only characters outside the model's vocabulary and are left out "
                  "(--trainable=all learns rows for new characters)")
        if data.truncated:
            print(f"note: {data.truncated} text(s) are longer than the context: the head reads their first {m.block_size} tokens")
        print(f"optimizer: {optimizer_summary(self)}; learning rate {cfg.learning_rate:g} -> {cfg.min_lr:g}")
        if cfg.init_from:
            print(f"starting from the weights of {cfg.init_from}")
        resumed = f", resuming at iteration {self.iter_num}" if self.iter_num else ""
        goal = (f"for {cfg.max_minutes:g} minutes of wall-clock time" if cfg.max_minutes else f"to iteration {cfg.max_iters}")
        print(f"training {goal} ({cfg.batch_size} texts a step){resumed}; checkpoint: {self.out}")

    def report(self, result: TrainResult) -> None:
        print(f"saved {self.out}{' (interrupted)' if result.interrupted else ''}")
        draw_curve(self)
        size = self.cfg.batch_size
        test_loss, truth, predicted = predict_split(self.model, self.dataset, "test", size, self.device)
        result.test_metrics = measured = metrics(self.dataset.labels, truth, predicted)
        print(f"held-out test split ({measured['examples']} texts, never trained or selected on):\n{table(measured)}")
        print(write_metrics(measured, self.out))
        self._append_notes(result, measured)
        print(f"final: task=classify iters={result.iters} train_loss={result.train_loss:.4f} val_loss={result.val_loss:.4f} "
              f"val_accuracy={self.val_accuracy:.4f} test_loss={test_loss:.4f} {summary(measured)} params={result.params} "
              f"trainable={count_parameters(self.model, True)} seconds={result.seconds:.1f} checkpoint={result.checkpoint}")

    def _append_notes(self, result: TrainResult, measured: dict) -> None:
        if not self.cfg.notes:
            return
        settings = " ".join(f"{k}={v}" for k, v in self.changed.items())
        append_note_line(self.cfg.notes, [
            str(result.checkpoint), f"classifier params={result.params}", f"preset={self.preset} {settings}",
            f"iters={result.iters} val_loss={result.val_loss:.4f} test_accuracy={measured['accuracy']:.4f} "
            f"test_macro_f1={measured['macro_f1']:.4f} (commonest label {measured['majority_baseline']:.4f})",
            f"{result.seconds:.1f}s", f"{self.device} {self.dtype}"])


def class_counts(data) -> str:
    """Each label's texts in train, val and test, its share, and the balance."""
    counts = {name: data.counts(name) for name in ("train", "val", "test")}
    total = sum(sum(c.values()) for c in counts.values())
    width = max(5, *(len(label) for label in data.labels))
    lines = [f"  {'label':{width}}  train    val   test  share"]
    shares = {}
    for label in data.labels:
        n = [counts[name][label] for name in ("train", "val", "test")]
        shares[label] = sum(n) / total
        lines.append(f"  {label:{width}}  {n[0]:5d}  {n[1]:5d}  {n[2]:5d}  {shares[label]:5.1%}")
    common, rare = max(shares, key=shares.get), min(shares, key=shares.get)
    lines.append(f"  balance: the commonest label ({common}) is {shares[common]:.1%} of the texts, so always "
                 f"answering it scores that; the rarest ({rare}) {shares[rare]:.1%}")
    return "\n".join(lines)


# ==============================================================================================
# Using one: python model_handler.py CLASSIFIER --classify=TEXT, and the server's POST /classify


class Labeller:
    """A trained classifier that labels texts: each text's probability for every label."""

    def __init__(self, path: str, device: str = "auto"):
        state = load_checkpoint(path)
        if state.get("model_kind") != "classifier":
            raise UserError(f"{path} is not a classifier (it holds a {state.get('model_kind', 'gpt')} model): "
                            "train one with python gpt_final_version.py --task=classify --data=labels.csv.")
        from gptlib import tokenizer

        self.path, self.labels = path, list(state["classifier"]["labels"])
        self.vocab = tokenizer.from_checkpoint(state)
        self.block_size = state["model_config"]["block_size"]
        self.device = devices.choose_device(device)
        self.model = classifier_from_state(state, path).to(self.device).eval()

    @torch.no_grad()
    def probabilities(self, texts: list[str], batch_size: int = 32) -> list[dict[str, float]]:
        """{label: probability} for each text (its first block_size tokens); a text with nothing
        the model can read is a UserError."""
        rows = [encode_for_classifier(self.vocab, text)[:self.block_size] for text in texts]
        found = []
        for start in range(0, len(rows), batch_size):
            logits, _ = self.model(pad_rows(rows[start:start + batch_size]).to(self.device))
            found += torch.softmax(logits.float(), dim=-1).tolist()
        return [dict(zip(self.labels, p)) for p in found]


def classify_command(path: str, text: str, file: str, device: str = "auto") -> list[dict[str, float]]:
    """model_handler.py's --classify=TEXT and --classify_file=LINES: a line per text, the label
    first, then every label's probability (the texts themselves are not echoed)."""
    texts = [text] if text else []
    if file:
        if not Path(file).is_file():
            raise UserError(f"--classify_file={file} does not exist: give a text file, one text a line.")
        lines = Path(file).read_text(encoding="utf-8", errors="replace").splitlines()
        texts += [line for line in lines if line.strip()]
        if not texts:
            raise UserError(f"--classify_file={file} has no text: write one text a line.")
    labeller = Labeller(path, device)
    found = labeller.probabilities(texts)
    for probabilities in found:
        best = max(probabilities, key=probabilities.get)
        shown = "  ".join(f"{label} {p:.3f}" for label, p in sorted(probabilities.items(), key=lambda item: -item[1]))
        print(f"{best}\t{shown}")
    return found
