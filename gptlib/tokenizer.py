"""Tokenizers: text <-> ids. Characters stay the default; byte-level BPE is trained on your text or
read from GPT-2's files.

    python gpt_final_version.py                                  # characters (65 for tiny-shakespeare)
    python gpt_final_version.py --tokenizer=bpe --vocab_size=512 # BPE trained on the training split
    python gpt_final_version.py --tokenizer=gpt2                 # GPT-2's 50,257 tokens (files in data/gpt2/)

Every tokenizer has the same face: encode(text) -> ids, decode(ids) -> text, len() (the vocabulary
size), `specials` (name -> id), and state() -> a plain dict that travels in the checkpoint
(from_state() rebuilds it, so checkpoints still load with torch.load(weights_only=True)).

How byte-level BPE works, in three steps a learner can follow in this file:
  1. the text is cut into chunks with GPT-2's regular expression (words with their leading space,
     numbers, punctuation, whitespace): merges never cross a chunk, so " the" is learned once;
  2. each chunk is its UTF-8 bytes, ids 0..255: any text at all can be encoded, no unknown token;
  3. training repeats: count adjacent pairs of ids over all chunks, merge the most frequent pair
     into a new id. Encoding replays the merges, earliest learned first.

Special tokens (the chat markers, GPT-2's <|endoftext|>) get ids after the merges. encode() never
produces them, whatever the text says; encode_with_specials() is for laying out training data.

Sections: loading the optional `regex` package / characters / byte-level BPE (encoding, the two
trainers) / GPT-2's files / checkpoints / streaming decoder / timing.
Imports nothing of ours but config, so corpus, train and model_handler can all use it.
"""
from __future__ import annotations

import codecs
import heapq
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gptlib.byte_level import bytes_to_unicode
from gptlib.chat_format import CHAT_MARKERS, END_MARK, INPUT_MARK, OUTPUT_MARK  # noqa: F401 (the specials)
from gptlib.errors import UserError

# GPT-2's pre-split: contractions, optionally space-led runs of letters, of digits, of other symbols,
# then whitespace (a run of spaces keeps its last one for the next word). tiktoken's "gpt2" uses it too.
GPT2_SPLIT_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
ENDOFTEXT = "<|endoftext|>"
# The chat layout's markers (gptlib/chat_format.py) are control characters: a character model already
# has them as characters; a BPE model gets one special id each.

INSTALL_HINT = "pip install -r requirements-pretrained.txt (it holds the `regex` package)"
KINDS = ("char", "bpe", "gpt2")


# ----------------------------------------------------------------------------------------------
# The optional `regex` package: Python's `re` has no \p{L} (any letter) or \p{N} (any digit)


def split_pattern():
    """GPT-2's pre-split, compiled; a missing `regex` package is one clear line, not a traceback.
    Imported here, not at the top: character models never need it."""
    try:
        import regex
    except ImportError:
        raise UserError(f"byte-level BPE tokenizers need the `regex` package: {INSTALL_HINT}") from None
    return regex.compile(GPT2_SPLIT_PATTERN)


# ----------------------------------------------------------------------------------------------
# Characters: one id per distinct character of the text, in sorted order (the lecture's vocabulary)


