"""The text a model learns from: reading (or downloading) it, the character vocabulary, the
train/val split and random batches; chat pairs with their loss mask; and corpora larger than
memory, prepared once into a binary file of ids that training reads through a memory map.
Imports nothing of ours but config.
"""
from __future__ import annotations

import codecs
import hashlib
import json
import mmap
import random
import urllib.request
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from gptlib.atomic_write import atomic_write, write_bytes_atomically
from gptlib.chat_format import (  # noqa: F401 (the markers, re-exported for the tests and scripts)
    CHAT_MARKERS,
    END_MARK,
    INPUT_MARK,
    OUTPUT_MARK,
    layout_pair,
    prompt_ids,
    read_laid_out,
    without_markers,
)
from gptlib.errors import UserError
from gptlib.tokenizer import CharTokenizer, compact_dtype

# The copy nanoGPT's shakespeare_char/prepare.py downloads, and its sha256.
SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
DEFAULT_DATA = "data/tinyshakespeare/input.txt"
TRAIN_FRACTION = 0.9  # first 90% train, last 10% val: the lecture's and nanoGPT's split

MARKERS = CHAT_MARKERS  # the chat markers and their layout: gptlib/chat_format.py


# ----------------------------------------------------------------------------------------------
# Reading the text


def read_text(path: str) -> str:
    """The file's text; the default corpus is downloaded and checked when missing."""
    file = Path(path)
    ensure_default_corpus(path)
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


def ensure_default_corpus(path: str) -> None:
    if not Path(path).exists() and _is_default_corpus(path):
        download_shakespeare(Path(path))


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
    write_bytes_atomically(dest, payload)


def _is_default_corpus(path: str) -> bool:
    return Path(path).resolve() == Path(DEFAULT_DATA).resolve()


# ----------------------------------------------------------------------------------------------
# Characters <-> integers


# The character vocabulary is tokenizer.py's CharTokenizer, under the name the rest of the code knows.
CharVocab = CharTokenizer


# ----------------------------------------------------------------------------------------------
# Train/val split and batches


def seeded_generator(seed: int | None) -> torch.Generator:
    """A private random stream (CPU): the same seed gives the same batches or samples on every
    device, and drawing from it leaves every other stream (dropout, other batches) untouched.
    None gives a fresh, unpredictable stream."""
    generator = torch.Generator()
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    return generator


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
        self.pairs: dict | None = None  # for chat pairs: the (input, output) pairs of each split
        self.prepared: dict | None = None  # for a memory-mapped corpus: its metadata

    @classmethod
    def from_text(cls, text: str, vocab=None) -> TextDataset:
        """The text cut at 90% of its characters, each part encoded on its own (nanoGPT's
        prepare.py does the same, so GPT-2 token counts compare with its: 301,966 / 36,059 for
        tiny-shakespeare). For characters this is the same as cutting the ids."""
        vocab = vocab or CharVocab.from_text(text)
        cut = int(TRAIN_FRACTION * len(text))
        train, val = vocab.encode_to_tensor(text[:cut]), vocab.encode_to_tensor(text[cut:])
        return cls(torch.cat([train, val]), vocab, split_at=len(train))

    def bytes_per_token(self, split: str) -> float:
        """Mean UTF-8 bytes a token of the split stands for: turns a loss per token into bits per
        byte, which compare across tokenizers. A memory-mapped corpus uses the whole file's mean
        (one more pass over a corpus larger than memory is not worth the precision)."""
        if self.prepared:
            return self.prepared["source_bytes"] / max(1, self.prepared["tokens"])
        lengths = torch.tensor([len(self.vocab.token_bytes(i)) for i in range(len(self.vocab))])
        data = self.splits[split]
        return lengths[data.long()].sum().item() / max(1, len(data))

    def check_fits(self, block_size: int) -> None:
        """Training windows need more than block_size characters; a short val split (a handful of
        held-out chat pairs) is evaluated in windows as long as it allows."""
        for split, data in self.splits.items():
            if len(data) <= (block_size if split == "train" else 1):
                raise UserError(
                    f"the {split} split has {len(data)} characters, too few for the context of "
                    f"{block_size}: use a longer text or a smaller --block_size."
                )

    def get_batch(self, split: str, batch_size: int, block_size: int,
                  generator: torch.Generator | None = None, device: str = "cpu", rank: int = 0, world_size: int = 1):
        """Random windows: x is block_size characters, y the same shifted by one (-1 = not a target).

        Under torchrun every process draws the same global batch of batch_size x world_size windows
        from the same generator and keeps its own slice: the processes never see the same window, and
        N processes with batch B train on exactly the windows one process with batch N x B would."""
        data = self.splits[split]
        block_size = min(block_size, len(data) - 1)
        starts = torch.randint(len(data) - block_size, (batch_size * world_size,), generator=generator)
        starts = starts[rank * batch_size:(rank + 1) * batch_size]
        positions = starts[:, None] + torch.arange(block_size + 1)  # (B, T+1), no Python loop
        if isinstance(data, np.ndarray):  # a memory map: only the pages under these windows are read
            window = torch.from_numpy(data[positions.numpy()].astype(np.int64))
        else:
            window = data[positions].long()
        x, y = window[:, :-1], window[:, 1:]
        if self.masks is not None:
            y = y.masked_fill(~self.masks[split][positions[:, 1:]], -1)
        if device.startswith("cuda"):  # pinned memory lets the copy overlap with compute
            return x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
        return x.to(device), y.to(device)


