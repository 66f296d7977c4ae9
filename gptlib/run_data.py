"""The data a run trains on, in the tokens its model reads: characters, byte-level BPE (trained here
or the checkpoint's), GPT-2's; plain text, a memory-mapped corpus, or chat pairs."""
from __future__ import annotations

import json
import random
import time
from collections import Counter
from pathlib import Path

import torch

from config import TrainConfig
from gptlib import pretrained, tokenizer
from gptlib.chat_format import (
    INPUT_MARK,
    OUTPUT_MARK,
    conversation_prompt,
    exchanges_of,
    layout_pair,
    persona_prompt,
    without_markers,
)
from gptlib.corpus import (
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
)
from gptlib.errors import UserError
from gptlib.tokenizer import compact_dtype

MEMMAP_ABOVE_BYTES = 256 << 20  # a text this large is read through a memory map even without --memmap
DEFAULT_BPE_VOCAB = 512  # --tokenizer=bpe without --vocab_size: 253 merges, small enough to train in a second


def load_dataset(cfg: TrainConfig, start, vocab_size: int | None = None) -> TextDataset:
    """Plain text, or chat pairs from a .jsonl file. A resumed run keeps its vocabulary; a run
    started from trained weights (`start`, a gptlib.start.Start) extends that model's vocabulary with
    the new characters. `vocab_size` (--vocab_size) is the size to train BPE to; characters and GPT-2
    take theirs from the data."""
    state, init_state = start.resumed_state, start.initial_weights
    if init_state is not None and "pretrained" in init_state and not state:
        return pretrained_dataset(cfg, init_state)
    source = state or init_state
    saved_kind = tokenizer.from_checkpoint(source).kind if source else cfg.tokenizer
    if saved_kind == "hub":  # a hub model's fine-tune, resumed or trained further: its own tokens and template
        return _hub_model_dataset(cfg, tokenizer.from_checkpoint(source), cfg.resume or cfg.init_from)
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
    pairs = conversation_pairs(cfg.data, cfg.context_turns) if is_pairs_file(cfg.data) else None
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
    if pairs and (sessions := session_order(cfg.data, len(pairs))):
        return time_split_dataset(pairs, sessions, vocab, cfg.seed)
    return pairs_dataset(pairs, vocab, cfg.seed) if pairs else TextDataset.from_text(text, vocab)


def session_order(path: str, count: int) -> list[list[int]] | None:
    """The pairs' indices grouped by session (chat_data.py's "session", records of one session
    consecutive), oldest session first; None when any record lacks its session or time."""
    records = pair_records(path)
    if len(records) != count or not all(r.get("time") and "session" in r for r in records):
        return None
    sessions: list[list[int]] = []
    for index, record in enumerate(records):
        if index and record["session"] == records[index - 1]["session"] and record["time"] >= records[index - 1]["time"]:
            sessions[-1].append(index)
        else:
            sessions.append([index])
    return sorted(sessions, key=lambda s: records[s[0]]["time"])


def split_sessions(sessions: list[list[int]]) -> dict[str, list[list[int]]]:
    """{"train": older sessions, "val": the newest tenth (at least one)}: the split by time that
    training and the report (gptlib/persona_report.py) both use."""
    if len(sessions) < 2:
        raise UserError(f"chat pairs: {len(sessions)} conversation(s) is too few for a held-out split by time: "
                        "it needs at least 2 (the newest tenth of conversations, at least one, is held out).")
    n_val = max(1, round((1 - TRAIN_FRACTION) * len(sessions)))
    return {"train": sessions[:-n_val], "val": sessions[-n_val:]}


def time_split_dataset(pairs: list[tuple[str, str]], sessions: list[list[int]], vocab, seed: int = 0) -> TextDataset:
    """Held out by time: the newest tenth of the sessions (at least one) is val, and no session is
    on both sides, so the val loss is how well the model answers later chats it has not seen."""
    order = _pairs_by_time(pairs, sessions)
    for split in order:  # shuffled within each side: a character window must not read the pair before it as context
        random.Random(seed).shuffle(order[split])
    texts, masks = zip(*(layout_pair(a, b) for a, b in order["train"] + order["val"]))
    split_at = sum(len(t) for t in texts[:len(order["train"])])
    ids = torch.tensor(vocab.encode("".join(texts)), dtype=compact_dtype(len(vocab)))
    mask = torch.tensor([m for pair_mask in masks for m in pair_mask], dtype=torch.bool)
    dataset = TextDataset(ids, vocab, loss_mask=mask, split_at=split_at)
    dataset.pairs = order
    return dataset


def _pairs_by_time(pairs: list, sessions: list[list[int]]) -> dict[str, list]:
    return {side: [pairs[i] for s in part for i in s] for side, part in split_sessions(sessions).items()}


def pairs_split(path: str, pairs: list[tuple[str, str]], seed: int) -> dict[str, list]:
    """Whole-pair rows' split (byte-level and hub chat pairs): by time, the newest tenth of the
    sessions held out, when chat_data.py recorded them; else the shuffled split of pairs."""
    sessions = session_order(path, len(pairs))
    return held_out_split(pairs, seed) if sessions is None else _pairs_by_time(pairs, sessions)


def whole_pair_rows(cfg: TrainConfig) -> tuple[list[tuple[str, str]], bool, dict[str, list]]:
    """What PairBatches and TemplatePairBatches take from --data: the pairs (laid out as
    conversations when they carry them), whether they are, and their train/val split."""
    pairs, laid_out = laid_out_pairs(cfg.data, cfg.context_turns)
    return pairs, laid_out, pairs_split(cfg.data, pairs, cfg.seed)