class CharTokenizer:
    """The sorted set of characters in the text; a character's id is its index."""

    kind = "char"

    def __init__(self, chars):
        self.chars = list(chars)
        self.index = {ch: i for i, ch in enumerate(self.chars)}

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        return cls(sorted(set(text)))

    def __len__(self) -> int:
        return len(self.chars)

    @property
    def specials(self) -> dict[str, int]:
        """The chat markers this vocabulary has (a model trained on chat pairs has all three)."""
        return {mark: self.index[mark] for mark in CHAT_MARKERS if mark in self.index}

    def encode(self, text: str) -> list[int]:
        self.check(text)
        return [self.index[ch] for ch in text]

    encode_with_specials = encode  # the markers are characters already

    def can_encode(self, text: str) -> bool:
        return set(text) <= self.index.keys()

    def check(self, text: str) -> None:
        missing = sorted(set(text) - self.index.keys())
        if missing:
            shown = ", ".join(repr(ch) for ch in missing[:10])
            raise UserError(f"character(s) {shown} are not in the model's vocabulary of {len(self)} characters; remove or replace them.")

    def encode_to_tensor(self, text: str, slice_chars: int = 1 << 22) -> torch.Tensor:
        """encode(text) as a tensor of the compact dtype, filled a slice at a time through a lookup
        table: a Python list of ids costs 8 bytes a character, 11 times a 100 MB text at its peak."""
        self.check(text)
        dtype = compact_dtype(len(self))
        table = np.zeros(max(map(ord, self.chars), default=0) + 1, dtype=torch.empty(0, dtype=dtype).numpy().dtype)
        table[[ord(ch) for ch in self.chars]] = np.arange(len(self.chars))
        ids = np.empty(len(text), dtype=table.dtype)
        for start in range(0, len(text), slice_chars):
            piece = text[start:start + slice_chars].encode("utf-32-le", "surrogatepass")
            ids[start:start + slice_chars] = table[np.frombuffer(piece, dtype=np.uint32)]
        return torch.from_numpy(ids)

    def decode(self, ids) -> str:
        return "".join(self.chars[i] for i in ids)

    def token_bytes(self, token: int) -> bytes:
        return self.chars[token].encode("utf-8", "surrogatepass")

    def state(self) -> dict:
        return {"kind": self.kind, "chars": list(self.chars)}


def compact_dtype(vocab_size: int) -> torch.dtype:
    """The smallest integer type that holds every id: a 1 MB corpus stays 1 MB in memory."""
    return torch.uint8 if vocab_size <= 256 else torch.int16 if vocab_size <= 32767 else torch.int32


# ----------------------------------------------------------------------------------------------
# Byte-level BPE: bytes, merges, specials


class BytePairTokenizer:
    """Ids for bytes, merges of two ids into a new one (earliest merge applied first), specials.

    `byte_ids[b]` is the id of byte b (0..255 for ours; GPT-2 numbers its bytes in another order),
    `merges` lists (left, right, new) in the order they were learned, `specials` maps name -> id.
    """

    kind = "bpe"

    def __init__(self, merges, specials: dict[str, int] | None = None, byte_ids=None):
        self.byte_ids = list(range(256)) if byte_ids is None else list(byte_ids)
        self.merges = [tuple(merge) for merge in merges]
        self.specials = dict(specials or {})
        self.rank = {(left, right): (rank, new) for rank, (left, right, new) in enumerate(self.merges)}
        size = max([*self.byte_ids, *(new for _, _, new in self.merges), *self.specials.values()]) + 1
        self.pieces: list[bytes] = [b""] * size  # the bytes each id stands for (specials: their name)
        for byte, token in enumerate(self.byte_ids):
            self.pieces[token] = bytes([byte])
        for left, right, new in self.merges:
            self.pieces[new] = self.pieces[left] + self.pieces[right]
        for name, token in self.specials.items():
            self.pieces[token] = name.encode("utf-8")
        self.pattern = split_pattern()
        self.cache: dict[str, list[int]] = {}  # chunk -> ids: words repeat, so most chunks are looked up

    def __len__(self) -> int:
        return len(self.pieces)

    def encode(self, text: str) -> list[int]:
        """Ordinary text only: a special's name in the text is encoded as the bytes it is made of."""
        ids = []
        for chunk in self.pattern.findall(text):
            if chunk not in self.cache:
                self.cache[chunk] = self.encode_chunk(chunk.encode("utf-8", "surrogatepass"))
            ids.extend(self.cache[chunk])
        return ids

    def encode_with_specials(self, text: str) -> list[int]:
        """Text in which the names of the special tokens stand for them (to lay out training data)."""
        ids, rest = [], text
        while rest:
            found = [(rest.find(name), name) for name in self.specials if name in rest]
            if not found:
                return ids + self.encode(rest)
            at, name = min(found, key=lambda hit: (hit[0], -len(hit[1])))
            ids += self.encode(rest[:at]) + [self.specials[name]]
            rest = rest[at + len(name):]
        return ids

    def encode_chunk(self, raw: bytes) -> list[int]:
        """Replay the merges: while some adjacent pair has been merged in training, merge the one
        learned earliest, everywhere in the chunk."""
        ids = [self.byte_ids[b] for b in raw]
        while len(ids) > 1:
            pairs = {pair: self.rank[pair] for pair in zip(ids, ids[1:]) if pair in self.rank}
            if not pairs:
                break
            pair = min(pairs, key=pairs.get)
            ids = merge_pair(ids, pair, pairs[pair][1])
        return ids

    def can_encode(self, text: str) -> bool:
        return True  # any text is bytes

    def encode_to_tensor(self, text: str) -> torch.Tensor:
        return torch.tensor(self.encode(text), dtype=compact_dtype(len(self)))

    def check(self, text: str) -> None:
        pass

    def decode_bytes(self, ids) -> bytes:
        return b"".join(self.pieces[i] for i in ids)

    def decode(self, ids) -> str:
        """Text of the ids; a byte sequence cut inside a character (a sample's last token) shows as \ufffd."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def token_bytes(self, token: int) -> bytes:
        return self.pieces[token]

    def state(self) -> dict:
        state = {"kind": self.kind, "merges": [x for merge in self.merges for x in merge], "specials": dict(self.specials)}
        if self.byte_ids != list(range(256)):
            state["byte_ids"] = list(self.byte_ids)
        return state


def merge_pair(ids: list[int], pair: tuple[int, int], new: int) -> list[int]:
    """`ids` with every occurrence of `pair`, left to right and not overlapping, replaced by `new`."""
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
            out.append(new)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


class ByteBPE(BytePairTokenizer):
    """Byte-level BPE trained on the user's text; the chat markers are its special tokens."""

    @classmethod
    def train(cls, text: str, vocab_size: int, fast: bool = True, verbose: bool = False) -> ByteBPE:
        """256 bytes + merges + the chat markers = vocab_size ids (fewer if the text runs out of pairs)."""
        n_merges = vocab_size - 256 - len(CHAT_MARKERS)
        if n_merges < 0:
            raise UserError(f"--vocab_size={vocab_size} is too small for byte-level BPE: it needs at least "
                            f"{256 + len(CHAT_MARKERS)} (256 bytes + {len(CHAT_MARKERS)} chat markers); try --vocab_size=512.")
        chunks = chunk_counts(text)
        merges = (train_merges_fast if fast else train_merges_readable)(chunks, n_merges, verbose)
        first_special = 256 + len(merges)
        return cls(merges, {mark: first_special + i for i, mark in enumerate(CHAT_MARKERS)})


