"""Labelled texts for --task=classify: read from CSV or JSONL, checked, split by class, batched.

    python gpt_final_version.py --task=classify --data=labels.csv
    python gpt_final_version.py --task=classify --data=reviews.jsonl --columns=text=review,label=stars
    python chat_data.py chat.txt --senders --out=senders.jsonl   # "who wrote this?": each message, its sender

Rows are token ids padded on the right with -1 (PADDING): the classifier (gptlib/classify.py) reads
where each text ends from it. Error messages name rows by number and labels by name, never a text.

Sections: reading · the split · the tokens · batches.
"""
from __future__ import annotations

import csv
import json
import random
from collections import Counter
from pathlib import Path

import torch

from gptlib import tokenizer
from gptlib.errors import UserError

PADDING = -1  # the id of a padded position: no token has it, as no target of -1 is learned in a chat pair
SPLITS = ("train", "val", "test")
DEFAULT_BPE_VOCAB = 512  # --tokenizer=bpe from scratch without --vocab_size (as for language models)

# ==============================================================================================
# Reading: CSV with a header row, or JSON lines, each with a text and a label


def column_names(columns: str) -> dict[str, str]:
    """--columns=text=Message,label=Author as {"text": "Message", "label": "Author"}; text and label by default."""
    names = {"text": "text", "label": "label"}
    for part in filter(None, (p.strip() for p in columns.split(","))):
        key, sep, column = part.partition("=")
        if not sep or key.strip() not in names or not column.strip():
            raise UserError(f"--columns: {part!r} should be KEY=COLUMN with KEY text or label, as in --columns=text=Message,label=Author")
        names[key.strip()] = column.strip()
    return names


def read_labelled(path: str, columns: str = "") -> list[tuple[str, str]]:
    """(text, label) rows of a CSV or JSONL file; a missing column, an empty text or label, or a file
    with fewer than two classes is a UserError saying where."""
    file = Path(path)
    if not file.is_file():
        raise UserError(f"--data={path} does not exist: give a CSV or JSONL file of texts and labels (docs/classify.md).")
    names = column_names(columns)
    text = file.read_text(encoding="utf-8-sig", errors="replace")
    records = _json_lines(text, path) if text.lstrip().startswith("{") else _csv_rows(text, path)
    rows = []
    for number, record in records:
        missing = [names[key] for key in ("text", "label") if names[key] not in record]
        if missing:
            found = ", ".join(map(repr, record)) or "none"
            raise UserError(f"{path}: row {number} has no {' or '.join(map(repr, missing))} column (its columns: {found}); "
                            "name them with --columns=text=COLUMN,label=COLUMN.")
        text_value, label = str(record[names["text"]] or "").strip(), str(record[names["label"]] or "").strip()
        if not text_value:
            raise UserError(f"{path}: row {number} has an empty text; remove the row or fill it in.")
        if not label:
            raise UserError(f"{path}: row {number} has an empty label; remove the row or label it.")
        rows.append((text_value, label))
    classes = Counter(label for _, label in rows)
    if len(classes) < 2:
        only = f"only the label {next(iter(classes))!r}" if classes else "no rows"
        raise UserError(f"{path} has {only}: a classifier needs texts of at least two labels.")
    return rows


def _json_lines(text: str, path: str):
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            raise UserError(f"{path}: line {number} is not JSON; write one object a line, as in "
                            '{"text": "...", "label": "..."}.') from None
        if not isinstance(record, dict):
            raise UserError(f"{path}: line {number} is not a JSON object with a text and a label.")
        yield number, record


def _csv_rows(text: str, path: str):
    reader = csv.DictReader(text.splitlines())
    if not reader.fieldnames:
        raise UserError(f"{path} is empty: give a CSV with a header row (text,label) or JSON lines.")
    for number, record in enumerate(reader, 2):  # row 1 is the header
        yield number, {key: value for key, value in record.items() if key is not None}


# ==============================================================================================
# The split: each class cut into train, val and test in the same proportions


def stratified_split(rows: list[tuple[str, str]], val_fraction: float, test_fraction: float,
                     seed: int) -> dict[str, list[tuple[str, str]]]:
    """Each class's rows shuffled (a fixed seed) and cut: at least one in val and one in test, so
    every class is measured; a class with fewer than three rows cannot be and is refused."""
    by_class: dict[str, list] = {}
    for row in rows:
        by_class.setdefault(row[1], []).append(row)
    shuffle = random.Random(seed)
    split = {name: [] for name in SPLITS}
    for label in sorted(by_class):
        members = by_class[label]
        if len(members) < 3:
            raise UserError(f"the label {label!r} has {len(members)} row(s); each label needs at least 3 "
                            "(one each for train, val and test). Add rows or drop the label.")
        shuffle.shuffle(members)
        n_test = max(1, round(test_fraction * len(members)))
        n_val = max(1, round(val_fraction * len(members)))
        n_val = min(n_val, len(members) - n_test - 1)
        split["test"] += members[:n_test]
        split["val"] += members[n_test:n_test + n_val]
        split["train"] += members[n_test + n_val:]
    for name in SPLITS:  # classes interleaved, not in blocks
        shuffle.shuffle(split[name])
    return split


# ==============================================================================================
# The tokens: the checkpoint's tokenizer (characters extended with the data's new ones), or a new one


