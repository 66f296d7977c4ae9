"""How long the tokenizers take on a corpus: the readable and the fast BPE trainer, encoding, GPT-2's encoder.

    python -m benchmarks.tokenizers [--data=data/tinyshakespeare/input.txt] [--vocab_size=512] [--gpt2=data/gpt2]
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from gptlib import cli, tokenizer
from gptlib.errors import UserError, run_cli

USAGE = "usage: python -m benchmarks.tokenizers [--data=PATH] [--vocab_size=512] [--gpt2=DIR]"


@dataclass
class TimingConfig:
    data: str = "data/tinyshakespeare/input.txt"  # the text to train on and encode
    vocab_size: int = 512  # the BPE vocabulary to train
    gpt2: str = "data/gpt2"  # GPT-2's tokenizer files; skipped when the folder is missing


def time_tokenizers(data: str, vocab_size: int, gpt2_dir: str) -> None:
    text = Path(data).read_text(encoding="utf-8")
    print(f"{data}: {len(text):,} characters, {len(text.encode('utf-8')):,} bytes")
    for fast in (False, True):
        started = time.perf_counter()
        bpe = tokenizer.ByteBPE.train(text, vocab_size, fast=fast)
        print(f"train BPE {'fast' if fast else 'readable'}: vocab {len(bpe)} in {time.perf_counter() - started:.2f} s")
    started = time.perf_counter()
    ids = bpe.encode(text)
    print(f"encode with the trained BPE: {len(ids):,} tokens in {time.perf_counter() - started:.2f} s")
    if Path(gpt2_dir).is_dir():
        started = time.perf_counter()
        gpt2 = tokenizer.GPT2Tokenizer.from_directory(gpt2_dir)
        loaded = time.perf_counter() - started
        cut = int(0.9 * len(text))
        started = time.perf_counter()
        train_ids, val_ids = gpt2.encode(text[:cut]), gpt2.encode(text[cut:])
        print(f"GPT-2: loaded in {loaded:.2f} s; encoded {len(train_ids):,} train / {len(val_ids):,} val tokens "
              f"in {time.perf_counter() - started:.2f} s")



def main(argv: list[str]) -> None:
    args = cli.parse_args(argv, [TimingConfig])
    if args.help:
        print(cli.help_text([TimingConfig], USAGE, show_presets=False))
        return
    options = cli.apply(TimingConfig(), args.overrides)
    if not Path(options.data).is_file():
        raise UserError(f"no text at {options.data}: pass --data=PATH (train once to download tiny-shakespeare).")
    time_tokenizers(options.data, options.vocab_size, options.gpt2)


if __name__ == "__main__":
    run_cli(main)
