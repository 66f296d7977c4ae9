"""The text a model learns from: reading (or downloading) it, the character vocabulary, the
train/val split and random batches. Imports nothing of ours but config.
"""
from __future__ import annotations

import hashlib
import os
import urllib.request
from pathlib import Path

import torch

from config import UserError

# The copy nanoGPT's shakespeare_char/prepare.py downloads, and its sha256.
SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
DEFAULT_DATA = "data/tinyshakespeare/input.txt"
TRAIN_FRACTION = 0.9  # first 90% train, last 10% val: the lecture's and nanoGPT's split


# ----------------------------------------------------------------------------------------------
# Reading the text


def read_text(path: str) -> str:
    """The file's text; the default corpus is downloaded and checked when missing."""
    file = Path(path)
    if not file.exists() and _is_default_corpus(path):
        download_shakespeare(file)
    if not file.is_file():
        raise UserError(f"training text {path!r} does not exist. Pass --data=PATH to a UTF-8 text file.")
    raw = file.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise UserError(
            f"{path} is not UTF-8 text (byte {err.start} is 0x{raw[err.start]:02x}). "
            "Convert it first, e.g. iconv -f latin1 -t utf-8 FILE > FILE.utf8"
        ) from None
    if not text:
        raise UserError(f"training text {path!r} is empty. Pass --data=PATH to a file with text in it.")
    return text


def download_shakespeare(dest: Path) -> None:
    print(f"downloading tiny-shakespeare from {SHAKESPEARE_URL}")
    try:
        with urllib.request.urlopen(SHAKESPEARE_URL, timeout=30) as response:
            payload = response.read()
    except OSError as err:
        raise UserError(
            f"{dest} is missing and the download failed ({err}). Either connect to the internet and "
            f"run again, or pass --data=PATH to a local copy of tiny-shakespeare (or any UTF-8 text)."
        ) from None
    digest = hashlib.sha256(payload).hexdigest()
    if digest != SHAKESPEARE_SHA256:
        raise UserError(f"the downloaded corpus has sha256 {digest}, expected {SHAKESPEARE_SHA256}; not saved.")
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_suffix(".part")
    partial.write_bytes(payload)
    os.replace(partial, dest)


def _is_default_corpus(path: str) -> bool:
    return Path(path).resolve() == Path(DEFAULT_DATA).resolve()


# ----------------------------------------------------------------------------------------------
# Characters <-> integers


class CharVocab:
    """The sorted set of characters in the text; a character's id is its index."""

    def __init__(self, chars):
        self.chars = list(chars)
        self.index = {ch: i for i, ch in enumerate(self.chars)}

    @classmethod
    def from_text(cls, text: str) -> "CharVocab":
        return cls(sorted(set(text)))

    def __len__(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        missing = sorted(set(text) - self.index.keys())
        if missing:
            shown = ", ".join(repr(ch) for ch in missing[:10])
            raise UserError(f"character(s) {shown} are not in the model's vocabulary of {len(self)} characters; remove or replace them.")
        return [self.index[ch] for ch in text]

    def decode(self, ids) -> str:
        return "".join(self.chars[i] for i in ids)


def compact_dtype(vocab_size: int) -> torch.dtype:
    """The smallest integer type that holds every id: a 1 MB corpus stays 1 MB in memory."""
    return torch.uint8 if vocab_size <= 256 else torch.int16 if vocab_size <= 32767 else torch.int32


# ----------------------------------------------------------------------------------------------
# Train/val split and batches


class TextDataset:
    """Token ids of the whole text, split 90/10, with an optional mask of positions to learn.

    `loss_mask[i]` False means token i is never a target (e.g. the other person's words in a chat
    pair); plain text has no mask and every next character is a target.
    """

    def __init__(self, ids: torch.Tensor, vocab: CharVocab, loss_mask: torch.Tensor | None = None,
                 split_at: int | None = None):
        self.vocab = vocab
        n = int(TRAIN_FRACTION * len(ids)) if split_at is None else split_at
        self.splits = {"train": ids[:n], "val": ids[n:]}
        self.masks = None if loss_mask is None else {"train": loss_mask[:n], "val": loss_mask[n:]}

    @classmethod
    def from_text(cls, text: str, vocab: CharVocab | None = None) -> "TextDataset":
        vocab = vocab or CharVocab.from_text(text)
        ids = torch.tensor(vocab.encode(text), dtype=compact_dtype(len(vocab)))
        return cls(ids, vocab)

    def check_fits(self, block_size: int) -> None:
        for split, data in self.splits.items():
            if len(data) <= block_size:
                raise UserError(
                    f"the {split} split has {len(data)} characters, not more than the context of "
                    f"{block_size}: use a longer text or a smaller --block_size."
                )

    def get_batch(self, split: str, batch_size: int, block_size: int,
                  generator: torch.Generator | None = None, device: str = "cpu"):
        """Random windows: x is block_size characters, y the same shifted by one (-1 = not a target)."""
        data = self.splits[split]
        starts = torch.randint(len(data) - block_size, (batch_size,), generator=generator)
        positions = starts[:, None] + torch.arange(block_size + 1)  # (B, T+1), no Python loop
        window = data[positions].long()
        x, y = window[:, :-1], window[:, 1:]
        if self.masks is not None:
            y = y.masked_fill(~self.masks[split][positions[:, 1:]], -1)
        if device.startswith("cuda"):  # pinned memory lets the copy overlap with compute
            return x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
        return x.to(device), y.to(device)