def chunk_counts(text: str) -> dict[tuple[int, ...], int]:
    """How often each distinct pre-split chunk occurs, as a tuple of its bytes. Counting pairs over
    distinct chunks (weighted) is what makes training bearable: tiny-shakespeare has 300,000 chunks,
    fewer than 30,000 of them distinct."""
    counts = Counter(split_pattern().findall(text))
    return {tuple(chunk.encode("utf-8", "surrogatepass")): n for chunk, n in counts.items()}


def most_frequent(pair_counts: dict) -> tuple[int, int] | None:
    """The pair seen most often; on a tie, the smallest pair of ids, so training is deterministic."""
    best = min(pair_counts.items(), key=lambda item: (-item[1], item[0]), default=None)
    return None if best is None or best[1] <= 0 else best[0]


def train_merges_readable(chunks: dict, n_merges: int, verbose: bool = False) -> list[tuple[int, int, int]]:
    """The textbook loop: count every adjacent pair in every chunk, merge the most frequent, repeat.
    Each merge recounts everything, so it is slow: 253 merges of tiny-shakespeare take about 9 s."""
    words = {tuple(chunk): n for chunk, n in chunks.items()}
    merges = []
    for step in range(n_merges):
        pair_counts = Counter()
        for word, n in words.items():
            for pair in zip(word, word[1:]):
                pair_counts[pair] += n
        pair = most_frequent(pair_counts)
        if pair is None:  # every chunk is a single token: nothing left to merge
            break
        new = 256 + step
        merges.append((*pair, new))
        words = {tuple(merge_pair(list(word), pair, new)): n for word, n in words.items()}
        if verbose:
            print(f"merge {step + 1}/{n_merges}: {pair} -> {new} ({pair_counts[pair]} times)")
    return merges


