"""The streaming engine: generation as an iterator of token ids, one KV cache for a whole reply.

    from gptlib.engine import TokenStream, decoder_for
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
  * StaticCacheDecoder (the default): CachedDecoder's arithmetic, bit for bit, as plain calls over a
    cache allocated once; CompiledDecoder: that step under torch.compile (serve.py --compile=true).
    `python bench.py --only=decode` compares them with GPT.generate.
  * RecomputingDecoder: the lecture's per-Head attention (which keeps no cache) and the bigram
    model: each step reads the context again, exactly as GPT.generate does for them.
"""
from __future__ import annotations

import collections
import os
import queue
import threading
import time
import weakref
from collections.abc import Iterator

import torch
from torch.nn import functional as F

from gpt_final_version import KVCache, apply_rotary, rotary_angles, sample_next


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


def _rest_of_block(x, attention_out, block, C):
    """What follows attention in a Block, for one position of each of B rows: the projection back
    into the residual stream, then the feed-forward (as Block.forward computes it, without dropout)."""
    rows = x.shape[0]
    x = x + F.linear(attention_out.transpose(1, 2).reshape(rows, 1, C), block.attn.proj.weight, block.attn.proj.bias)
    h = F.layer_norm(x, (C,), block.ln2.weight, block.ln2.bias)
    h = block.ffwd.activation(F.linear(h, block.ffwd.up.weight, block.ffwd.up.bias))
    return x + F.linear(h, block.ffwd.proj.weight, block.ffwd.proj.bias)


def _next_logits(model, x, C):
    x = F.layer_norm(x, (C,), model.ln_f.weight, model.ln_f.bias)
    return F.linear(x, model.lm_head.weight, model.lm_head.bias)[:, -1, :]


class StaticCacheDecoder(CachedDecoder):
    """CachedDecoder's arithmetic with less Python around it: one step is the same operations as
    GPT.forward on one position (so the same logits, bit for bit: tests/test_engine.py), written as
    plain function calls over the model's weights, with the keys and values in tensors allocated
    once and rotary angles from a table. Decoding a small model on a CPU is bound by per-operation
    overhead (module calls, hooks, fresh cache views), not arithmetic; this removes most of it.
    The prompt is read by the model's own forward into a KVCache and copied in."""

    def __init__(self, model):
        super().__init__(model)
        c = model.config
        self.heads, self.head_size, self.window = c.n_head, c.n_embd // c.n_head, c.block_size
        weights = next(model.parameters())
        shape = (c.n_layer, 1, c.n_head, c.block_size, self.head_size)
        self.keys, self.values = weights.new_zeros(shape), weights.new_zeros(shape)
        self.angles = (None, None)  # rotary cos, sin for positions 0.. (grown on demand)

    @torch.no_grad()
    def start(self, ids: list[int]) -> torch.Tensor:
        logits = super().start(ids)
        self._take_cache()
        return logits

    @torch.no_grad()
    def advance(self, token: int) -> torch.Tensor:
        position = self.length
        self.length += 1
        self.context = (self.context + [token])[-self.window:]
        if self.config.position == "learned" and self.length > self.window:
            self.cache = KVCache(self.config)  # every position shifts: recompute the window, as CachedDecoder
            return self._logits(self.context)
        return self._step(token, position)

    def _take_cache(self):
        for i, layer in enumerate(self.cache.layers):
            filled = min(layer.length, self.window)
            self.keys[i, :, :, :filled] = layer.k[:, :, :filled]
            self.values[i, :, :, :filled] = layer.v[:, :, :filled]

    def _rotary(self, position: int):
        cos, sin = self.angles
        if cos is None or position >= cos.shape[0]:
            size = max(2 * position, 2 * self.window)
            cos, sin = self.angles = rotary_angles(torch.arange(size, device=self.keys.device), self.head_size)
        return cos[position:position + 1], sin[position:position + 1]

    def _step(self, token: int, position: int) -> torch.Tensor:
        """GPT.forward for one new position at `position`, block by block, as plain function calls."""
        model, C, H, hs = self.model, self.config.n_embd, self.heads, self.head_size
        slot, visible = position % self.window, min(position + 1, self.window)  # the ring's layout
        x = model.token_embedding.weight[token].view(1, 1, C)
        if self.config.position == "learned":
            x = x + model.position_embedding.weight[position]
        else:
            cos, sin = self._rotary(position)
        for i, block in enumerate(model.blocks):
            h = F.layer_norm(x, (C,), block.ln1.weight, block.ln1.bias)
            q, k, v = F.linear(h, block.attn.qkv.weight, block.attn.qkv.bias).view(1, 1, 3, H, hs).transpose(1, 3).unbind(2)  # (1, H, 1, hs)
            if self.config.qk_norm:
                q, k = F.rms_norm(q, (hs,)), F.rms_norm(k, (hs,))
            if self.config.position == "rope":
                q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
            self.keys[i, :, :, slot:slot + 1] = k
            self.values[i, :, :, slot:slot + 1] = v
            out = F.scaled_dot_product_attention(q, self.keys[i, :, :, :visible], self.values[i, :, :, :visible])
            x = _rest_of_block(x, out, block, C)
        return _next_logits(model, x, C)


