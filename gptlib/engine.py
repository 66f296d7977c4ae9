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

A decoder turns ids into the logits of the next one, for one reply or for `rows` samples of one
prompt side by side (sample_rows: `model_handler.py --prompt --num_samples`):
  * CachedDecoder: the model's forward, keys and values kept in a KVCache between steps.
  * StaticCacheDecoder (the default): the prompt read by forward, then each step the model's own
    GPT.forward_one over a ring of keys and values allocated once (DecodeStep); CompiledDecoder:
    that step under torch.compile (serve.py --compile=true). The engine holds no copy of the
    model's arithmetic and reads none of its parameter names.
    `python -m benchmarks.bench --only=decode` compares them with GPT.generate.
  * RecomputingDecoder: the lecture's per-Head attention (which keeps no cache) and the bigram
    model: each step reads the context again, exactly as GPT.generate does for them.
StopRules (the stop token, max_new_tokens, the deadline) end a TokenStream and a batched reply alike.
"""
from __future__ import annotations

import collections
import dataclasses
import os
import queue
import threading
import time
import weakref
from collections.abc import Iterator

import torch

from gpt_final_version import KVCache, sample_next
from gptlib.kv_ring import cache_shape, ring_from_cache, ring_slots, with_room


class CachedDecoder:
    """GPT on the fast path, through its forward: the prompt fills a KVCache once, then each step
    feeds one position. `rows` replies of one prompt advance together (the samples of --prompt).
    With learned positions, once the context outgrows block_size the window is recomputed
    (GPT.window_slides, as GPT.generate does)."""

    def __init__(self, model):
        self.model, self.config = model, model.config
        self.cache: KVCache | None = None
        self.window: list[list[int]] = []  # per row, the last block_size ids: what a recomputed window reads
        self.length = 0  # ids read so far, per row

    @torch.no_grad()
    def start(self, ids: list[int], rows: int = 1) -> torch.Tensor:
        """Read the prompt; the logits (rows, V) of the id after it."""
        self.cache, self.length = KVCache(self.config), len(ids)
        self.window = [ids[-self.config.block_size:]] * rows
        return self._forward(self.window if self.config.position == "learned" else [ids] * rows)

    @torch.no_grad()
    def advance(self, tokens: list[int]) -> torch.Tensor:
        """Read one more id per row; the logits (rows, V) of the next."""
        self.read(tokens)
        return self.recompute() if self.model.window_slides(self.length) else self._forward([[t] for t in tokens])

    def read(self, tokens: list[int]) -> None:
        """Count one more id per row and keep it in the row's window."""
        self.length += 1
        self.window = [(row + [token])[-self.config.block_size:] for row, token in zip(self.window, tokens)]

    def recompute(self) -> torch.Tensor:
        """The window read afresh into a new cache (every learned position has shifted)."""
        self.cache = KVCache(self.config)
        return self._forward(self.window)

    def _forward(self, ids: list[list[int]]) -> torch.Tensor:
        idx = torch.tensor(ids, dtype=torch.long, device=next(self.model.parameters()).device)
        logits, _ = self.model(idx, cache=self.cache)
        return logits[:, -1, :]


class RecomputingDecoder:
    """Models without a KV cache: each step runs the whole visible context again, the context
    GPT.generate gives them (learned positions and the bigram: the last block_size ids; rotary
    positions: all of them, each layer looking back block_size)."""

    def __init__(self, model):
        self.model, self.config = model, model.config
        self.context = torch.zeros(1, 0, dtype=torch.long)

    @torch.no_grad()
    def start(self, ids: list[int], rows: int = 1) -> torch.Tensor:
        self.context = torch.tensor([ids] * rows, dtype=torch.long)
        return self._logits()

    @torch.no_grad()
    def advance(self, tokens: list[int]) -> torch.Tensor:
        self.context = torch.cat((self.context, torch.tensor(tokens, dtype=torch.long).view(-1, 1)), dim=1)
        return self._logits()

    def _logits(self) -> torch.Tensor:
        rotary = getattr(self.config, "position", "learned") == "rope"
        visible = self.context if rotary else self.context[:, -self.config.block_size:]
        logits, _ = self.model(visible.to(next(self.model.parameters()).device))
        return logits[:, -1, :]


