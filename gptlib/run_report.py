"""What a run says and leaves behind: the start-up lines, then at the end the checkpoint's report,
the loss-curve picture, a sample, a line in notes.txt and the final line."""
from __future__ import annotations

import dataclasses
import math
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from gptlib import lora, loss_curves, muon, sharding
from gptlib.atomic_write import write_text_atomically
from gptlib.build import count_parameters
from gptlib.chat_format import END_MARK, prompt_text
from gptlib.checkpoint import best_path
from gptlib.corpus import TextDataset, seeded_generator
from gptlib.engine import TokenStream, decoder_for
from gptlib.errors import UserError

if TYPE_CHECKING:
    from gptlib.train import Run, TrainResult


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
    write_sample(r.model, r.dataset, r.cfg, r.out)
    append_notes(r, result)
    if r.dataset.pairs:
        print(f"val loss of replies only (held-out pairs): {result.val_loss:.4f}")
        write_chat_report(r)
    print(f"final: iters={result.iters} train_loss={result.train_loss:.4f} val_loss={result.val_loss:.4f} "
          f"best_val_loss={result.best_val_loss:.4f} val_bpb={result.val_bpb:.4f} params={result.params} "
          f"tokens_per_s={result.tokens_per_s:.0f} seconds={result.seconds:.1f} checkpoint={result.checkpoint}")


def write_chat_report(r: Run) -> None:
    """A chat run's report beside its checkpoint (gptlib/persona_report.py), kept cheap: a few
    held-out conversations. The checkpoint is saved already, so a report that cannot be made says why
    and the run still ends well."""
    if not r.cfg.report_contexts:
        return
    from gptlib.persona_report import ReportOptions, write_report  # chat runs only

    options = ReportOptions(contexts=r.cfg.report_contexts, show_text=r.cfg.log_text, seed=r.cfg.seed,
                            scored=4 * r.cfg.report_contexts)
    try:
        write_report(r.model, r.dataset.vocab, dataclasses.asdict(r.cfg), dataclasses.asdict(r.model_cfg), r.out, options)
    except UserError as err:
        print(f"report: not written: {err}")


def draw_curve(r: Run) -> None:
    csv_path, png_path = loss_curves.curve_paths(r.out)
    title = f"{Path(r.out).stem}: {r.preset} preset, {count_parameters(r.model):,} parameters"
    if loss_curves.plot_run(r.curve, png_path, title):
        print(f"loss curve: {png_path} (numbers in {csv_path})")
    else:
        print(f"loss curve: {csv_path}; {loss_curves.missing_matplotlib_hint(r.out)}")


def write_sample(model, dataset, cfg, checkpoint_path) -> None:
    if cfg.sample_chars == 0:
        return
    generator = seeded_generator(cfg.seed)
    model.eval()
    if dataset.pairs:  # a chat model answers a held-out message, stopping at the end marker
        their = (dataset.pairs["val"] or dataset.pairs["train"])[0][0]
        if hasattr(dataset, "reply_prompt"):  # a hub model's own chat template
            start, stop = dataset.reply_prompt(their)
        else:
            start, stop = dataset.vocab.encode_with_specials(prompt_text(their)), dataset.vocab.specials[END_MARK]
        ids = TokenStream(decoder_for(model), start, cfg.sample_chars, temperature=0.8, generator=generator,
                          stop_token=stop)
        reply = dataset.vocab.decode(list(ids))
        text = f"> {their}\n< {reply}"
        if not cfg.log_text:  # your messages, and a reply that may repeat them: never printed unless asked
            print(f"sample: a reply of {len(reply)} characters to a held-out message of {len(their)} "
                  "(not shown: the text is yours; --log_text=true prints it and writes it to --samples_dir)")
            model.train()
            return
    else:
        start = dataset.vocab.encode("\n") if dataset.vocab.can_encode("\n") else [0]
        ids = TokenStream(decoder_for(model), start, cfg.sample_chars, temperature=0.8, generator=generator)
        text = dataset.vocab.decode(list(ids))
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
    append_note_line(r.cfg.notes, [
        str(result.checkpoint), f"params={result.params}", f"preset={r.preset} {settings}",
        f"iters={result.iters} train_loss={result.train_loss:.4f} val_loss={result.val_loss:.4f} "
        f"best_val_loss={result.best_val_loss:.4f} val_bpb={result.val_bpb:.4f}",
        f"{result.seconds:.1f}s", f"{r.device} {r.dtype}", f"{result.tokens_per_s:.0f} tokens/s{compiled}"])


def append_note_line(path: str, fields: list[str]) -> None:
    """One line of notes.txt: the time, then the fields, " | " between them."""
    with open(path, "a", encoding="utf-8") as notes:
        notes.write(" | ".join([f"{datetime.now():%Y-%m-%d %H:%M}", *fields]) + "\n")


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
        print(f"processes: {processes.world_size} (torchrun, {processes.backend}); this is rank 0 of them"
              + (f"; weights, gradients and optimizer state sharded (FSDP): each process holds 1/{processes.world_size}"
                 if cfg.fsdp else ""))
    elif cfg.fsdp:
        print("note: --fsdp shares the model out among torchrun's processes; one process holds all of it")
    print(f"model: {sharding.plain_class(r.model).__name__} with {count_parameters(r.model):,} parameters"
          + (f" ({shape})" if r.kind == "gpt" else ""))
    if cfg.lora_rank:
        trainable = count_parameters(r.model, trainable_only=True)
        print(f"LoRA: rank {cfg.lora_rank}, alpha {cfg.lora_alpha:g} on {lora.adapted_layer_kinds(r.model)}: {trainable:,} "
              f"trainable parameters, the other {count_parameters(r.model) - trainable:,} frozen; base: {cfg.init_from}")
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
