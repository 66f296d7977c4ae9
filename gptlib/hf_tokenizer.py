"""A pretrained model's own tokenizer, read from the hub's files with the `tokenizers` library.

    tok = HubTokenizer.from_directory("../shared/data/smollm2-135m-instruct")
    tok.encode("hello")            # plain text: typed special-token strings stay text
    tok.encode_with_specials(s)    # rendered chat templates: <|im_end|> becomes its id

From tokenizer.json when the directory has one; otherwise the same byte-level BPE is built from
vocab.json + merges.txt, with the special tokens of tokenizer_config.json's added_tokens_decoder.
state() is a plain dict (the tokenizer JSON as a string, the special-token facts), so a checkpoint
holding it loads with torch.load(weights_only=True).
Imports nothing of ours but gptlib/errors.py.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path

import torch

from gptlib.byte_level import bytes_to_unicode
from gptlib.errors import UserError

# Qwen2's pre-split pattern (as its tokenizer class defines it): GPT-2's, but digits one by one and
# letters may follow one punctuation mark.
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def tokenizers_library():
    try:
        import tokenizers
    except ImportError as error:
        raise UserError("pretrained tokenizers need the `tokenizers` package: pip install -r requirements-pretrained.txt") from error
    return tokenizers


def read_json(path: Path, what: str) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise UserError(f"{path}: cannot read {what} ({error}); download the model's files again.") from error


class HubTokenizer:
    """The protocol of gptlib/tokenizer.py's classes over a `tokenizers.Tokenizer`."""

    kind = "hub"

    def __init__(self, tokenizer_json: str, config: dict, eos_ids: list[int] | None = None,
                 vocab_size_hint: int | None = None, source: str = "tokenizer.json"):
        lib = tokenizers_library()
        try:
            self.backend = lib.Tokenizer.from_str(tokenizer_json)
        except Exception as error:  # the library raises its own Exception subclass
            raise UserError(f"{source}: not a tokenizer the `tokenizers` library can read ({error}); "
                            "download the model's files again.") from error
        # a second copy that reads special-token strings as text (transformers' split_special_tokens)
        self.text_backend = lib.Tokenizer.from_str(tokenizer_json)
        self.text_backend.encode_special_tokens = True
        self.tokenizer_json = tokenizer_json
        self.config = config  # tokenizer_config.json (chat_template included)
        self.specials = {t.content: i for i, t in self.backend.get_added_tokens_decoder().items() if t.special}
        self.bos_token = token_text(config.get("bos_token"))
        self.eos_token = token_text(config.get("eos_token"))
        ids = list(eos_ids or [])
        if self.eos_token in self.specials and self.specials[self.eos_token] not in ids:
            ids.insert(0, self.specials[self.eos_token])
        self.eos_ids = ids  # stop tokens: the end of turn and the end of text
        self.vocab_size_hint = vocab_size_hint
        self.vocab_size = self.backend.get_vocab_size(with_added_tokens=True)

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_directory(cls, directory) -> HubTokenizer:
        folder = Path(directory)
        if not folder.is_dir():
            raise UserError(f"{folder}: no such directory; give the folder holding the model's tokenizer files.")
        config_path = folder / "tokenizer_config.json"
        config = read_json(config_path, "the tokenizer's settings") if config_path.exists() else {}
        if (folder / "tokenizer.json").exists():
            text = (folder / "tokenizer.json").read_text(encoding="utf-8")
            source = str(folder / "tokenizer.json")
        elif (folder / "vocab.json").exists() and (folder / "merges.txt").exists():
            text = bpe_from_vocab_and_merges(folder, config)
            source = str(folder / "vocab.json")
        else:
            raise UserError(f"{folder}: no tokenizer.json, nor vocab.json + merges.txt; download the model's "
                            "tokenizer files into this folder.")
        eos = []
        if (folder / "generation_config.json").exists():
            value = read_json(folder / "generation_config.json", "the generation settings").get("eos_token_id")
            eos = [value] if isinstance(value, int) else list(value or [])
        hint = None
        if (folder / "config.json").exists():
            hint = read_json(folder / "config.json", "the model's settings").get("vocab_size")
        tok = cls(text, config, eos, hint, source)
        if hint == len(tok):
            tok.vocab_size_hint = None
        return tok

    @classmethod
    def from_state(cls, state: dict) -> HubTokenizer:
        return cls(state["tokenizer_json"], json.loads(state["config"]), state["eos_ids"],
                   state.get("vocab_size_hint"), "the checkpoint's tokenizer")

    def state(self) -> dict:
        return {"kind": self.kind, "tokenizer_json": self.tokenizer_json, "config": json.dumps(self.config),
                "eos_ids": list(self.eos_ids), "vocab_size_hint": self.vocab_size_hint}

    # ------------------------------------------------------------------ the protocol
    def __len__(self) -> int:
        return self.vocab_size

    def encode(self, text: str) -> list[int]:
        """Plain text: a special token's string typed by a user stays text, so no one forges a turn."""
        return self.encode_ordinary(text)

    def encode_ordinary(self, text: str) -> list[int]:
        """The text's ids, a special token's string read as the characters it is made of (the ids
        transformers gives with split_special_tokens=True)."""
        return self.text_backend.encode(text, add_special_tokens=False).ids if text else []

    def encode_with_specials(self, text: str) -> list[int]:
        """Rendered templates: special-token strings become their ids, as transformers does."""
        return self.backend.encode(text, add_special_tokens=False).ids

    def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        encoding = self.backend.encode(text, add_special_tokens=False)
        return encoding.ids, encoding.offsets

    def can_encode(self, text: str) -> bool:
        return True  # byte-level: every text has tokens

    def check(self, text: str) -> None:
        return None

    def encode_to_tensor(self, text: str) -> torch.Tensor:
        dtype = torch.int32 if self.vocab_size >= 1 << 15 else torch.int16
        return torch.tensor(self.encode(text), dtype=dtype)

    def decode(self, ids) -> str:
        return self.backend.decode([int(i) for i in ids], skip_special_tokens=False)

    def token_bytes(self, token: int) -> bytes:
        """The raw bytes of one token (a byte-level token may hold half a character)."""
        piece = self.backend.id_to_token(int(token))
        if piece is None:
            return b""
        if int(token) in self.specials.values():
            return piece.encode("utf-8")
        table = byte_of_stand_in()
        if all(c in table for c in piece):
            return bytes(table[c] for c in piece)
        return piece.encode("utf-8")