class DecodeStep(torch.nn.Module):
    """One new position for each of B rows: the model's own GPT.forward_one, with rotary angles
    looked up in a table, so tokens and positions enter as tensors and one graph serves every
    position (gpt-fast's decode_one_token: a small function around the model that torch.compile
    makes one graph of). The angles come from a table computed eagerly (indexing it inside a
    graph gives exactly the eager values, computing them there need not). Uncompiled, it is the
    engine's eager step."""

    TABLE = 16384  # rotary positions in the table; a longer generation goes on with the eager step

    def __init__(self, model):
        super().__init__()
        self.model, c = model, model.config
        weights = next(model.parameters())
        rope = getattr(c, "position", "learned") == "rope"
        cos, sin = model.rotary_angles(torch.arange(self.TABLE, device=weights.device)) if rope else (None, None)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def forward(self, tokens, positions, keys, values):
        """tokens, positions: (B,) long tensors; keys, values (L, B, H, W, hs): only read by a compiled
        step (eager, forward_one also stores the new positions in them). Returns the next logits
        (B, V) and each row's new keys and values, (L, B, H, 1, hs) each."""
        rotary = self.rotary(positions) if self.model.config.position == "rope" else None
        return self.model.forward_one(tokens, positions, keys, values, rotary)

    def rotary(self, positions):
        """cos, sin (B, 1, 1, hs/2) of each row's position, from the table."""
        rows = positions.shape[0]
        if rows == 1 and not torch.compiler.is_compiling():  # one reply, eager: a slice costs less than a gather
            p = int(positions[0])
            if p >= self.TABLE:  # beyond the table (the compiled step stops there), computed as forward() does
                cos, sin = self.model.rotary_angles(positions)
            else:
                cos, sin = self.cos[p:p + 1], self.sin[p:p + 1]
        else:
            cos, sin = self.cos[positions], self.sin[positions]
        return cos.view(rows, 1, 1, -1), sin.view(rows, 1, 1, -1)


class StaticCacheDecoder(CachedDecoder):
    """The default decoder: the prompt is read by the model's forward into a KVCache and copied
    into a ring of keys and values (ring_slots: as many slots as the reply needs, widened as it
    grows, up to block_size); then each step is one DecodeStep over that ring (a compiled one
    returns the new keys and values, stored here). Decoding a small model on a CPU
    is bound by per-operation overhead, not arithmetic: a step without fresh cache views or
    appends costs less."""

    def __init__(self, model):
        super().__init__(model)
        self.eager = eager_step(model)
        self.step = self.eager  # CompiledDecoder.start puts the compiled step here
        self.keys = self.values = None  # (L, rows, H, W, hs), allocated by start

    @torch.no_grad()
    def start(self, ids: list[int], rows: int = 1) -> torch.Tensor:
        logits = super().start(ids, rows)
        self.keys, self.values = ring_from_cache(self.cache, self.config, rows, ring_slots(len(ids) + 1, self.config))
        return logits

    @torch.no_grad()
    def advance(self, tokens: list[int]) -> torch.Tensor:
        position = self.length
        self.read(tokens)
        if self.model.window_slides(self.length):
            return self.recompute()
        step = self.step if position < DecodeStep.TABLE else self.eager
        self.keys, self.values = with_room(self.keys, self.values, position, self.config)
        device = self.keys.device
        rows = len(tokens)
        logits, new_keys, new_values = step(torch.tensor(tokens, device=device),
                                            torch.full((rows,), position, device=device), self.keys, self.values)
        if step is not self.eager:  # a compiled step only reads the ring; eager, forward_one stored them
            slot = position % self.keys.shape[3]
            self.keys[:, :, :, slot:slot + 1] = new_keys
            self.values[:, :, :, slot:slot + 1] = new_values
        return logits


def eager_step(model) -> DecodeStep:
    """The model's DecodeStep, made once (its rotary table takes milliseconds: not once per reply)."""
    if model not in _EAGER_STEPS:
        _EAGER_STEPS[model] = DecodeStep(model).eval()
    return _EAGER_STEPS[model]


_EAGER_STEPS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> its DecodeStep


