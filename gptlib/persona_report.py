"""The report of a chat model: how much it sounds like the person, measured on the held-out
sessions (the newest conversations, held out by time as training held them out).

    python model_handler.py models/me.pt --report              # on demand, for any chat checkpoint
    python gpt_final_version.py --data=pairs.jsonl ...        # after a chat run (--report_contexts=32)

It writes beside the checkpoint M.pt: M.report.md and M.report.json (numbers only: bits per byte of
the replies against the model the run started from, the style card, failures, word-for-word copies),
M.report.png (the style card, with matplotlib), and M.blind.html, the blind test, which holds message
text by necessity and stays in the checkpoint's folder. Message text reaches the report files only
with show_text (--show_text=true).

Sections: the held-out replies | the layout of a prompt | bits per byte | generating | the report.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch

from config import GPTConfig, TrainConfig
from gptlib import pretrained, style_card
from gptlib.atomic_write import write_text_atomically
from gptlib.blind_test import blind_page
from gptlib.chat_format import (
    CHAT_MARKERS,
    END_MARK,
    INPUT_MARK,
    OUTPUT_MARK,
    conversation_prompt,
    exchanges_of,
    persona_prompt,
    recent_history,
    without_markers,
)
from gptlib.cli import apply
from gptlib.corpus import held_out_split, read_pairs, seeded_generator
from gptlib.engine import TokenStream, decoder_for
from gptlib.errors import UserError
from gptlib.run_data import pair_records, session_order, split_sessions

MAX_REPLY_TOKENS = 256  # the automatic cap on a generated reply never passes this: a chat reply, not an essay


@dataclass
class ReportOptions:
    contexts: int = 32  # held-out conversations the model answers for the style card, failures, copies and the blind test
    copy_words: int = style_card.COPY_WORDS  # a generated reply repeating this many words of a training reply in a row is a copy
    show_text: bool = False  # put message text in the report files (frequent words, the worst copies); off: numbers only
    scored: int = 512  # held-out replies (evenly spread) whose bits per byte are measured
    max_new_tokens: int = 0  # the cap on a generated reply; 0: twice the longest training reply plus 16, at most MAX_REPLY_TOKENS
    temperature: float = 0.8
    seed: int = 1337
    data: str = ""  # the chat pairs; empty: the file the checkpoint was trained on


@dataclass
class HeldOut:
    """The replies a report is measured on, with the conversations before them."""
    examples: list[dict]  # {"message", "history", "reply", "session"}: held-out replies, oldest first
    training_replies: list[str]
    others: list[str]  # the other speakers' names in the data (a reply must not speak as them)
    split: str  # "time" (sessions) or "shuffled" (pairs without sessions)
    sessions: int = 0  # held-out sessions (split by time)


# ==============================================================================================
# The held-out replies: the split training used (gptlib/run_data.py)


def held_out(path: str, train_config: dict) -> HeldOut:
    """The held-out replies of the pairs at `path`, split as the run that made the checkpoint split
    them: by time (the newest sessions) when the pairs hold their sessions (chat_data.py), else the
    shuffled 90/10 split of pairs; with each reply, the conversation it answers, as trained."""
    if not Path(path).is_file():
        raise UserError(f"the report reads the chat pairs the model was trained on: {path!r} is not there. "
                        "Give them with --report_data=pairs.jsonl.")
    pairs, records = read_pairs(path), pair_records(path)
    context_turns = int(train_config.get("context_turns", 1))  # before the option: single exchanges
    sessions = session_order(path, len(pairs))  # by time, as training split them (run_data.pairs_split)
    if sessions:
        parts = split_sessions(sessions)
        split = {side: [i for s in part for i in s] for side, part in parts.items()}
    else:
        if len(pairs) < 2:
            raise UserError(f"{path}: {len(pairs)} reply is too few for a held-out split: it needs at least 2 "
                            "(a tenth of the replies, at least one, is held out).")
        split = held_out_split(list(range(len(pairs))), int(train_config.get("seed", 0)))
        split["val"] = sorted(split["val"])
    contexts = [r.get("context") or [] for r in records] if len(records) == len(pairs) else [[] for _ in pairs]
    session_of = {i: n for n, s in enumerate(sessions or []) for i in s}
    examples = []
    for i in split["val"]:
        message, history = pairs[i][0], []
        if context_turns != 1 and contexts[i]:  # laid out as training laid it out (run_data.laid_out_pairs)
            message, history = exchanges_of((t.get("speaker"), without_markers(str(t.get("text", ""))),
                                             bool(t.get("mine"))) for t in contexts[i])
        examples.append({"message": message, "history": history, "reply": pairs[i][1],
                         "session": session_of.get(i, -1 - i)})  # without sessions: each reply its own
    others = sorted({t["speaker"] for c in contexts for t in c if t.get("speaker") and not t.get("mine")})
    return HeldOut(examples, [pairs[i][1] for i in split["train"]], others, "time" if sessions else "shuffled",
                   len(parts["val"]) if sessions else 0)


def spread(items: list, count: int) -> list:
    """`count` items evenly spread over the list (all of them when there are fewer)."""
    if count >= len(items):
        return list(items)
    return [items[round(k * (len(items) - 1) / max(1, count - 1))] for k in range(count)]


# ==============================================================================================
# The layout of a prompt: our markers (characters, BPE, GPT-2) or a hub model's chat template


@dataclass
class Layout:
    vocab: object
    block_size: int
    context_turns: int
    template: bool = False
    system: str = ""  # a hub chat model's persona system prompt, as it was fine-tuned with

    @classmethod
    def of(cls, vocab, block_size: int, train_config: dict) -> Layout:
        template = getattr(vocab, "kind", "") == "hub" and bool(getattr(vocab, "config", {}).get("chat_template"))
        if not template and not (vocab is not None and all(m in vocab.specials for m in CHAT_MARKERS)):
            raise UserError("the report is for a chat model, one trained on chat pairs (--data=pairs.jsonl); this "
                            "checkpoint is a text model. Fine-tune it on pairs first (docs/llm-of-yourself.md).")
        turns = int(train_config.get("context_turns", 1))
        persona = train_config.get("persona", "")
        return cls(vocab, block_size, turns, template, persona_prompt(persona) if template and persona else "")

    @property
    def stop(self) -> tuple[int, ...]:
        """Where a reply ends, as ModelHandler ends it: the end marker or another speaker's turn."""
        if self.template:
            return tuple(self.vocab.eos_ids)
        return self.vocab.specials[END_MARK], self.vocab.specials[INPUT_MARK]

    @property
    def banned(self) -> tuple[int, ...]:
        return () if self.template else (self.vocab.specials[OUTPUT_MARK],)

    def prompt(self, example: dict) -> list[int]:
        """The ids before the reply, as ModelHandler.reply_stream lays them out."""
        if self.template:
            from gptlib.chat_template import reply_prompt_ids  # hub models only (Jinja2)
            return reply_prompt_ids(self.vocab, example["message"], recent_history(example["history"], self.context_turns),
                                    self.system, self.block_size)
        text = conversation_prompt(example["message"], example["history"], self.context_turns)
        return self.vocab.encode_with_specials(text[-self.block_size:])[-self.block_size:]

    def target(self, example: dict) -> list[int]:
        """The reply's ids and the end of it: what the model is scored on."""
        if self.template:
            return self.vocab.encode(example["reply"]) + [self.vocab.eos_ids[0]]
        return self.vocab.encode(example["reply"]) + [self.vocab.specials[END_MARK]]

    def text(self, ids: list[int]) -> str:
        text = self.vocab.decode(ids)
        if self.template:
            from gptlib.chat_template import strip_markup
            return strip_markup(self.vocab, text)
        return text


