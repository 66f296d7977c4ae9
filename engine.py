"""The streaming engine: generation as an iterator of token ids, one KV cache for a whole reply.

    from engine import TokenStream, decoder_for
    tokens = TokenStream(decoder_for(model), prompt_ids, max_new_tokens=200, temperature=0.8,
                         generator=torch.Generator().manual_seed(1), stop_token=END_ID, deadline=...)
    for token in tokens:          # each id as soon as it is sampled
        print(vocab.decode([token]), end="", flush=True)
    tokens.finish_reason          # "stop" (the stop token came) or "length" (max_new_tokens or the deadline)

Everything that shows text as it comes (the terminal chat, /generate, the HTTP stream, the web page)
consumes this one iterator, as nanochat's engine is consumed: the prompt is read once, then each
step feeds one new position. GPT.generate (the model file's own loop, kept as teaching code) gives
the same tokens for a seed; tests/test_engine.py proves it.

A decoder turns ids into the logits of the next one:
  * CachedDecoder: the fast attention path, keys and values kept in a KVCache between steps.
  * RecomputingDecoder: the lecture's per-Head attention (which keeps no cache) and the bigram
    model: each step reads the context again, exactly as GPT.generate does for them.
"""
from __future__ import annotations

import time
from typing import Iterator

import torch

from gpt_final_version import KVCache, sample_next


class CachedDecoder:
    """GPT on the fast path: the prompt fills the cache once, then each step costs one position.
    With learned positions, once the context outgrows block_size every position shifts, so the
    window is recomputed (as GPT.generate does; rotary keys need no shift and the cache rolls on)."""

    def __init__(self, model):
        self.model, self.config = model, model.config
        self.cache: KVCache | None = None
        self.context: list[int] = []  # the last block_size ids: what a recomputed window reads
        self.length = 0  # ids read so far

    @torch.no_grad()
    def start(self, ids: list[int]) -> torch.Tensor:
        """Read the prompt; the logits (1, V) of the id after it."""
        self.cache, self.length, self.context = KVCache(self.config), len(ids), ids[-self.config.block_size:]
        learned = self.config.position == "learned"
        return self._logits(self.context if learned else ids)

    @torch.no_grad()
    def advance(self, token: int) -> torch.Tensor:
        """Read one more id; the logits (1, V) of the next."""
        self.length += 1
        self.context = (self.context + [token])[-self.config.block_size:]
        if self.config.position == "learned" and self.length > self.config.block_size:
            self.cache = KVCache(self.config)
            return self._logits(self.context)
        return self._logits([token])

    def _logits(self, ids: list[int]) -> torch.Tensor:
        idx = torch.tensor([ids], dtype=torch.long, device=self._device())
        logits, _ = self.model(idx, cache=self.cache)
        return logits[:, -1, :]

    def _device(self):
        return self.model.lm_head.weight.device


class RecomputingDecoder:
    """Models without a KV cache: each step runs the whole visible context again, the context
    GPT.generate gives them (learned positions and the bigram: the last block_size ids; rotary
    positions: all of them, each layer looking back block_size)."""

    def __init__(self, model):
        self.model, self.config = model, model.config
        self.context: list[int] = []

    @torch.no_grad()
    def start(self, ids: list[int]) -> torch.Tensor:
        self.context = list(ids)
        return self._logits()

    @torch.no_grad()
    def advance(self, token: int) -> torch.Tensor:
        self.context.append(token)
        return self._logits()

    def _logits(self) -> torch.Tensor:
        rotary = getattr(self.config, "position", "learned") == "rope"
        visible = self.context if rotary else self.context[-self.config.block_size:]
        device = next(self.model.parameters()).device
        logits, _ = self.model(torch.tensor([visible], dtype=torch.long, device=device))
        return logits[:, -1, :]


def decoder_for(model, use_cache: bool = True):
    """The cached decoder where the model has a KV cache (a GPT on the fast path), else recomputing."""
    has_cache = getattr(model.config, "attention", None) == "fast" and hasattr(model, "blocks")
    return CachedDecoder(model) if use_cache and has_cache else RecomputingDecoder(model)


class TokenStream:
    """The ids sampled after a prompt, one at a time, from one decoder. The stop token ends the
    stream and is not yielded; so do max_new_tokens and the deadline (checked after each id, so at
    least one comes). After iteration, finish_reason says which ended it."""

    def __init__(self, decoder, prompt_ids: list[int], max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, generator: torch.Generator | None = None, stop_token: int | None = None,
                 deadline: float | None = None):
        self.decoder, self.prompt_ids = decoder, prompt_ids
        self.max_new_tokens, self.temperature, self.top_k, self.generator = max_new_tokens, temperature, top_k, generator
        self.stop_token, self.deadline = stop_token, deadline
        self.finish_reason: str | None = None  # set when the stream ends

    def __iter__(self) -> Iterator[int]:
        logits = self.decoder.start(self.prompt_ids)
        for made in range(1, self.max_new_tokens + 1):
            token = int(sample_next(logits, self.temperature, self.top_k or None, self.generator)[0, 0])
            if token == self.stop_token:
                self.finish_reason = "stop"
                return
            yield token
            if made == self.max_new_tokens or (self.deadline is not None and time.monotonic() > self.deadline):
                break
            logits = self.decoder.advance(token)
        self.finish_reason = "length"