def compiled_step(model, rows: int = 1, capacity: int | None = None):
    """The model's DecodeStep for `rows` rows under torch.compile, compiled once per model and
    row count (seconds to a minute) by a first call here; the cache it reads is the first `rows` of
    `capacity` rows (BatchedRows: a slice of one larger cache). Inductor's freezing folds the weights
    in as constants (so later changes to them are not seen: for serving, not training) and
    max_autotune lets it use its own C++ matmul kernels where they beat the library's; on a 2-core
    CPU the two together halve a step, either alone does nothing. Freezing is read from the global
    config, so it is set only here."""
    capacity = capacity or rows
    steps = _COMPILED_STEPS.setdefault(model, {})  # not an attribute of the model: it would become a submodule
    if (rows, capacity) not in steps:
        step = torch.compile(DecodeStep(model).eval(), fullgraph=True, dynamic=False, options={"max_autotune": AUTOTUNE})
        c, weights = model.config, next(model.parameters())
        cache = weights.new_zeros(cache_shape(c, capacity))
        tokens, positions = (torch.zeros(rows, dtype=torch.long, device=weights.device) for _ in range(2))
        keys, values = cache[:, :rows], cache.clone()[:, :rows]  # separate tensors: aliases would be guarded on
        for ring in (keys, values):  # one graph for every ring size (ring_slots), not one per size
            torch._dynamo.mark_dynamic(ring, 3)
        with torch.no_grad(), torch._inductor.config.patch(freezing=True):
            step(tokens, positions, keys, values)
        steps[rows, capacity] = step
    return steps[rows, capacity]


_COMPILED_STEPS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> {(rows, capacity): step}
# Autotuning times each matmul shape's kernels (seconds per shape, most of a compile's time);
# GPT_COMPILE_AUTOTUNE=0 skips it: start-up in seconds, decoding slower, the same tokens. The tests
# use it (they check tokens, not speed).
AUTOTUNE = os.environ.get("GPT_COMPILE_AUTOTUNE", "1") != "0"


class CompiledDecoder(StaticCacheDecoder):
    """StaticCacheDecoder with its step compiled (compiled_step): the same cache, the same tokens
    for a seed (tests/test_engine.py), far less time per step. The first use compiles; one graph
    per row count."""

    @torch.no_grad()
    def start(self, ids: list[int], rows: int = 1) -> torch.Tensor:
        self.step = compiled_step(self.model, rows)
        return super().start(ids, rows)


def has_kv_cache(model) -> bool:
    """A GPT on the fast path keeps keys and values and steps one position (not per-Head attention,
    not the bigram)."""
    return getattr(model.config, "attention", None) == "fast" and hasattr(model, "forward_one")


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


@dataclasses.dataclass
class StopRules:
    """When a reply ends: at the stop token (which is not part of it), after max_new_tokens ids, or
    once the deadline has passed (checked after each id, so at least one comes)."""

    max_new_tokens: int
    stop_token: int | tuple[int, ...] | None = None  # a hub model may have several (end of turn, end of text)
    deadline: float | None = None

    def __post_init__(self):
        self.stop_ids = set(self.stop_token if isinstance(self.stop_token, tuple) else (self.stop_token,)) - {None}

    def before_any(self) -> str | None:
        """"length" when the reply may hold no id at all."""
        return "length" if self.max_new_tokens < 1 else None

    def after(self, token: int, made: int) -> str | None:
        """Why the reply ends with `token`, its id number `made` (1, 2, ...), or None: "stop" (the
        token is dropped) or "length" (the token is kept, and is the last)."""
        if token in self.stop_ids:
            return "stop"
        if made >= self.max_new_tokens or (self.deadline is not None and time.monotonic() > self.deadline):
            return "length"
        return None


class TokenStream:
    """The ids sampled after a prompt, one at a time, from one decoder, until StopRules end it.
    After iteration, finish_reason says which ended it."""

    def __init__(self, decoder, prompt_ids: list[int], max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, generator: torch.Generator | None = None, stop_token: int | None = None,
                 deadline: float | None = None, banned: tuple[int, ...] = ()):
        self.decoder, self.prompt_ids = decoder, prompt_ids
        self.temperature, self.top_k, self.generator, self.banned = temperature, top_k, generator, banned
        self.rules = StopRules(max_new_tokens, stop_token, deadline)
        self.finish_reason: str | None = None  # set when the stream ends

    def __iter__(self) -> Iterator[int]:
        logits = self.decoder.start(self.prompt_ids)
        self.finish_reason = self.rules.before_any()
        made = 0
        while self.finish_reason is None:
            token = next_id(logits, self.temperature, self.top_k, self.generator, self.banned)
            made += 1
            self.finish_reason = self.rules.after(token, made)
            if self.finish_reason == "stop":
                return
            yield token
            if self.finish_reason is None:
                logits = self.decoder.advance([token])


