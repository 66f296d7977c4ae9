"""The bigram baseline from the lecture: each character predicts the next from a lookup table.

    python bigram.py                       # trains in a minute; val loss settles near 2.5
    python bigram.py --max_iters=500 --device=cpu --data=PATH

It shares the data, the options and the training loop with the GPT (train.py), so the two
numbers compare: anything the GPT reaches below ~2.5 comes from looking further back than one
character.
"""
from __future__ import annotations

import torch
from torch import nn

from config import GPTConfig
from gpt_final_version import masked_cross_entropy, sample_next
from gptlib.errors import run_cli


class BigramLanguageModel(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        # row i holds the logits of the character that follows character i
        self.token_embedding_table = nn.Embedding(config.vocab_size, config.vocab_size)

    def forward(self, idx, targets=None):
        logits = self.token_embedding_table(idx)  # (B, T, V)
        loss = None if targets is None else masked_cross_entropy(logits, targets)
        return logits, loss

    @torch.no_grad()
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, generator=None, **_unused):
        """Only the last character matters to a bigram model, so no context is cropped or cached."""
        for _ in range(max_new_tokens):
            logits, _ = self(idx[:, -1:])
            next_id = sample_next(logits[:, -1, :], temperature, top_k, generator)
            idx = torch.cat((idx, next_id.to(idx.device)), dim=1)
        return idx


def main(argv=None):
    from gptlib import (
        train,  # only when training: importing the model pulls in no training machinery
    )

    return train.train_from_command_line(argv or [], model_class=BigramLanguageModel, kind="bigram",
                                         usage="usage: python bigram.py [--name=value ...]")


if __name__ == "__main__":
    run_cli(main)