def tokens_for(texts: list[str], kind: str, source: dict | None, vocab_size: int | None, tokenizer_dir: str,
               extend: bool = True):
    """The tokenizer a classifier reads with: a resumed run's or a trained model's, or for a fresh
    model one made from the texts. With `extend`, a character model gets rows for the data's new
    characters, as fine-tuning a language model does; without (its embedding frozen, where new rows
    would stay random), those characters are left out of the texts."""
    if source is not None:
        tokens = tokenizer.from_checkpoint(source)
        if tokens.kind != "char" or not extend:
            return tokens
        new = sorted(set("".join(texts)) - set(tokens.chars))
        return tokenizer.CharTokenizer(tokens.chars + new) if new else tokens
    if kind == "bpe":
        return tokenizer.ByteBPE.train("\n".join(texts), vocab_size or DEFAULT_BPE_VOCAB)
    if kind == "gpt2":
        if not Path(tokenizer_dir).is_dir():
            raise UserError(f"--tokenizer=gpt2 needs GPT-2's tokenizer files in {tokenizer_dir!r}; pass --tokenizer_dir=DIR.")
        return tokenizer.GPT2Tokenizer.from_directory(tokenizer_dir)
    return tokenizer.CharTokenizer.from_text("".join(texts))


def encode_for_classifier(tokens, text: str) -> list[int]:
    """A text's tokens; a character outside a character vocabulary is left out (a model in use
    meets characters its training data never had). A text with no token left is a UserError."""
    if tokens.kind == "char":
        text = "".join(ch for ch in text if ch in tokens.index)
    ids = tokens.encode(text)
    if not ids:
        raise UserError("a text has no character the model knows: give text in the characters it was trained on.")
    return ids


def _readable(tokens, text: str) -> bool:
    """Whether a text keeps a token once the characters outside a character vocabulary are left out
    (a message of emoji alone, for a frozen Shakespeare embedding, does not: it is skipped, and counted)."""
    return tokens.kind != "char" or any(ch in tokens.index for ch in text)


def pad_rows(rows: list[list[int]]) -> torch.Tensor:
    """(B, T) ids, each row padded on the right with PADDING to the longest."""
    longest = max(len(row) for row in rows)
    return torch.tensor([row + [PADDING] * (longest - len(row)) for row in rows], dtype=torch.long)


# ==============================================================================================
# Batches


class LabelledTexts:
    """The encoded texts of each split with their class ids, drawn in random batches for training
    (from the run's own generator, so a resumed run draws what the uninterrupted one would) and in
    order for evaluation. It stands where a language model's TextDataset does in gptlib/train.py."""

    def __init__(self, split: dict[str, list[tuple[str, str]]], tokens, labels: list[str], block_size: int,
                 options=None):
        self.vocab, self.labels, self.options = tokens, labels, options
        index = {label: i for i, label in enumerate(labels)}
        readable = {name: [(text, label) for text, label in split[name] if _readable(tokens, text)] for name in SPLITS}
        self.unreadable = sum(len(split[name]) - len(readable[name]) for name in SPLITS)  # said at the start
        for name in SPLITS:
            if not readable[name]:
                raise UserError(f"no text of the {name} split has a character the model knows: give text in its characters.")
        whole = {name: [encode_for_classifier(tokens, text) for text, _ in readable[name]] for name in SPLITS}
        self.truncated = sum(len(ids) > block_size for rows in whole.values() for ids in rows)  # said at the start
        self.rows = {name: [ids[:block_size] for ids in rows] for name, rows in whole.items()}
        self.targets = {name: [index[label] for _, label in readable[name]] for name in SPLITS}
        self.splits = self.rows  # what gptlib.train's Run reads the split sizes from
        self.trains = ""  # what learns in the model, said at start-up (gptlib.classify sets it)

    def counts(self, split: str) -> Counter:
        return Counter(self.labels[t] for t in self.targets[split])

    def get_batch(self, split: str, batch_size: int, block_size: int, generator: torch.Generator, device: str,
                  rank: int = 0, world_size: int = 1):
        """batch_size random rows of `split` (with replacement): ids (B, T) padded with -1, class ids (B,)."""
        picks = torch.randint(len(self.rows[split]), (batch_size * world_size,), generator=generator)
        picks = picks[rank * batch_size:(rank + 1) * batch_size].tolist()
        return self._batch(split, picks, device)

    def batches_in_order(self, split: str, batch_size: int, device: str, limit: int | None = None):
        count = len(self.rows[split]) if limit is None else min(limit, len(self.rows[split]))
        for start in range(0, count, batch_size):
            yield self._batch(split, list(range(start, min(count, start + batch_size))), device)

    def _batch(self, split: str, picks: list[int], device: str):
        x = pad_rows([self.rows[split][i] for i in picks])
        y = torch.tensor([self.targets[split][i] for i in picks], dtype=torch.long)
        return x.to(device), y.to(device)


def load_labelled(path: str, options, cfg, source: dict | None, block_size: int, labels: list[str] | None = None,
                  vocab_size: int | None = None, extend: bool = True) -> LabelledTexts:
    """The file read, checked and split; `labels` (a resumed run's) keeps the class ids it trained with."""
    rows = read_labelled(path, options.columns)
    found = sorted({label for _, label in rows})
    if labels is not None and found != labels:
        raise UserError(f"{path} has the labels {', '.join(found)}; the checkpoint was trained on {', '.join(labels)}. "
                        "Resume on the same data, or start a new run with --init_from.")
    split = stratified_split(rows, options.val_fraction, options.test_fraction, cfg.seed)
    # characters: every one in the file has a row (a test text's unseen one would otherwise be dropped);
    # BPE learns its merges from the training texts only
    learn_from = split["train"] if source is None and cfg.tokenizer == "bpe" else rows
    tokens = tokens_for([text for text, _ in learn_from], cfg.tokenizer, source, vocab_size, cfg.tokenizer_dir, extend)
    return LabelledTexts(split, tokens, found, block_size, options)
