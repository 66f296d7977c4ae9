"""Our own tokenizers (characters, the BPE trained here, GPT-2's with the chat markers) as the files
other tools read: a Hugging Face tokenizer.json built with the `tokenizers` library, a
tokenizer_config.json with the chat layout as a Jinja chat template, and the token table GGUF
holds. Each encodes exactly as ours does (tests/test_export_hf.py, tests/test_export_gguf.py).

    characters  -> a BPE with no merges: every character is a token, nothing is split or joined
    byte-level  -> GPT-2's form: tokens written in its printable stand-ins for bytes, our merges
                   in the order they were learned, the same pre-split, the markers as special tokens
"""
from __future__ import annotations

import json

from gptlib.byte_level import bytes_to_unicode
from gptlib.chat_format import CHAT_MARKERS, END_MARK, INPUT_MARK, OUTPUT_MARK
from gptlib.errors import UserError
from gptlib.hf_tokenizer import tokenizers_library
from gptlib.tokenizer import ENDOFTEXT, GPT2_SPLIT_PATTERN

# The chat layout of gptlib/chat_format.py as a chat template: the others' messages between two of
# mine make one side, each speaker's line named in a group ("Ana: ..."), one speaker's consecutive
# messages joined by " | "; a reply with no message before it and system messages are not trained
# on, so they are left out, as openai_exchanges leaves them.
MARKERS_TEMPLATE = (
    "{%- set ns = namespace(side=false, speaker=none) -%}"
    "{%- for message in messages -%}"
    "{%- if message.role == 'user' -%}"
    "{%- set name = message.name if message.name is defined and message.name and message.name.strip() else none -%}"
    "{%- if not ns.side -%}" + INPUT_MARK + "{{ name ~ ': ' if name }}{{ message.content }}"
    "{%- elif name == ns.speaker -%}{{ ' | ' ~ message.content }}"
    "{%- else -%}{{ '\\n' }}{{ name ~ ': ' if name }}{{ message.content }}{%- endif -%}"
    "{%- set ns.side = true -%}{%- set ns.speaker = name -%}"
    "{%- elif message.role == 'assistant' and ns.side -%}"
    + OUTPUT_MARK + "{{ message.content }}" + END_MARK + "{%- set ns.side = false -%}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '" + INPUT_MARK + "' if not ns.side }}" + OUTPUT_MARK + "{%- endif -%}")


def is_chat_vocab(vocab) -> bool:
    """A vocabulary trained on chat pairs has all three markers."""
    return all(mark in vocab.specials for mark in CHAT_MARKERS)


def tokenizer_json(vocab) -> str:
    """tokenizer.json for one of our tokenizers."""
    lib = tokenizers_library()
    if vocab.kind == "char":
        tok = lib.Tokenizer(lib.models.BPE(vocab={ch: i for i, ch in enumerate(vocab.chars)}, merges=[]))
        tok.decoder = lib.decoders.Fuse()  # join the characters, with no space between
    else:
        tokens = byte_level_tokens(vocab)
        merges = [(tokens[left], tokens[right]) for left, right, _ in vocab.merges]
        normal = {token: i for i, token in enumerate(tokens) if i not in vocab.specials.values()}
        tok = lib.Tokenizer(lib.models.BPE(vocab=normal, merges=merges, fuse_unk=False, byte_fallback=False))
        tok.pre_tokenizer = lib.pre_tokenizers.Sequence([
            lib.pre_tokenizers.Split(lib.Regex(GPT2_SPLIT_PATTERN), behavior="isolated"),
            lib.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        tok.decoder = lib.decoders.ByteLevel()
    for name, token in sorted(vocab.specials.items(), key=lambda item: item[1]):
        tok.add_special_tokens([lib.AddedToken(name, normalized=False, special=True)])
        if tok.token_to_id(name) != token:
            raise UserError(f"the special token {name!r} would get id {tok.token_to_id(name)} instead of {token}; "
                            "this tokenizer cannot be exported.")
    return tok.to_str()


def byte_level_tokens(vocab) -> list[str]:
    """Each id's token in GPT-2's printable stand-ins for bytes (a special: its name); two ids with
    the same bytes (BPE can learn one piece twice) would be one token elsewhere, so are refused."""
    stand_in = bytes_to_unicode()
    specials = {token: name for name, token in vocab.specials.items()}
    tokens = [specials.get(i) or "".join(stand_in[b] for b in vocab.token_bytes(i)) for i in range(len(vocab))]
    if len(set(tokens)) != len(tokens):
        twice = sorted({t for t in tokens if tokens.count(t) > 1})[:3]
        raise UserError(f"the tokenizer has two ids for the same bytes ({', '.join(map(repr, twice))}); "
                        "tools that look tokens up by text cannot tell them apart, so it cannot be exported.")
    return tokens


def end_ids(vocab) -> list[int]:
    """Where a generation ends: a hub model's own end tokens; ours: a chat model's end-of-reply
    marker, and GPT-2's end of text."""
    if vocab.kind == "hub":
        return list(vocab.eos_ids)
    ids = [vocab.specials[END_MARK]] if is_chat_vocab(vocab) else []
    return ids + ([vocab.specials[ENDOFTEXT]] if ENDOFTEXT in vocab.specials else [])


def tokenizer_config(vocab, block_size: int) -> dict:
    """tokenizer_config.json: the fast tokenizer class, no clean-up of spaces (ours has none), the
    end token and, for a chat model, the chat template of our layout."""
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "clean_up_tokenization_spaces": False,
              "model_max_length": block_size, "add_bos_token": False, "add_eos_token": False}
    ends = end_ids(vocab)
    if ends:
        names = {token: name for name, token in vocab.specials.items()}
        config["eos_token"] = names[ends[0]]
    if is_chat_vocab(vocab):
        config["chat_template"] = MARKERS_TEMPLATE
    return config


def tokenizer_files(vocab, block_size: int) -> dict[str, str]:
    """File name -> text: tokenizer.json and tokenizer_config.json for our tokenizer."""
    config = json.dumps(tokenizer_config(vocab, block_size), indent=2, ensure_ascii=False)
    return {"tokenizer.json": tokenizer_json(vocab), "tokenizer_config.json": config + "\n"}