# ----------------------------------------------------------------------------------------------
# Chat pairs: {"input": ..., "output": ...} per line, learned on the reply side only


def is_pairs_file(path: str) -> bool:
    return Path(path).suffix.lower() == ".jsonl"


def read_pairs(path: str) -> list[tuple[str, str]]:
    """The pairs of a JSONL file (as chat_data.py writes them). A line that is not a pair is
    counted and skipped with a note; a file without a single pair is an error."""
    text = read_text(path)
    pairs, skipped = [], 0
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            pair = (record["input"], record["output"])
        except (ValueError, TypeError, KeyError):
            skipped += 1
            continue
        if not all(isinstance(side, str) for side in pair) or not pair[1]:
            skipped += 1
            continue
        pairs.append(tuple(without_markers(side) for side in pair))
    if skipped:
        print(f"note: {path}: skipped {skipped} line(s) that are not {{\"input\": text, \"output\": text}} pairs")
    if not pairs:
        raise UserError(f"{path} holds no {{\"input\": ..., \"output\": ...}} pairs. "
                        "Make it with: python chat_data.py EXPORT --me=\"Your Name\" --out=" + path)
    return pairs


def pairs_vocab(pairs: list[tuple[str, str]], base: CharVocab | None = None) -> CharVocab:
    """Every character of the pairs plus the markers. Starting from a trained model's vocabulary
    (fine-tuning), its characters keep their ids and new ones are appended."""
    chars = set(MARKERS).union(*(set(a) | set(b) for a, b in pairs))
    if base is None:
        return CharVocab(sorted(chars))
    return CharVocab(base.chars + sorted(chars - set(base.chars)))


def pairs_dataset(pairs: list[tuple[str, str]], vocab: CharVocab, seed: int = 0) -> TextDataset:
    """Pairs in a fixed shuffled order; the last 10% of pairs (at least one) are held out for val,
    so validation measures replies to messages the model never trained on."""
    order = list(pairs)
    random.Random(seed).shuffle(order)
    n_val = max(1, round((1 - TRAIN_FRACTION) * len(order))) if len(order) > 1 else 0
    texts, masks = zip(*(layout_pair(a, b) for a, b in order))
    split_at = sum(len(t) for t in texts[:len(order) - n_val])
    ids = torch.tensor(vocab.encode("".join(texts)), dtype=compact_dtype(len(vocab)))
    mask = torch.tensor([m for pair_mask in masks for m in pair_mask], dtype=torch.bool)
    dataset = TextDataset(ids, vocab, loss_mask=mask, split_at=split_at)
    dataset.pairs = {"train": order[:len(order) - n_val], "val": order[len(order) - n_val:]}
    return dataset


# ----------------------------------------------------------------------------------------------
# Corpora larger than memory: prepared once into NAME.bin (ids) + NAME.meta.json, then memory-mapped