@functools.cache
def byte_of_stand_in() -> dict[str, int]:
    """Each of ByteLevel's printable stand-ins (GPT-2's alphabet) -> the byte it stands for; built once."""
    return {c: b for b, c in enumerate(bytes_to_unicode())}


def token_text(value) -> str | None:
    """tokenizer_config.json writes a token as a string or as {"content": ...}."""
    if isinstance(value, dict):
        return value.get("content")
    return value


def bpe_from_vocab_and_merges(folder: Path, config: dict) -> str:
    """The tokenizer.json a Qwen2/GPT-2 style vocab.json + merges.txt describes."""
    lib = tokenizers_library()
    vocab = read_json(folder / "vocab.json", "the vocabulary")
    lines = (folder / "merges.txt").read_text(encoding="utf-8").splitlines()
    merges = [tuple(line.split(" ")) for line in lines if line and not line.startswith("#version")]
    if any(len(m) != 2 for m in merges):
        raise UserError(f"{folder / 'merges.txt'}: each line must be two tokens; download the file again.")
    model = lib.models.BPE(vocab=vocab, merges=merges, unk_token=None, fuse_unk=False, byte_fallback=False)
    tok = lib.Tokenizer(model)
    qwen = "qwen" in str(config.get("tokenizer_class", "")).lower()
    if qwen:
        tok.normalizer = lib.normalizers.NFC()
        tok.pre_tokenizer = lib.pre_tokenizers.Sequence([
            lib.pre_tokenizers.Split(lib.Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
            lib.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    else:
        tok.pre_tokenizer = lib.pre_tokenizers.ByteLevel(add_prefix_space=bool(config.get("add_prefix_space")))
    tok.decoder = lib.decoders.ByteLevel()
    added = sorted(config.get("added_tokens_decoder", {}).items(), key=lambda kv: int(kv[0]))
    for index, entry in added:
        token = lib.AddedToken(entry["content"], single_word=entry.get("single_word", False),
                               lstrip=entry.get("lstrip", False), rstrip=entry.get("rstrip", False),
                               normalized=entry.get("normalized", False), special=entry.get("special", True))
        tok.add_special_tokens([token]) if entry.get("special", True) else tok.add_tokens([token])
        if tok.token_to_id(entry["content"]) != int(index):
            raise UserError(f"{folder / 'tokenizer_config.json'}: added token {entry['content']!r} should have id "
                            f"{index}; the vocabulary does not match; download the files again.")
    return tok.to_str()