def sample_rows(decoder, prompt_ids: list[int], rows: int, max_new_tokens: int, temperature: float = 1.0,
                top_k: int | None = None, generator: torch.Generator | None = None) -> list[list[int]]:
    """`rows` samples of max_new_tokens ids after one prompt, decoded side by side and drawn as
    GPT.generate draws them (one multinomial over all rows per step), so a seed gives its tokens."""
    logits = decoder.start(prompt_ids, rows)
    samples = []
    for made in range(1, max_new_tokens + 1):
        ids = sample_next(logits, temperature, top_k or None, generator)  # (rows, 1)
        samples.append(ids)
        if made < max_new_tokens:
            logits = decoder.advance(ids[:, 0].tolist())
    return torch.cat(samples, dim=1).tolist() if samples else [[] for _ in range(rows)]


# ----------------------------------------------------------------------------------------------
# Several replies at once: continuous batching


class BatchedRows:
    """Replies decoded together: one cache with a row per reply (its ring of keys and values, as
    wide as the furthest row needs: with_room) and one DecodeStep for the rows in use. A reply's
    prompt is read on its own (CachedDecoder: the model's forward into a KVCache, copied into its
    row); then every step feeds each reply one position. The rows in use are always the first
    ones (a reply that leaves is replaced by the last), so a step reads a slice of the cache. Eager, a step computes exactly those rows;
    compiled, it computes the smallest of a few sizes that holds them (1, 4, 16, ...: one graph
    each), since on a CPU a row costs little at first (per-operation overhead) and then its full
    arithmetic (16 rows of the 1.8M model: about 6x one row, for 16x the characters). A
    learned-position reply whose window slides is recomputed on its own, as CachedDecoder does."""

    def __init__(self, model, capacity: int, compiled: bool = False):
        c, weights = model.config, next(model.parameters())
        self.model, self.config, self.capacity = model, c, capacity
        shape = cache_shape(c, capacity, ring_slots(1, c))  # widened as the rows' positions need (with_room)
        self.keys, self.values = weights.new_zeros(shape), weights.new_zeros(shape)
        self.sizes = sorted({4 ** i for i in range(8) if 4 ** i < capacity} | {capacity}) if compiled else []
        self.steps = {size: compiled_step(model, size, capacity) for size in self.sizes}  # compiled now, not mid-reply
        self.eager = eager_step(model)
        self.readers: list[CachedDecoder] = []  # row -> the reply's own decoder: its prompt, length, window
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
        self.keys, self.values = with_room(self.keys, self.values, len(ids), self.config)
        keys, values = ring_from_cache(reader.cache, self.config, 1, self.keys.shape[3])
        self.keys[:, row:row + 1], self.values[:, row:row + 1] = keys, values
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
            reader.read([token])
            if self.model.window_slides(reader.length):
                logits[row] = reader.recompute()
            elif position >= DecodeStep.TABLE:
                raise ValueError(f"a reply of more than {DecodeStep.TABLE} positions is beyond the rotary table")
            else:
                batched[row] = (token, position)
        if batched:
            logits.update(self._step(batched))
        return logits

    def _step(self, batched: dict[int, tuple[int, int]]) -> dict[int, torch.Tensor]:
        in_use = len(self.readers)
        size = next((size for size in self.sizes if size >= in_use), in_use)  # eager: exactly the rows in use
        self.keys, self.values = with_room(self.keys, self.values, max(p for _, p in batched.values()), self.config)
        step = self.steps.get(size, self.eager)
        tokens, positions = [0] * size, [0] * size  # built as lists: one tensor each, not a tensor per row
        for row, (token, position) in batched.items():
            tokens[row], positions[row] = token, position
        out, new_keys, new_values = step(torch.tensor(tokens, device=self.device),
                                         torch.tensor(positions, device=self.device),
                                         self.keys[:, :size], self.values[:, :size])
        # eager, forward_one has stored them already (and into slot 0 of any row not fed: one whose
        # learned window slid, whose ring is never read again); a compiled step only reads the ring
        if step is not self.eager:
            self._store(batched, new_keys, new_values)
        return {row: out[row:row + 1] for row in batched}

    def _store(self, batched: dict[int, tuple[int, int]], new_keys, new_values) -> None:
        """Each fed row's new keys and values into its own slot of the ring (position % W)."""
        if len(batched) <= 2:  # a slice a row: fewer operations than indexing with tensors (a lone reply)
            for row, (_, position) in batched.items():
                slot = position % self.keys.shape[3]
                self.keys[:, row:row + 1, :, slot:slot + 1] = new_keys[:, row:row + 1]
                self.values[:, row:row + 1, :, slot:slot + 1] = new_values[:, row:row + 1]
            return
        rows = torch.tensor(list(batched), device=self.device)
        slots = torch.tensor([position % self.keys.shape[3] for _, position in batched.values()], device=self.device)
        self.keys[:, rows, :, slots] = new_keys[:, rows, :, 0].transpose(0, 1)  # each row's into its own slot: (rows, L, H, hs)
        self.values[:, rows, :, slots] = new_values[:, rows, :, 0].transpose(0, 1)