UNKNOWN_CHAR = "\ufffd"  # what characters rarer than min_char_count become: the replacement character
PREPARED_FORMAT = 1
CHUNK_BYTES = 8 << 20  # preparation reads and writes 8 MB at a time: its memory does not grow with the file


def prepared_paths(source: str) -> tuple[Path, Path]:
    path = Path(source)
    return path.with_name(path.name + ".bin"), path.with_name(path.name + ".meta.json")


def prepared_dataset(source: str, min_char_count: int = 1, base: CharVocab | None = None) -> TextDataset:
    """The corpus as a memory-mapped array of ids, preparing it first when there is no prepared copy
    or the source has changed since. `base` (fine-tuning) puts a trained model's characters first."""
    bin_path, meta_path = prepared_paths(source)
    meta = _fresh_meta(source, bin_path, meta_path, min_char_count, base)
    if meta is None:
        meta = prepare_corpus(source, min_char_count, base)
    vocab = CharVocab(meta["vocab"])
    ids = _map_read_only(bin_path, meta["dtype"], meta["tokens"])
    dataset = TextDataset(ids, vocab)
    dataset.prepared = meta
    return dataset


def _map_read_only(path: Path, dtype: str, tokens: int) -> np.ndarray:
    """The file as an array whose pages the kernel reads on first touch and may drop at any time.
    Batches are random windows, so read-ahead around each touched page would mostly be wasted:
    MADV_RANDOM asks for just the pages touched (it matters when the corpus does not fit in memory)."""
    ids = np.memmap(path, dtype=dtype, mode="r", shape=(tokens,))
    mapping = getattr(ids, "_mmap", None)  # None for an empty file
    if mapping is not None and hasattr(mmap, "MADV_RANDOM"):  # Linux and macOS; elsewhere the default read-ahead
        mapping.madvise(mmap.MADV_RANDOM)
    return ids


def prepare_corpus(source: str, min_char_count: int = 1, base: CharVocab | None = None) -> dict:
    """Two streamed passes over the file: count characters (and hash the bytes), then write ids.
    Characters seen fewer than min_char_count times map to UNKNOWN_CHAR, which bounds the
    vocabulary of a large multilingual corpus."""
    path = Path(source)
    if not path.is_file():
        raise UserError(f"training text {source!r} does not exist. Pass --data=PATH to a UTF-8 text file.")
    counts, digest, size = np.zeros(0x110000, dtype=np.int64), hashlib.sha256(), path.stat().st_size
    for codes, raw in _code_chunks(path, "preparing: counting characters"):
        counts += np.bincount(codes, minlength=0x110000)
        digest.update(raw)
    if size == 0:
        raise UserError(f"training text {source!r} is empty. Pass --data=PATH to a file with text in it.")
    kept = {chr(c) for c in np.flatnonzero(counts >= min_char_count)}
    replaced = int(counts[(counts > 0) & (counts < min_char_count)].sum())
    chars = sorted(kept | ({UNKNOWN_CHAR} if replaced else set()))
    if base is not None:
        chars = base.chars + [ch for ch in chars if ch not in base.index]
    dtype = np.uint8 if len(chars) <= 256 else np.uint16 if len(chars) <= 65536 else np.uint32
    table = np.full(0x110000, chars.index(UNKNOWN_CHAR) if UNKNOWN_CHAR in chars else 0, dtype=np.int64)
    table[[ord(ch) for ch in chars]] = np.arange(len(chars))
    bin_path, meta_path = prepared_paths(source)
    tokens = _write_ids(path, bin_path, table, dtype)
    meta = {"format": PREPARED_FORMAT, "source": str(path), "source_bytes": size,
            "source_mtime_ns": path.stat().st_mtime_ns, "source_sha256": digest.hexdigest(),
            "tokens": tokens, "dtype": np.dtype(dtype).name, "vocab": chars, "min_char_count": min_char_count,
            "unknown_char": UNKNOWN_CHAR if replaced else None, "replaced_chars": replaced,
            "rare_chars": int(((counts > 0) & (counts < min_char_count)).sum())}
    write_bytes_atomically(meta_path, json.dumps(meta, ensure_ascii=False, indent=1).encode("utf-8"))
    rare = f"; {meta['rare_chars']} rare character(s), {replaced:,} occurrence(s), became {UNKNOWN_CHAR!r}" if replaced else ""
    print(f"prepared {source}: {tokens:,} characters -> {bin_path} ({meta['dtype']}), vocabulary {len(chars)}{rare}")
    return meta