# ==============================================================================================
# Bits per byte of the held-out replies


@torch.no_grad()
def reply_bits(model, layout: Layout, examples: list[dict]) -> float:
    """Bits per byte of the replies (and the end of each, counted as one byte, as training's val_bpb
    counts the END marker), each read after its conversation: lower is better."""
    device = next(model.parameters()).device
    total_bits, total_bytes = 0.0, 0
    with evaluating(model):
        for example in examples:
            prompt, target = layout.prompt(example), layout.target(example)
            keep = min(len(target), layout.block_size)  # a reply longer than the context: its start
            ids = prompt[-(layout.block_size + 1 - keep):] + target[:keep]
            x = torch.tensor([ids[:-1]], device=device)
            logits, _ = model(x)
            logp = torch.log_softmax(logits[0, -keep:].float(), dim=-1)
            chosen = logp[torch.arange(keep, device=device), torch.tensor(target[:keep], device=device)]
            total_bits += -chosen.sum().item() / math.log(2)
            whole = keep == len(target)
            total_bytes += len(example["reply"].encode()) + 1 if whole else len(layout.text(target[:keep]).encode())
    return total_bits / max(1, total_bytes)


def unigram_bits(training: list[str], examples: list[dict]) -> float:
    """Bits per byte of the replies under the training replies' character frequencies (add-one
    smoothed, an end-of-reply symbol included): the baseline when a run started from random weights."""
    counts = Counter(ch for reply in training for ch in reply + END_MARK)
    alphabet = set(counts) | {ch for e in examples for ch in e["reply"]}
    total = sum(counts.values()) + len(alphabet)
    bits = sum(-math.log2((counts[ch] + 1) / total) for e in examples for ch in e["reply"] + END_MARK)
    return bits / max(1, sum(len(e["reply"].encode()) + 1 for e in examples))