def train_merges_fast(chunks: dict, n_merges: int, verbose: bool = False) -> list[tuple[int, int, int]]:
    """The same merges as train_merges_readable (a test proves it), without recounting: the pair
    counts are kept up to date, only the chunks that hold the merged pair are revisited, and a heap
    gives the most frequent pair (stale heap entries are skipped when popped)."""
    words = [list(chunk) for chunk in chunks]
    weights = list(chunks.values())
    pair_counts: Counter = Counter()
    where: dict[tuple[int, int], set[int]] = {}  # pair -> the chunks that hold it
    for i, word in enumerate(words):
        for pair in zip(word, word[1:]):
            pair_counts[pair] += weights[i]
            where.setdefault(pair, set()).add(i)
    heap = [(-n, pair) for pair, n in pair_counts.items()]
    heapq.heapify(heap)
    merges = []
    while len(merges) < n_merges and heap:
        negative, pair = heapq.heappop(heap)
        if pair_counts.get(pair, 0) != -negative or negative == 0:
            continue  # an outdated count: the current one is elsewhere in the heap
        new = 256 + len(merges)
        merges.append((*pair, new))
        changed = set()
        for i in where.pop(pair, ()):
            old = words[i]
            for p in zip(old, old[1:]):
                pair_counts[p] -= weights[i]
                changed.add(p)
            words[i] = merge_pair(old, pair, new)
            for p in zip(words[i], words[i][1:]):
                pair_counts[p] += weights[i]
                where.setdefault(p, set()).add(i)
                changed.add(p)
        for p in changed:
            if pair_counts[p] > 0:
                heapq.heappush(heap, (-pair_counts[p], p))
            else:
                del pair_counts[p]
        if verbose:
            print(f"merge {len(merges)}/{n_merges}: {pair} -> {new} ({-negative} times)")
    return merges


# ----------------------------------------------------------------------------------------------
# GPT-2's own tokenizer, from its files


class GPT2Tokenizer(BytePairTokenizer):
    """GPT-2's 50,000 merges and <|endoftext|> (id 50256): the same ids as tiktoken's "gpt2"."""

    kind = "gpt2"

    @classmethod
    def from_directory(cls, directory: str) -> GPT2Tokenizer:
        """encoder.json + vocab.bpe (OpenAI's names), vocab.json + merges.txt (the hub's), or tokenizer.json."""
        folder = Path(directory)
        for vocab_name, merges_name in (("encoder.json", "vocab.bpe"), ("vocab.json", "merges.txt")):
            if (folder / vocab_name).is_file() and (folder / merges_name).is_file():
                encoder = json.loads((folder / vocab_name).read_text(encoding="utf-8"))
                lines = (folder / merges_name).read_text(encoding="utf-8").splitlines()
                merges = [line.split(" ") for line in lines if line and not line.startswith("#version")]
                return cls.from_tables(encoder, merges, {ENDOFTEXT: encoder.get(ENDOFTEXT, len(encoder))})
        if (folder / "tokenizer.json").is_file():
            return cls.from_tokenizer_json(folder / "tokenizer.json")
        raise UserError(f"no GPT-2 tokenizer files in {directory!r}: it needs encoder.json + vocab.bpe, "
                        "vocab.json + merges.txt, or tokenizer.json (pass --tokenizer_dir=DIR).")

    @classmethod
    def from_tokenizer_json(cls, path: Path) -> GPT2Tokenizer:
        """Hugging Face's one-file form: model.vocab, model.merges ("a b" or ["a", "b"]), added_tokens."""
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        model = data.get("model", {})
        if model.get("type", "BPE") != "BPE" or "vocab" not in model:
            raise UserError(f"{path} is not a byte-level BPE tokenizer (model.type {model.get('type')!r}).")
        merges = [m.split(" ") if isinstance(m, str) else m for m in model.get("merges", [])]
        specials = {t["content"]: t["id"] for t in data.get("added_tokens", []) if t.get("special", True)}
        return cls.from_tables(model["vocab"], merges, specials)

    @classmethod
    def from_tables(cls, encoder: dict[str, int], merges: list, specials: dict[str, int]) -> GPT2Tokenizer:
        """Translate GPT-2's tables, written in its printable stand-ins for bytes, into ids."""
        stand_in = bytes_to_unicode()
        try:
            byte_ids = [encoder[stand_in[b]] for b in range(256)]
            id_merges = [(encoder[left], encoder[right], encoder[left + right]) for left, right in merges]
        except (KeyError, ValueError, TypeError) as err:
            raise UserError(f"GPT-2's tokenizer files do not fit together (the merges name {err}, which the "
                            "vocabulary lacks): use the encoder.json and vocab.bpe of one release.") from None
        return cls(id_merges, specials, byte_ids)