class BatchedStream:
    """A reply decoded by a Batcher: iterating gives its ids as they are sampled, as TokenStream's
    do (same stop token, max_new_tokens and deadline rules, same finish_reason). Leaving the loop
    early (a client gone) frees its row at the batch's next step."""

    def __init__(self, batcher, prompt_ids, max_new_tokens, temperature, top_k, generator, stop_token, deadline,
                 banned=()):
        self.batcher, self.prompt_ids, self.temperature, self.top_k = batcher, prompt_ids, temperature, top_k
        self.generator, self.banned = generator, banned
        self.rules = StopRules(max_new_tokens, stop_token, deadline)
        self.finish_reason: str | None = None
        self.made, self.last = 0, None  # ids sampled so far, and the last one (fed at the next step)
        self.cancelled = False
        self._ids: queue.SimpleQueue = queue.SimpleQueue()

    def __iter__(self) -> Iterator[int]:
        try:
            while True:
                item = self.batcher.next_item(self)
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
    """Continuous batching: every reply in progress advances one step at a time, one step for all of
    them. A new reply's prompt is read between two steps and it joins at the next; a finished one
    leaves and its row takes the next waiting reply. Each reply samples from its own logits with its
    own generator, so its ids are the ones a lone TokenStream would give for its seed (to float
    rounding in the batched matmuls: tests/test_engine.py).

    No thread of its own takes the steps: a reader that needs its next id and has none takes the
    next round for every reply (prompts joining, one step, rows freed), or, while another reader is
    taking one, waits for it. A lone reply is so decoded in its reader's thread, with no hand-off
    between threads per id (a served reply as fast as the decoder alone), and a reader held up
    (a slow client) holds up nobody: the others take the rounds, and its ids wait for it."""

    def __init__(self, model, rows: int, compiled: bool = False):
        self.batch = BatchedRows(model, rows, compiled)
        self.waiting: collections.deque[BatchedStream] = collections.deque()
        self.running: dict[int, BatchedStream] = {}  # row -> reply (touched only by the reader taking a round)
        self.leaving: set[int] = set()  # rows whose reply ended in this round (freed at its end)
        self.line = threading.Lock()  # the waiting line: any thread submits
        self.turn = threading.Lock()  # held by the reader taking a round
        self.round_done = threading.Condition()
        self.steps = 0  # batched steps taken (tests and bench.py read it)

    def submit(self, prompt_ids: list[int], max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
               generator: torch.Generator | None = None, stop_token: int | None = None,
               deadline: float | None = None, banned: tuple[int, ...] = ()) -> BatchedStream:
        stream = BatchedStream(self, prompt_ids, max_new_tokens, temperature, top_k, generator, stop_token, deadline,
                               banned)
        with self.line:
            self.waiting.append(stream)
        return stream

    def close(self) -> None:
        """Nothing to stop: rounds are taken by readers, and a reply nobody reads is never decoded."""

    def next_item(self, stream: BatchedStream):
        """The reply's next id (or its end, or the error that ended it), taking rounds until it has one."""
        while True:
            try:
                return stream._ids.get_nowait()
            except queue.Empty:
                pass
            if self.turn.acquire(blocking=False):
                try:
                    self._round()
                finally:
                    self.turn.release()
                    with self.round_done:
                        self.round_done.notify_all()
            else:
                with self.round_done:  # checked under the condition: a round that ends now still wakes us
                    self.round_done.wait_for(lambda: not stream._ids.empty() or not self.turn.locked())

    def _round(self) -> None:
        with self.line:
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
        """The reply's next id from its logits, ended by the same StopRules as a TokenStream."""
        if stream.cancelled:
            return self._leave(row, "cancelled")
        reason = stream.rules.before_any()
        if reason is None:
            token = next_id(logits, stream.temperature, stream.top_k, stream.generator, stream.banned)
            stream.made, stream.last = stream.made + 1, token
            reason = stream.rules.after(token, stream.made)
            if reason != "stop":
                stream._ids.put(token)
        if reason is not None:
            self._leave(row, reason)

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
