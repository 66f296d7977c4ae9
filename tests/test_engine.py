"""The streaming engine gives, token for token, what GPT.generate gives for a seed: on the fast path
with its KV cache (rotary and learned positions, before and after the context fills), on the
lecture's per-Head path (which recomputes), and for the bigram; it stops at the stop token, at
max_new_tokens and at the deadline."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import torch

from bigram import BigramLanguageModel
from config import GPTConfig
from gpt_final_version import GPT
from gptlib import engine
from gptlib.engine import (
    Batcher,
    CachedDecoder,
    RecomputingDecoder,
    StaticCacheDecoder,
    TokenStream,
    decoder_for,
    sample_rows,
)

VOCAB = 11


def tiny_gpt(attention="fast", position="rope", seed=0, block_size=8):
    torch.manual_seed(seed)
    config = GPTConfig(vocab_size=VOCAB, block_size=block_size, n_layer=2, n_head=2, n_embd=16, dropout=0.0,
                       attention=attention, position=position)
    return GPT(config).eval()


def engine_tokens(model, prompt, new, seed, **options):
    stream = TokenStream(decoder_for(model), prompt, new, temperature=1.0, generator=torch.Generator().manual_seed(seed),
                         **options)
    return list(stream), stream.finish_reason


def generate_tokens(model, prompt, new, seed, **options):
    out = model.generate(torch.tensor([prompt]), new, temperature=1.0, generator=torch.Generator().manual_seed(seed),
                         **options)
    return out[0, len(prompt):].tolist()


@pytest.mark.parametrize("attention", ["fast", "heads"])
@pytest.mark.parametrize("position", ["rope", "learned"])
@pytest.mark.parametrize("prompt_length", [1, 5, 12])  # 12: longer than the context of 8
def test_the_engine_gives_the_tokens_of_generate_for_a_seed(attention, position, prompt_length):
    model = tiny_gpt(attention, position)
    prompt = [i % VOCAB for i in range(3, 3 + prompt_length)]
    for seed in (0, 1):
        tokens, finish = engine_tokens(model, prompt, 30, seed)  # 30: well past the context
        assert tokens == generate_tokens(model, prompt, 30, seed) and finish == "length"
    expected = StaticCacheDecoder if attention == "fast" else RecomputingDecoder  # per-Head keeps no cache
    assert isinstance(decoder_for(model), expected)


@pytest.mark.parametrize("position", ["rope", "learned"])
def test_the_ring_starts_small_and_widens_to_block_size_with_the_tokens_of_generate(position):
    """A reply's ring holds 16 slots, then 32, 64: never fewer than its positions until block_size
    (64 here), then it wraps (rope) or the window is recomputed (learned), as with a full ring."""
    model = tiny_gpt("fast", position, block_size=64)
    prompt = [1, 2, 3]
    decoder = decoder_for(model)
    stream = TokenStream(decoder, prompt, 90, temperature=1.0, generator=torch.Generator().manual_seed(3))
    tokens, slots = zip(*[(token, decoder.keys.shape[3]) for token in stream])
    assert sorted(set(slots)) == [16, 32, 64] and slots[13] == 16 and slots[14] == 32  # token 14 came from position 16
    assert list(tokens) == generate_tokens(model, prompt, 90, 3)


def test_the_bigram_recomputes_and_matches_its_generate():
    torch.manual_seed(0)
    model = BigramLanguageModel(GPTConfig(vocab_size=VOCAB, block_size=8)).eval()
    assert isinstance(decoder_for(model), RecomputingDecoder)
    assert engine_tokens(model, [1, 2], 20, seed=4)[0] == generate_tokens(model, [1, 2], 20, seed=4)


def test_the_stop_token_ends_the_stream_and_is_not_yielded():
    model = tiny_gpt()
    free = generate_tokens(model, [1], 40, seed=2)
    stop = free[5]
    first = free.index(stop)
    tokens, finish = engine_tokens(model, [1], 40, seed=2, stop_token=stop)
    assert tokens == free[:first] and finish == "stop"


def test_a_passed_deadline_stops_after_one_token():
    tokens, finish = engine_tokens(tiny_gpt(), [1], 50, seed=0, deadline=time.monotonic() - 1)
    assert len(tokens) == 1 and finish == "length"


@pytest.mark.parametrize("decoder, steps", [(CachedDecoder, [1] * 19), (StaticCacheDecoder, [])])
def test_the_prompt_is_read_once_per_reply(decoder, steps):
    """One KV cache for a whole reply: the prompt goes through GPT.forward once; after it, each step
    feeds one position (CachedDecoder, through forward; StaticCacheDecoder, its own calls)."""
    model = tiny_gpt()
    lengths = []
    model.register_forward_pre_hook(lambda module, args: lengths.append(args[0].shape[1]))
    stream = TokenStream(decoder(model), [1, 2, 3, 4, 5], 20, generator=torch.Generator().manual_seed(0))
    assert len(list(stream)) == 20 and lengths == [5] + steps


@pytest.mark.parametrize("position", ["rope", "learned"])
@pytest.mark.parametrize("qk_norm", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_one_position_step_gives_the_logits_of_forward_bit_for_bit(position, qk_norm, dtype):
    """StaticCacheDecoder's eager step is the model's own GPT.forward_one: the logits of GPT.forward
    with a KVCache at every position, before and after the ring fills, bit for bit (in bfloat16
    too), since it attends over exactly the keys LayerCache gives forward()."""
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=VOCAB, block_size=8, n_layer=2, n_head=2, n_embd=16, dropout=0.0,
                       position=position, qk_norm=qk_norm)
    model = GPT(config).eval().to(dtype)
    plain, static = CachedDecoder(model), StaticCacheDecoder(model)
    assert torch.equal(plain.start([1, 2, 3]), static.start([1, 2, 3]))
    for token in [4, 5, 6, 7, 8, 9, 10, 1, 2, 3, 4, 5]:  # past the context of 8
        assert torch.equal(static.advance([token]), plain.advance([token]))


@pytest.mark.parametrize("position", ["rope", "learned"])
def test_a_bfloat16_model_decodes_exactly_its_generate_tokens(position):
    """A bfloat16 model gives its own tokens; the engine gives exactly those of its GPT.generate."""
    model = tiny_gpt("fast", position).to(torch.bfloat16)
    for seed in (0, 1, 2):
        assert engine_tokens(model, [1, 2, 3], 40, seed)[0] == generate_tokens(model, [1, 2, 3], 40, seed)


# ----------------------------------------------------------------------------------------------
# Continuous batching: many replies, one step for all


def batched_tokens(batcher, prompts, new, **options):
    streams = [batcher.submit(prompt, new, generator=torch.Generator().manual_seed(seed), **options)
               for seed, prompt in enumerate(prompts)]
    results = [None] * len(streams)

    def read(i):  # each reply read by its own thread, as the server's request threads do
        results[i] = list(streams[i])

    threads = [threading.Thread(target=read, args=(i,)) for i in range(len(streams))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results, [stream.finish_reason for stream in streams]


PROMPTS = [[1, 2, 3], [4], [5, 6, 7, 8, 9, 10, 1, 2, 3, 4], [2, 2], [3, 1, 4, 1, 5]]  # one longer than the context of 8


@pytest.mark.parametrize("position", ["rope", "learned"])
def test_batched_replies_get_the_tokens_each_would_get_alone(position):
    """Five replies through three rows (two wait, then take the rows of those that finish), each far
    past the context: every reply is what GPT.generate gives for its seed, and the batch took far
    fewer steps than the replies have tokens."""
    model = tiny_gpt("fast", position)
    batcher = Batcher(model, rows=3)
    try:
        tokens, finished = batched_tokens(batcher, PROMPTS, 30)
    finally:
        batcher.close()
    assert tokens == [generate_tokens(model, prompt, 30, seed) for seed, prompt in enumerate(PROMPTS)]
    assert finished == ["length"] * 5
    assert batcher.steps < 5 * 30 / 2  # batched: about two rounds of 30 steps, not 150


@pytest.mark.parametrize("position", ["rope", "learned"])
def test_the_batch_ring_widens_as_its_furthest_reply_needs_with_each_replys_tokens(position):
    model = tiny_gpt("fast", position, block_size=64)
    batcher = Batcher(model, rows=3)
    assert batcher.batch.keys.shape[3] == 16
    try:
        tokens, _ = batched_tokens(batcher, PROMPTS, 70)  # past the context of 64
    finally:
        batcher.close()
    assert tokens == [generate_tokens(model, prompt, 70, seed) for seed, prompt in enumerate(PROMPTS)]
    assert batcher.batch.keys.shape[3] == 64


def test_a_batched_reply_ends_at_its_stop_token_and_its_row_is_reused():
    model = tiny_gpt()
    free = generate_tokens(model, [1], 40, seed=0)
    stop = free[5]
    batcher = Batcher(model, rows=1)
    try:
        (stopped, after), finished = batched_tokens(batcher, [[1], [1]], 40, stop_token=stop)
    finally:
        batcher.close()
    assert stopped == free[:free.index(stop)] and finished[0] == "stop"
    assert after == generate_tokens(model, [1], 40, seed=1, stop_token=stop)[:len(after)] and finished[1] in ("stop", "length")


def test_a_reader_that_leaves_frees_its_row_and_a_bad_prompt_fails_only_its_reply():
    model = tiny_gpt()
    batcher = Batcher(model, rows=1)
    try:
        first = iter(batcher.submit([1, 2], 1000, generator=torch.Generator().manual_seed(0)))
        next(first)
        first.close()  # the reader is gone (a client that hung up): the row must not decode 1000 ids
        tokens, finished = batched_tokens(batcher, [[3]], 12)
    finally:
        batcher.close()
    assert tokens == [generate_tokens(model, [3], 12, seed=0)] and finished == ["length"]
    assert batcher.steps < 1000
    batcher = Batcher(model, rows=2)
    try:
        running = iter(batcher.submit([3], 40, generator=torch.Generator().manual_seed(0)))
        first_token = next(running)
        bad = batcher.submit([VOCAB + 5], 10)  # an id outside the vocabulary joins while the other decodes
        with pytest.raises(IndexError):
            list(bad)
        assert [first_token, *running] == generate_tokens(model, [3], 40, seed=0)
    finally:
        batcher.close()


def test_a_batched_reply_stops_at_its_deadline_with_at_least_one_token():
    batcher = Batcher(tiny_gpt(), rows=2)
    try:
        stream = batcher.submit([1], 50, deadline=time.monotonic() - 1)
        assert len(list(stream)) == 1 and stream.finish_reason == "length"
    finally:
        batcher.close()


@pytest.mark.slow  # compiling takes ~10-30 s a graph: rotary positions only, those of the presets and the shipped model
def test_the_compiled_batch_step_gives_the_tokens_of_generate_for_a_seed():
    """Graphs for 1 and 2 rows (the compiled single-reply decoder, CompiledDecoder, is checked over
    HTTP by tests/test_serve.py); three replies share them, each far past the context."""
    model = tiny_gpt("fast", "rope")
    batcher = Batcher(model, rows=2, compiled=True)
    try:
        tokens, _ = batched_tokens(batcher, PROMPTS[:3], 40)
    finally:
        batcher.close()
    assert tokens == [generate_tokens(model, prompt, 40, seed) for seed, prompt in enumerate(PROMPTS[:3])]


@pytest.mark.slow  # one compile of a small graph
def test_the_compiled_step_reads_a_widening_ring_with_one_graph_and_the_tokens_of_generate():
    model = tiny_gpt("fast", "rope", block_size=64)
    torch._dynamo.reset()
    with torch._dynamo.config.patch(error_on_recompile=True):  # 16, 32 and 64 slots: one graph
        tokens = list(TokenStream(decoder_for(model, compiled=True), [1, 2, 3], 90, temperature=1.0,
                                  generator=torch.Generator().manual_seed(3)))
    assert tokens == generate_tokens(model, [1, 2, 3], 90, 3)


# ----------------------------------------------------------------------------------------------
# Several samples of one prompt (model_handler.py --prompt --num_samples), and the engine's independence


@pytest.mark.parametrize("attention, position", [("fast", "rope"), ("fast", "learned"), ("heads", "learned")])
def test_samples_side_by_side_are_the_tokens_of_generate_for_a_seed(attention, position):
    """sample_rows draws as GPT.generate does (one multinomial over every row per step), so
    --num_samples gives the samples it gave before it went through the engine."""
    model = tiny_gpt(attention, position)
    prompt = [1, 2, 3]
    expected = model.generate(torch.tensor([prompt] * 3), 25, temperature=0.9, top_k=5,
                              generator=torch.Generator().manual_seed(4))[:, len(prompt):].tolist()
    samples = sample_rows(decoder_for(model), prompt, 3, 25, temperature=0.9, top_k=5,
                          generator=torch.Generator().manual_seed(4))
    assert samples == expected and len({tuple(row) for row in samples}) == 3


def test_the_engine_holds_no_copy_of_the_model():
    """A decode step is the model's own forward_one: the engine never names the model's modules or
    parameters, so renaming one (or adding QK-norm, or a new block) cannot break decoding."""
    source = Path(engine.__file__).read_text()
    for name in ("blocks", "lm_head", "ln_f", "ln1", "qkv", "proj", "ffwd", "token_embedding", "position_embedding",
                 "F.linear", "F.layer_norm", "scaled_dot_product_attention"):
        assert name not in source, name