# ----------------------------------------------------------------------------------------------
# Checkpoints


def with_chat_markers(tokens):
    """A byte-level tokenizer that has the chat markers as special ids: itself when it has them
    (ByteBPE trained here, a chat checkpoint's), else a copy with three ids appended after its last
    (GPT-2: 50257-50259). Appended, so every id GPT-2's weights know keeps its meaning; the model's
    embedding grows by as many rows (train.extend_vocab_rows). encode() never yields a special,
    so typed text cannot forge a turn."""
    if all(mark in tokens.specials for mark in CHAT_MARKERS):
        return tokens
    first = len(tokens)
    added = {mark: first + i for i, mark in enumerate(m for m in CHAT_MARKERS if m not in tokens.specials)}
    return type(tokens)(tokens.merges, {**tokens.specials, **added}, tokens.byte_ids)


def from_state(state: dict):
    """The tokenizer a checkpoint's "tokenizer" entry describes (see each class's state())."""
    kind = state.get("kind")
    if kind == "char":
        return CharTokenizer(state["chars"])
    if kind in ("bpe", "gpt2"):
        flat = state["merges"]
        merges = [tuple(flat[i:i + 3]) for i in range(0, len(flat), 3)]
        return (ByteBPE if kind == "bpe" else GPT2Tokenizer)(merges, state["specials"], state.get("byte_ids"))
    if kind == "hub":  # a pretrained model's own tokenizer (the `tokenizers` library)
        from gptlib.hf_tokenizer import HubTokenizer
        return HubTokenizer.from_state(state)
    raise UserError(f"unknown tokenizer kind {kind!r} in the checkpoint; known: {', '.join(KINDS)}.")


def from_checkpoint(checkpoint: dict):
    """A checkpoint's tokenizer; checkpoints from before tokenizers have only their "vocab" of characters."""
    if "tokenizer" in checkpoint:
        return from_state(checkpoint["tokenizer"])
    return CharTokenizer(checkpoint["vocab"])


# ----------------------------------------------------------------------------------------------
# Showing text as it is generated


class StreamDecoder:
    """Ids in, text out as soon as it is whole: a character whose UTF-8 bytes span two tokens (an
    emoji, often) is held back until its last byte arrives, instead of printing as two \ufffd."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token: int) -> str:
        return self.utf8.decode(self.tokenizer.token_bytes(token))

    def flush(self) -> str:
        """What is still held back (an unfinished character shows as \ufffd)."""
        return self.utf8.decode(b"", final=True)


@dataclass
class Completion:
    text: str  # the generated characters only, without the prompt or the end marker
    finish_reason: str  # "stop": the model ended its reply; "length": max_new_tokens or the deadline
    prompt_tokens: int  # tokens of context the model read (the chat layout's markers included)
    completion_tokens: int = 0  # tokens the model generated (what an OpenAI client is billed as usage)


class TextStream:
    """A reply as it is made: iterating gives each piece of text as soon as the engine samples it;
    completion() finishes it (wherever the iteration stopped) and gives the whole. One pass only.
    A character whose bytes span two tokens (an emoji, with BPE) comes out whole, once complete."""

    def __init__(self, tokens, vocab, prompt_tokens: int):
        self.tokens, self.vocab, self.prompt_tokens = tokens, vocab, prompt_tokens
        self.generated = 0  # tokens taken from the engine so far
        self.pieces: list[str] = []
        self._pieces = self._decode()

    def _decode(self):
        text = StreamDecoder(self.vocab)
        for token in self.tokens:
            self.generated += 1
            piece = text.push(token)
            if piece:
                self.pieces.append(piece)
                yield piece
        if rest := text.flush():
            self.pieces.append(rest)
            yield rest

    def __iter__(self):
        return self._pieces

    def completion(self) -> Completion:
        for _ in self._pieces:
            pass
        return Completion("".join(self.pieces), self.tokens.finish_reason, self.prompt_tokens, self.generated)