class evaluating:
    """Eval mode (no dropout) for a while, then back to what the model was in (training, after a run)."""

    def __init__(self, model):
        self.model = model

    def __enter__(self):
        self.was_training = self.model.training
        self.model.eval()

    def __exit__(self, *exc):
        self.model.train(self.was_training)


def start_model(train_config: dict, model_config: dict, device):
    """The model the run started from, rebuilt as training built it (--init_from's weights, the
    vocabulary grown the same way), or (None, why) when it started from random weights or its
    weights are gone. Global random state is left as it was."""
    from gpt_final_version import GPT, convert_attention_weights
    from gptlib.build import build_for_run, read_weights
    from gptlib.start import Start

    source = train_config.get("init_from") or ""
    if not source:
        return None, "the run started from random weights"
    if not pretrained.is_pretrained_source(source) and not Path(source).exists():
        return None, f"its start, {source}, is not there any more"
    cfg = apply(TrainConfig(), {**train_config, "lora_rank": 0, "resume": ""})
    model_cfg = apply(GPTConfig(), {**model_config, "dropout": 0.0})
    mode = "pretrained" if pretrained.is_pretrained_source(source) else "checkpoint"
    weights = read_weights(source, {"block_size": model_cfg.block_size, "dropout": 0.0})
    with torch.random.fork_rng(devices=[]):
        model, _ = build_for_run(GPT, model_cfg, cfg, Start(mode, source, weights), convert_attention_weights)
    return model.to(device).eval(), source


# ==============================================================================================
# Generating: the model's reply to each held-out conversation


@torch.no_grad()
def generate_replies(model, layout: Layout, examples: list[dict], max_new_tokens: int, temperature: float,
                     seed: int) -> tuple[list[str], list[bool]]:
    """The model's replies (sampled as --chat samples them) and, for each, whether it hit the cap."""
    generator = seeded_generator(seed)
    replies, cut_off = [], []
    with evaluating(model):
        for example in examples:
            stream = TokenStream(decoder_for(model), layout.prompt(example), max_new_tokens, temperature,
                                 None, generator, layout.stop, banned=layout.banned)
            replies.append(layout.text(list(stream)))
            cut_off.append(stream.finish_reason == "length")
    return replies, cut_off


# ==============================================================================================
# The report


@dataclass
class Report:
    numbers: dict
    blind_examples: list[dict] = field(default_factory=list)