def _code_chunks(path: Path, description: str):
    """(Unicode code points as uint32, raw bytes) of the file, a chunk at a time, with a bar."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    done = 0
    with open(path, "rb") as file, tqdm(total=path.stat().st_size, unit="B", unit_scale=True, desc=description,
                                        disable=None, leave=False) as bar:
        while True:
            raw = file.read(CHUNK_BYTES)
            try:
                text = decoder.decode(raw, final=not raw)
            except UnicodeDecodeError as err:
                raise UserError(f"{path} is not UTF-8 text (byte {done + err.start} is 0x{raw[err.start]:02x}). "
                                "Convert it first, e.g. iconv -f latin1 -t utf-8 FILE > FILE.utf8") from None
            if text:
                yield np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32), raw
            if not raw:
                return
            done += len(raw)
            bar.update(len(raw))


def _write_ids(source: Path, bin_path: Path, table: np.ndarray, dtype) -> int:
    """Encode chunk by chunk into the prepared file, which appears only once complete."""
    tokens = 0
    with atomic_write(bin_path) as out:
        for codes, _ in _code_chunks(source, "preparing: writing ids"):
            out.write(table[codes].astype(dtype).tobytes())
            tokens += len(codes)
    return tokens


def _fresh_meta(source: str, bin_path: Path, meta_path: Path, min_char_count: int, base: CharVocab | None):
    """The metadata of a prepared copy that still matches the source (and settings), else None.
    Size and modification time are checked first; when they moved, the checksum decides."""
    path = Path(source)
    if not (path.is_file() and bin_path.is_file() and meta_path.is_file()):
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        expected_size = meta["tokens"] * np.dtype(meta["dtype"]).itemsize
        same_settings = (meta["format"] == PREPARED_FORMAT and meta["min_char_count"] == min_char_count
                         and (base is None or meta["vocab"][:len(base)] == base.chars))
    except (ValueError, KeyError, TypeError):
        return None
    if not same_settings or bin_path.stat().st_size != expected_size:
        return None
    stat = path.stat()
    if (stat.st_size, stat.st_mtime_ns) == (meta["source_bytes"], meta["source_mtime_ns"]):
        return meta
    if stat.st_size == meta["source_bytes"] and _sha256(path) == meta["source_sha256"]:
        return meta  # touched but not changed
    print(f"{source} changed since it was prepared: preparing it again")
    return None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


# ----------------------------------------------------------------------------------------------
# Chat pairs in byte-level tokens (BPE, GPT-2's): batches of whole pairs, padded


PAD_TARGET = -1  # a target the loss skips (masked_cross_entropy): padding and their side of a pair


def held_out_split(pairs: list[tuple[str, str]], seed: int = 0) -> dict:
    """{"train": ..., "val": ...}: the pairs in pairs_dataset's shuffled order, the last 10% held out."""
    order = list(pairs)
    random.Random(seed).shuffle(order)
    n_val = max(1, round((1 - TRAIN_FRACTION) * len(order))) if len(order) > 1 else 0
    return {"train": order[:len(order) - n_val], "val": order[len(order) - n_val:]}