def conversation_pairs(path: str, context_turns: int) -> list[tuple[str, str]]:
    """Chat examples: each reply with up to `context_turns` earlier turns of its session (chat_data.py
    writes them as "context"), laid out by chat_format.conversation_prompt, the layout --chat and the
    server use. The pair's first side is that layout without its outer markers, so layout_pair(side,
    reply) is exactly conversation_prompt(...) + reply + END; subword pairs read it back into turns
    (chat_format.read_laid_out)."""
    return laid_out_pairs(path, context_turns)[0]


def laid_out_pairs(path: str, context_turns: int) -> tuple[list[tuple[str, str]], bool]:
    """conversation_pairs, and whether they are laid out (False: the plain pairs, as read)."""
    pairs = read_pairs(path)
    if context_turns == 1:
        return pairs, False  # the single-exchange layout: their last turn, my reply
    contexts = [record.get("context") or [] for record in pair_records(path)]
    if len(contexts) != len(pairs) or not any(contexts):  # skipped lines: the context of each pair is unknown
        return pairs, False
    laid_out = []
    for (their, mine), context in zip(pairs, contexts):
        if not context:
            laid_out.append((their, mine))
            continue
        message, history = exchanges_of((turn.get("speaker"), without_markers(str(turn.get("text", ""))),
                                         bool(turn.get("mine"))) for turn in context)
        prompt = conversation_prompt(message, history, context_turns)
        laid_out.append((prompt[len(INPUT_MARK):-len(OUTPUT_MARK)], mine))
    return laid_out, True


def persona_of(path: str) -> str:
    """Whose replies the pairs hold: the name chat_data.py found for me most often ("me"), or ""."""
    names = Counter(record.get("me") for record in pair_records(path) if isinstance(record.get("me"), str))
    names.pop("", None)
    return names.most_common(1)[0][0] if names else ""


def pair_records(path: str) -> list[dict]:
    records = []
    for line in read_text(path).splitlines():
        try:
            record = json.loads(line) if line.strip() else None
        except ValueError:
            record = None
        if isinstance(record, dict) and isinstance(record.get("output"), str) and record["output"]:
            records.append(record)
    return records


def pretrained_dataset(cfg: TrainConfig, init_state: dict) -> TextDataset:
    """Text for a model started from GPT-2's weights, in GPT-2's tokens (the tokenizer files of its
    directory), which the checkpoint then keeps as its tokenizer."""
    source = init_state["pretrained"]["source"]
    tokens = pretrained.hub_tokenizer(init_state)
    if getattr(tokens, "kind", "") == "hub":  # the Llama family: its own tokenizer and chat template
        return _hub_model_dataset(cfg, tokens, source)
    if cfg.tokenizer != "gpt2":
        raise UserError(f"{source} reads GPT-2's tokens; drop --tokenizer={cfg.tokenizer}.")
    if tokens is None:
        raise UserError(f"{source} has no tokenizer files (vocab.json + merges.txt, encoder.json + vocab.bpe, or "
                        "tokenizer.json): copy GPT-2's into that directory.")
    if is_pairs_file(cfg.data):
        pairs, laid_out, split = whole_pair_rows(cfg)
        return PairBatches(pairs, tokenizer.with_chat_markers(tokens), cfg.seed, laid_out, split)
    return TextDataset.from_text(_text_for_subwords(cfg), tokens)


def _hub_model_dataset(cfg: TrainConfig, tokens, source: str):
    """Text in a hub model's tokens, or chat pairs rendered in its chat template."""
    if cfg.tokenizer not in ("char", "gpt2"):
        raise UserError(f"{source} reads its own tokens (tokenizer.json); drop --tokenizer={cfg.tokenizer}.")
    if is_pairs_file(cfg.data):
        if not tokens.config.get("chat_template"):
            raise UserError(f"{source} has no chat_template in tokenizer_config.json: chat pairs need an instruct model.")
        from gptlib.template_pairs import TemplatePairBatches
        cfg.persona = cfg.persona or persona_of(cfg.data)  # kept in the checkpoint: serving speaks as the same person
        system = persona_prompt(cfg.persona) if cfg.persona else ""
        if cfg.persona:
            print(f"persona: {cfg.persona} (the system prompt of every example; --persona to change it)")
        pairs, laid_out, split = whole_pair_rows(cfg)
        return TemplatePairBatches(pairs, tokens, cfg.seed, laid_out, split, system=system)
    return TextDataset.from_text(_text_for_subwords(cfg), tokens)


def subword_dataset(cfg: TrainConfig, source: dict | None, vocab_size: int | None):
    """Text in byte-level BPE tokens: the checkpoint's tokenizer when there is one, GPT-2's from its
    files, or one trained here on the training split (the val text stays unseen). Chat pairs come
    as whole pairs (PairBatches), the markers as special ids."""
    pairs, laid_out, split = whole_pair_rows(cfg) if is_pairs_file(cfg.data) else (None, False, None)
    if pairs is None:
        text = _text_for_subwords(cfg)
        training_text = text[:int(TRAIN_FRACTION * len(text))]
    else:  # BPE learns from the training pairs' words only; the markers are its specials
        training_text = "\n".join(without_markers(side) for pair in split["train"] for side in pair)
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
        return PairBatches(pairs, tokenizer.with_chat_markers(tokens), cfg.seed, laid_out, split)
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