def build_report(model, vocab, train_config: dict, model_config: dict, checkpoint: str,
                 options: ReportOptions) -> Report:
    """Everything the report says, measured: numbers (and text only with show_text)."""
    data = options.data or train_config.get("data", "")
    layout = Layout.of(vocab, model.config.block_size, train_config)
    held = held_out(data, train_config)
    scored = spread(held.examples, options.scored)
    chosen = spread(held.examples, options.contexts)
    longest = max((len(r) for r in held.training_replies), default=0)
    cap = options.max_new_tokens or min(2 * longest + 16, MAX_REPLY_TOKENS)
    device = next(model.parameters()).device
    bits = reply_bits(model, layout, scored)
    start, why = start_model(train_config, model_config, device)
    if start is not None:
        start_bits, baseline = reply_bits(start, layout, scored), f"the weights it started from ({why})"
        del start
    else:
        start_bits = unigram_bits(held.training_replies, scored)
        baseline = f"a unigram of the training replies' characters ({why})"
    generated, cut_off = generate_replies(model, layout, chosen, cap, options.temperature, options.seed)
    real = [e["reply"] for e in chosen]
    numbers = {
        "checkpoint": str(checkpoint), "data": str(data),
        "held_out": {"split": held.split, "sessions": held.sessions, "replies": len(held.examples),
                     "scored": len(scored), "answered": len(chosen), "training_replies": len(held.training_replies)},
        "generation": {"max_new_tokens": cap, "temperature": options.temperature, "seed": options.seed,
                       "context_turns": layout.context_turns},
        "bits_per_byte": {"model": bits, "start": start_bits, "start_is": baseline, "gain": start_bits - bits},
        "style": {"real": style_card.style_card(real), "generated": style_card.style_card(generated),
                  "overlap": style_card.vocabulary_overlap(real, generated),
                  "identical_share": sum(a.strip() == b.strip() for a, b in zip(real, generated)) / max(1, len(real))},
        "failures": {"replies": len(chosen), "longest_training_reply": longest,
                     "generated": style_card.failure_counts(generated, held.others, longest, cut_off),
                     "real": style_card.failure_counts(real, held.others, longest)},
        "memorisation": {"generated": style_card.copied_replies(generated, held.training_replies, options.copy_words,
                                                                options.show_text),
                         "real": style_card.copied_replies(real, held.training_replies, options.copy_words,
                                                           options.show_text)},
        "show_text": options.show_text,
    }
    if options.show_text:
        numbers["style"]["frequent"] = {"real": style_card.frequent(real), "generated": style_card.frequent(generated)}
    blind = [{"context": conversation_turns(e), "real": e["reply"], "model": reply}
             for e, reply in last_of_each_session(chosen, generated)]
    numbers["blind_test"] = {"conversations": len(blind)}
    return Report(numbers, blind)


def last_of_each_session(examples: list[dict], replies: list[str]) -> list[tuple[dict, str]]:
    """One reply per session for the blind test, its last: an earlier one's real reply is in the
    later one's context, and would give its answer away."""
    last = {e["session"]: (e, reply) for e, reply in zip(examples, replies)}
    return list(last.values())


def conversation_turns(example: dict) -> list[tuple[str, str]]:
    """A held-out conversation as the blind test shows it: (who, text) lines."""
    turns = []
    for their, mine in example["history"]:
        turns += [("them", their), ("you", mine)]
    return turns + [("them", example["message"])]


def report_paths(checkpoint) -> dict[str, Path]:
    base = Path(checkpoint).with_suffix("")
    return {kind: base.with_name(f"{base.name}.{suffix}") for kind, suffix in
            (("md", "report.md"), ("json", "report.json"), ("png", "report.png"), ("html", "blind.html"))}


def write_report(model, vocab, train_config: dict, model_config: dict, checkpoint: str,
                 options: ReportOptions | None = None, write=print) -> dict:
    """Measure, write the files beside the checkpoint, print a short summary (numbers only)."""
    from gptlib.report_files import draw_style_card, markdown, summary, to_json

    options = options or ReportOptions()
    report = build_report(model, vocab, train_config, model_config, checkpoint, options)
    paths = report_paths(checkpoint)
    pictured = draw_style_card(report.numbers, paths["png"])
    report.numbers["files"] = {k: str(p) for k, p in paths.items() if k != "png" or pictured}
    write_text_atomically(paths["html"], blind_page(report.blind_examples, options.seed))
    write_text_atomically(paths["json"], to_json(report.numbers))
    write_text_atomically(paths["md"], markdown(report.numbers, pictured))
    write(summary(report.numbers, pictured))
    return report.numbers