class PairBatches:
    """Chat pairs for a byte-level tokenizer, drawn as whole pairs: each row of a batch is one pair
    from its first token (never a window that starts inside a pair), right-padded to the longest
    row. The targets are the reply and the END marker only; their words, the markers the model is
    given, and the padding are PAD_TARGET. The markers are special ids (encode_with_specials), so
    nothing typed can produce them.

    Characters keep TextDataset's windows over the concatenated pairs (their tests pin that path);
    subword pairs are short and few, and a window cut mid-pair would teach the model replies
    without their message.
    """

    def __init__(self, pairs: list[tuple[str, str]], vocab, seed: int = 0, laid_out: bool = False,
                 split: dict | None = None):
        self.vocab = vocab
        self.laid_out = laid_out  # each first side is a conversation laid out (run_data.conversation_pairs)
        self.masks = None
        self.prepared = None
        self.pairs = split or held_out_split(pairs, seed)  # split: {"train", "val"} by time (run_data.pairs_split)
        self.rows = {split: [self.encode_pair(a, b) for a, b in ps] for split, ps in self.pairs.items()}
        # splits: all ids of a split in one tensor, for the start-up line's token counts
        self.splits = {split: torch.cat([ids for ids, _ in rows]) if rows else torch.zeros(0, dtype=torch.long)
                       for split, rows in self.rows.items()}
        self.pad_id = self.padding_id()

    def padding_id(self) -> int:
        """Any id: padding is never a target and sits after the END."""
        return self.vocab.specials[END_MARK]

    def encode_pair(self, their: str, mine: str) -> tuple[torch.Tensor, int]:
        """The pair's ids and the index of the first learned token (the reply's first)."""
        # the one prompt layout (chat_format): the conversation before the reply, or their message alone
        given = prompt_ids(self.vocab, *read_laid_out(their)) if self.laid_out else prompt_ids(self.vocab, their)
        learned = self.vocab.encode(mine) + [self.vocab.specials[END_MARK]]
        return torch.tensor(given + learned, dtype=torch.long), len(given)

    def fitted(self, ids: torch.Tensor, first_learned: int, block_size: int) -> tuple[torch.Tensor, int]:
        """A pair cut to block_size + 1 tokens from the left (the oldest words of their message go
        first, the reply stays; a reply longer than the context keeps its end, with the END)."""
        cut = max(0, len(ids) - (block_size + 1))
        return ids[cut:], max(1, first_learned - cut)

    def batch_from(self, rows: list[tuple[torch.Tensor, int]], block_size: int):
        """x, y of the given pairs: row i is pair i, padded on the right with PAD_TARGET targets."""
        fitted = [self.fitted(ids, first, block_size) for ids, first in rows]
        width = max(len(ids) for ids, _ in fitted) - 1
        x = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        y = torch.full((len(rows), width), PAD_TARGET, dtype=torch.long)
        for i, (ids, first) in enumerate(fitted):
            x[i, :len(ids) - 1] = ids[:-1]
            y[i, first - 1:len(ids) - 1] = ids[first:]  # position t predicts token t+1
        return x, y

    def get_batch(self, split: str, batch_size: int, block_size: int,
                  generator: torch.Generator | None = None, device: str = "cpu", rank: int = 0, world_size: int = 1):
        """Random whole pairs (with replacement), as TextDataset.get_batch draws windows: under
        torchrun every process draws the same global batch and keeps its own slice."""
        rows = self.rows[split]
        picks = torch.randint(len(rows), (batch_size * world_size,), generator=generator)
        picks = picks[rank * batch_size:(rank + 1) * batch_size].tolist()
        x, y = self.batch_from([rows[i] for i in picks], block_size)
        return x.to(device), y.to(device)

    def bytes_per_token(self, split: str) -> float:
        """UTF-8 bytes per learned token: the replies' bytes, the END marker counted as one byte (as
        the character model's END character is), over the reply + END tokens. The loss is a mean
        over those tokens, so loss / ln 2 / this is bits per byte of the replies, comparable with a
        character model trained on the same pairs."""
        pairs, rows = self.pairs[split], self.rows[split]
        reply_bytes = sum(len(mine.encode("utf-8")) + 1 for _, mine in pairs)
        learned = sum(len(ids) - first for ids, first in rows)
        return reply_bytes / max(1, learned)

    def check_fits(self, block_size: int) -> None:
        """Any pair fits (fitted() cuts it); there must be pairs to train on and to hold out."""
        if not self.rows["train"] or not self.rows["val"]:
            raise UserError(f"chat pairs: {len(self.rows['train']) + len(self.rows['val'])} pair(s) is too few: "
                            "training needs at least 2 (the last 10% are held out for val).")