class CompiledStep(torch.nn.Module):
    """StaticCacheDecoder's step for B rows at once (B replies, each at its own position), as one
    graph for torch.compile (gpt-fast's way): tokens and positions are tensors, so one compiled graph
    serves every position. The graph only reads the cache: each row attends to its filled slots (less
    the one its new position overwrites) and to its new key, and the step returns the new keys and
    values, which the caller writes into the ring. A graph that wrote into its inputs would make
    inductor copy the whole cache in and out at every step (a third of the step on a CPU). Attention
    is spelt out (scores, softmax, weighted sum) so inductor fuses it: the library's kernel costs
    more to call than one query's attention costs to compute. Rotary angles come from a table
    computed eagerly (indexing it inside the graph gives exactly the eager values). Uncompiled, the
    same module is the batched engine's eager step."""

    TABLE = 16384  # rotary positions in the table; a longer generation goes on with the eager step

    def __init__(self, model):
        super().__init__()
        self.model, c = model, model.config
        self.heads, self.head_size, self.window = c.n_head, c.n_embd // c.n_head, c.block_size
        weights = next(model.parameters())
        cos, sin = rotary_angles(torch.arange(self.TABLE, device=weights.device), self.head_size)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)
        self.register_buffer("slots", torch.arange(c.block_size, device=weights.device), persistent=False)

    def forward(self, tokens, positions, keys, values):
        """tokens, positions: (B,) long tensors; keys, values (L, B, H, W, hs), only read.
        Returns the next logits (B, V) and each row's new keys and values, (L, B, H, 1, hs) each."""
        model, C, H, hs = self.model, self.model.config.n_embd, self.heads, self.head_size
        rows = tokens.shape[0]
        earlier = (self.slots <= positions[:, None] - 1) & (self.slots != positions[:, None] % self.window)
        earlier = earlier.view(rows, 1, 1, self.window)  # the slots each row still sees
        x = model.token_embedding.weight[tokens].view(rows, 1, C)
        if model.config.position == "learned":
            x = x + model.position_embedding.weight[positions].view(rows, 1, C)
        else:
            cos, sin = self.cos[positions].view(rows, 1, 1, -1), self.sin[positions].view(rows, 1, 1, -1)
        new_keys, new_values = [], []
        for i, block in enumerate(model.blocks):
            h = F.layer_norm(x, (C,), block.ln1.weight, block.ln1.bias)
            q, k, v = F.linear(h, block.attn.qkv.weight, block.attn.qkv.bias).view(rows, 1, 3, H, hs).transpose(1, 3).unbind(2)
            if model.config.qk_norm:
                q, k = F.rms_norm(q, (hs,)), F.rms_norm(k, (hs,))
            if model.config.position == "rope":
                q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
            out = _attend_one(q, k, v, keys[i], values[i], earlier, hs)
            new_keys.append(k)
            new_values.append(v)
            x = _rest_of_block(x, out, block, C)
        return _next_logits(model, x, C), torch.stack(new_keys), torch.stack(new_values)


def _attend_one(q, k, v, keys, values, earlier, head_size):
    """Each row's one query attends to its cached keys in `earlier` and to its own key: (B, H, 1, hs)."""
    scale = head_size ** -0.5
    cached = (q @ keys.transpose(-2, -1)) * scale  # (B, H, 1, W)
    cached = cached.masked_fill(~earlier, float("-inf"))
    own = (q * k).sum(-1, keepdim=True) * scale  # (B, H, 1, 1)
    weights = torch.softmax(torch.cat((cached, own), dim=-1), dim=-1)
    return weights[..., :-1] @ values + weights[..., -1:] * v


def compiled_step(model, rows: int = 1, capacity: int | None = None):
    """The model's CompiledStep for `rows` rows under torch.compile, compiled once per model and
    row count (seconds to a minute) by a first call here; the cache it reads is the first `rows` of
    `capacity` rows (BatchedRows: a slice of one larger cache). Inductor's freezing folds the weights
    in as constants (so later changes to them are not seen: for serving, not training) and
    max_autotune lets it use its own C++ matmul kernels where they beat the library's; on a 2-core
    CPU the two together halve a step, either alone does nothing. Freezing is read from the global
    config, so it is set only here."""
    capacity = capacity or rows
    steps = _COMPILED_STEPS.setdefault(model, {})  # not an attribute of the model: it would become a submodule
    if (rows, capacity) not in steps:
        step = torch.compile(CompiledStep(model).eval(), fullgraph=True, dynamic=False, options={"max_autotune": AUTOTUNE})
        c, weights = model.config, next(model.parameters())
        cache = weights.new_zeros(c.n_layer, capacity, c.n_head, c.block_size, c.n_embd // c.n_head)
        tokens, positions = (torch.zeros(rows, dtype=torch.long, device=weights.device) for _ in range(2))
        with torch.no_grad(), torch._inductor.config.patch(freezing=True):  # separate tensors: aliases would be guarded on
            step(tokens, positions, cache[:, :rows], cache.clone()[:, :rows])
        steps[rows, capacity] = step
    return steps[rows, capacity]


_COMPILED_STEPS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> {(rows, capacity): step}
# Autotuning times each matmul shape's kernels (seconds per shape, most of a compile's time);
# GPT_COMPILE_AUTOTUNE=0 skips it: start-up in seconds, decoding slower, the same tokens. The tests
# use it (they check tokens, not speed).
AUTOTUNE = os.environ.get("GPT_COMPILE_AUTOTUNE", "1") != "0"


class CompiledDecoder(StaticCacheDecoder):
    """StaticCacheDecoder with its step compiled (compiled_step): the same cache, the same tokens
    for a seed (tests/test_engine.py), far less time per step. The first step compiles."""

    def __init__(self, model):
        super().__init__(model)
        self.step = compiled_step(model)

    def _step(self, token: int, position: int) -> torch.Tensor:
        if position >= CompiledStep.TABLE:
            return super()._step(token, position)
        device = self.keys.device
        logits, new_keys, new_values = self.step(torch.tensor([token], device=device),
                                                 torch.tensor([position], device=device), self.keys, self.values)
        slot = position % self.window
        self.keys[:, :, :, slot:slot + 1] = new_keys
        self.values[:, :, :, slot:slot + 1] = new_values
        return logits


def has_kv_cache(model) -> bool:
    """A GPT on the fast path keeps keys and values (not per-Head attention, not the bigram)."""
    return getattr(model.config, "attention", None) == "fast" and hasattr(model, "blocks")


def decoder_for(model, use_cache: bool = True, fast: bool = True, compiled: bool = False):
    """The decoder for `model`: where it has a KV cache (a GPT on the fast path) the static-cache one
    (fast=True) or the plain cached one, else recomputing."""
    if not (use_cache and has_kv_cache(model)):
        return RecomputingDecoder(model)
    if compiled:
        return CompiledDecoder(model)
    return StaticCacheDecoder(model) if fast else CachedDecoder(model)


def next_id(logits, temperature, top_k, generator, banned=()) -> int:
    """The id sampled from logits (1, V), never one of `banned` (a chat reply never writes the markers
    that open a message or a reply: only the end marker may end it)."""
    if banned:
        logits = logits.clone()
        logits[:, list(banned)] = float("-inf")
    return int(sample_next(logits, temperature, top_k or None, generator)[0, 0])


class TokenStream:
    """The ids sampled after a prompt, one at a time, from one decoder. The stop token ends the
    stream and is not yielded; so do max_new_tokens and the deadline (checked after each id, so at
    least one comes). After iteration, finish_reason says which ended it."""

    def __init__(self, decoder, prompt_ids: list[int], max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, generator: torch.Generator | None = None, stop_token: int | None = None,
                 deadline: float | None = None, banned: tuple[int, ...] = ()):
        self.decoder, self.prompt_ids = decoder, prompt_ids
        self.max_new_tokens, self.temperature, self.top_k, self.generator = max_new_tokens, temperature, top_k, generator
        self.stop_token, self.deadline, self.banned = stop_token, deadline, banned
        self.finish_reason: str | None = None  # set when the stream ends

    def __iter__(self) -> Iterator[int]:
        logits = self.decoder.start(self.prompt_ids)
        for made in range(1, self.max_new_tokens + 1):
            token = next_id(logits, self.temperature, self.top_k, self.generator, self.banned)
            if token == self.stop_token:
                self.finish_reason = "stop"
                return
            yield token
            if made == self.max_new_tokens or (self.deadline is not None and time.monotonic() > self.deadline):
                break
            logits = self.decoder.advance(token)
        self.finish_reason = "length"


# ----------------------------------------------------------------------------------------------
# Several replies at once: continuous batching


class BatchedRows:
    """Replies decoded together: one cache with a row per reply (its ring of keys and values) and
    one step for the rows in use. A reply's prompt is read on its own (CachedDecoder: the model's
    forward into a KVCache, copied into its row); then every step feeds each reply one position
    through CompiledStep. The rows in use are always the first ones (a reply that leaves is
    replaced by the last), so a step reads a slice of the cache. Eager, a step computes exactly
    those rows; compiled, it computes the smallest of a few sizes that holds them (1, 4, 16, ...: one
    graph each), since on a CPU a row costs little at first (per-operation overhead) and then its
    full arithmetic (16 rows of the 1.8M model: about 6x one row, for 16x the characters). A
    learned-position reply that has outgrown block_size is recomputed on its own, as CachedDecoder
    does (every position shifts)."""

    def __init__(self, model, capacity: int, compiled: bool = False):
        c, weights = model.config, next(model.parameters())
        self.model, self.config, self.capacity, self.window = model, c, capacity, c.block_size
        shape = (c.n_layer, capacity, c.n_head, c.block_size, c.n_embd // c.n_head)
        self.keys, self.values = weights.new_zeros(shape), weights.new_zeros(shape)
        self.sizes = sorted({4 ** i for i in range(8) if 4 ** i < capacity} | {capacity}) if compiled else []
        self.steps = {size: compiled_step(model, size, capacity) for size in self.sizes}  # compiled now, not mid-reply
        self.eager = CompiledStep(model).eval()
        self.readers: list[CachedDecoder] = []  # row -> the reply's own decoder: its prompt, length, context
        self.device = weights.device

    @torch.no_grad()
    def start(self, ids: list[int]) -> tuple[int, torch.Tensor]:
        """Read a reply's prompt into the next free row; that row and the logits (1, V) of the id after it."""
        if len(self.readers) == self.capacity:
            raise RuntimeError("every row is in use")
        reader = CachedDecoder(self.model)
        logits = reader.start(ids)
        row = len(self.readers)
        self.readers.append(reader)
        for i, layer in enumerate(reader.cache.layers):
            filled = min(layer.length, self.window)
            self.keys[i, row, :, :filled] = layer.k[0, :, :filled]
            self.values[i, row, :, :filled] = layer.v[0, :, :filled]
        return row, logits

    def remove(self, rows: set[int]) -> dict[int, int]:
        """Free `rows`: the last rows in use move into the holes. Returns {old row: new row}."""
        kept = len(self.readers) - len(rows)
        holes = sorted(row for row in rows if row < kept)
        movers = [row for row in range(kept, len(self.readers)) if row not in rows]
        for hole, mover in zip(holes, movers):
            self.keys[:, hole] = self.keys[:, mover]
            self.values[:, hole] = self.values[:, mover]
            self.readers[hole] = self.readers[mover]
        del self.readers[kept:]
        return dict(zip(movers, holes))

    @torch.no_grad()
    def advance(self, tokens: dict[int, int]) -> dict[int, torch.Tensor]:
        """Feed each row in `tokens` its next id, all in one step; the logits (1, V) of each row's next."""
        batched, logits = {}, {}
        for row, token in tokens.items():
            reader = self.readers[row]
            position = reader.length
            reader.length += 1
            reader.context = (reader.context + [token])[-self.window:]
            if self.config.position == "learned" and reader.length > self.window:
                reader.cache = KVCache(self.config)  # every position shifts: recompute the window, as CachedDecoder
                logits[row] = reader._logits(reader.context)
            elif position >= CompiledStep.TABLE:
                raise ValueError(f"a reply of more than {CompiledStep.TABLE} positions is beyond the rotary table")
            else:
                batched[row] = (token, position)
        if batched:
            logits.update(self._step(batched))
        return logits

    def _step(self, batched: dict[int, tuple[int, int]]) -> dict[int, torch.Tensor]:
        in_use = len(self.readers)
        size = next((size for size in self.sizes if size >= in_use), in_use)  # eager: exactly the rows in use
        step = self.steps.get(size, self.eager)
        rows = torch.tensor(list(batched), dtype=torch.long)
        tokens, positions = torch.zeros(size, dtype=torch.long), torch.zeros(size, dtype=torch.long)
        tokens[rows] = torch.tensor([token for token, _ in batched.values()])
        positions[rows] = torch.tensor([position for _, position in batched.values()])
        slots = (positions[rows] % self.window).to(self.device)
        out, new_keys, new_values = step(tokens.to(self.device), positions.to(self.device),
                                         self.keys[:, :size], self.values[:, :size])
        rows = rows.to(self.device)
        self.keys[:, rows, :, slots] = new_keys[:, rows, :, 0].transpose(0, 1)  # each row's into its own slot: (rows, L, H, hs)
        self.values[:, rows, :, slots] = new_values[:, rows, :, 0].transpose(0, 1)
        return {row: out[row:row + 1] for row in batched}


class BatchedStream:
    """A reply decoded by a Batcher: iterating gives its ids as they are sampled, as TokenStream's
    do (same stop token, max_new_tokens and deadline rules, same finish_reason). Leaving the loop
    early (a client gone) frees its row at the batch's next step."""

    def __init__(self, prompt_ids, max_new_tokens, temperature, top_k, generator, stop_token, deadline, banned=()):
        self.prompt_ids, self.max_new_tokens, self.temperature, self.top_k = prompt_ids, max_new_tokens, temperature, top_k
        self.generator, self.stop_token, self.deadline, self.banned = generator, stop_token, deadline, banned
        self.finish_reason: str | None = None
        self.made, self.last = 0, None  # ids sampled so far, and the last one (fed at the next step)
        self.cancelled = False
        self._ids: queue.SimpleQueue = queue.SimpleQueue()

    def __iter__(self) -> Iterator[int]:
        try:
            while True:
                item = self._ids.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self.cancelled = True  # a no-op when it ended; otherwise the batch drops it

    def _finish(self, reason: str) -> None:
        self.finish_reason = reason
        self._ids.put(_END)


_END = object()  # the end of a BatchedStream's ids


class Batcher:
    """Continuous batching: one thread decodes every reply in progress, one step for all of them. A
    new reply's prompt is read between two steps and it joins at the next; a finished one leaves and
    its row takes the next waiting reply. Each reply samples from its own logits with its own
    generator, so its ids are the ones a lone TokenStream would give for its seed (to float rounding
    in the batched matmuls: tests/test_engine.py)."""

    def __init__(self, model, rows: int, compiled: bool = False):
        self.batch = BatchedRows(model, rows, compiled)
        self.waiting: collections.deque[BatchedStream] = collections.deque()
        self.running: dict[int, BatchedStream] = {}  # row -> reply
        self.leaving: set[int] = set()  # rows whose reply ended in this round (freed at its end)
        self.wake = threading.Condition()
        self.steps = 0  # batched steps taken (tests and bench.py read it)
        self.closed = False
        threading.Thread(target=self._loop, name="batcher", daemon=True).start()

    def submit(self, prompt_ids: list[int], max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
               generator: torch.Generator | None = None, stop_token: int | None = None,
               deadline: float | None = None, banned: tuple[int, ...] = ()) -> BatchedStream:
        stream = BatchedStream(prompt_ids, max_new_tokens, temperature, top_k, generator, stop_token, deadline, banned)
        with self.wake:
            self.waiting.append(stream)
            self.wake.notify()
        return stream

    def close(self) -> None:
        """Stop the thread once the replies in progress are done (they are not cut short)."""
        with self.wake:
            self.closed = True
            self.wake.notify()

    def _loop(self) -> None:
        while True:
            with self.wake:
                self.wake.wait_for(lambda: self.waiting or self.running or self.closed)
                if self.closed and not self.running:
                    return
                joining = self._take_waiting()
            for stream in joining:
                self._guarded(self._join, stream, joining=stream)
            self._free_rows()
            tokens = {row: stream.last for row, stream in self.running.items()}  # the joined too: at this step
            if tokens:
                self._guarded(self._advance, tokens)
            self._free_rows()

    def _take_waiting(self) -> list[BatchedStream]:
        """The waiting replies that get the free rows (not those whose reader already left)."""
        joining = []
        while self.waiting and len(self.running) + len(joining) < self.batch.capacity:
            stream = self.waiting.popleft()
            if not stream.cancelled:
                joining.append(stream)
        return joining

    def _join(self, stream: BatchedStream) -> None:
        row, logits = self.batch.start(stream.prompt_ids)
        self.running[row] = stream
        self._sample(row, stream, logits)

    def _advance(self, tokens: dict[int, int]) -> None:
        for row, logits in self.batch.advance(tokens).items():
            self._sample(row, self.running[row], logits)
        self.steps += 1

    def _guarded(self, work, argument, joining: BatchedStream | None = None) -> None:
        """Do work(argument); if it fails, the replies it concerned (the one joining, or every running
        one for a step) end with its error, which their readers raise, and the loop goes on."""
        try:
            work(argument)
        except Exception as error:  # noqa: BLE001 - handed to the readers concerned
            if joining is not None and joining not in self.running.values():  # failed before it had a row
                joining._ids.put(error)
                return
            for row, stream in self.running.items():
                if row not in self.leaving and (joining is None or stream is joining):
                    stream._ids.put(error)
                    self._leave(row, "error")

    def _sample(self, row: int, stream: BatchedStream, logits: torch.Tensor) -> None:
        """The reply's next id from its logits, with TokenStream's rules for when it ends."""
        if stream.cancelled:
            return self._leave(row, "cancelled")
        if stream.max_new_tokens < 1:
            return self._leave(row, "length")
        token = next_id(logits, stream.temperature, stream.top_k, stream.generator, stream.banned)
        if token == stream.stop_token:
            return self._leave(row, "stop")
        stream._ids.put(token)
        stream.made, stream.last = stream.made + 1, token
        if stream.made == stream.max_new_tokens or (stream.deadline is not None and time.monotonic() > stream.deadline):
            self._leave(row, "length")

    def _leave(self, row: int, reason: str) -> None:
        self.leaving.add(row)
        self.running[row]._finish(reason)

    def _free_rows(self) -> None:
        """Give back the rows of the replies that ended; the last rows in use move into the holes."""
        if not self.leaving:
            return
        for row in self.leaving:
            del self.running[row]
        for old, new in self.batch.remove(self.leaving).items():
            self.running[new] = self.running.pop(old)
        self.leaving.clear()
