"""Invariants of the model: shapes, causality, initial loss, overfitting, the fast path equals the
teaching path, and KV-cache generation equals recomputing the context."""
import math

import pytest
import torch

from config import GPTConfig
from gpt_final_version import GPT, convert_attention_weights

V = 65


def tiny_config(**overrides) -> GPTConfig:
    values = dict(vocab_size=V, block_size=16, n_embd=32, n_head=4, n_layer=2, dropout=0.0)
    values.update(overrides)
    return GPTConfig(**values)


def tiny_model(seed=0, **overrides) -> GPT:
    torch.manual_seed(seed)
    return GPT(tiny_config(**overrides))


def random_tokens(batch, length, seed=1):
    return torch.randint(V, (batch, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("attention", ["fast", "heads"])
def test_forward_shapes(attention):
    model = tiny_model(attention=attention)
    idx = random_tokens(3, 10)
    logits, loss = model(idx)
    assert logits.shape == (3, 10, V) and loss is None
    logits, loss = model(idx, idx)
    assert logits.shape == (3, 10, V) and loss.shape == ()


@pytest.mark.parametrize("attention, position", [("fast", "learned"), ("heads", "learned"), ("fast", "rope"), ("heads", "rope")])
def test_changing_a_later_token_leaves_earlier_logits_unchanged(attention, position):
    model = tiny_model(attention=attention, position=position).eval()
    idx = random_tokens(2, 16)
    changed = idx.clone()
    changed[:, 9] = (changed[:, 9] + 1) % V
    before, _ = model(idx)
    after, _ = model(changed)
    torch.testing.assert_close(before[:, :9], after[:, :9], rtol=0, atol=0)
    assert not torch.allclose(before[:, 9:], after[:, 9:])


def test_loss_at_initialisation_is_close_to_uniform():
    model = tiny_model()
    idx = random_tokens(8, 16)
    _, loss = model(idx, random_tokens(8, 16, seed=2))
    assert abs(loss.item() - math.log(V)) < 0.05


def test_a_tiny_model_overfits_one_batch():
    model = tiny_model()
    idx, targets = random_tokens(4, 16), random_tokens(4, 16, seed=3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(300):
        _, loss = model(idx, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.05


def test_targets_of_minus_one_contribute_no_loss_or_gradient():
    model = tiny_model()
    idx, targets = random_tokens(2, 16), random_tokens(2, 16, seed=4)
    masked = targets.clone()
    masked[:, :8] = -1
    _, loss_masked = model(idx, masked)
    logits, _ = model(idx)
    expected = torch.nn.functional.cross_entropy(logits[:, 8:].reshape(-1, V), targets[:, 8:].reshape(-1))
    torch.testing.assert_close(loss_masked, expected)


# ----------------------------------------------------------------------------------------------
# The fast path computes the same function as the lecture's per-Head path


def copy_heads_into_fused(heads_model: GPT, fast_model: GPT) -> None:
    """The model file's own converter: the per-Head weights in the one-matmul QKV layout."""
    fast_model.load_state_dict(convert_attention_weights(heads_model.state_dict(), heads_model.config, "fast"))


@pytest.mark.parametrize("start", ["heads", "fast"])
def test_converting_there_and_back_gives_the_same_tensors(start):
    model = tiny_model(attention=start)
    other = "fast" if start == "heads" else "heads"
    there = convert_attention_weights(model.state_dict(), model.config, other)
    tiny_model(attention=other).load_state_dict(there)  # every name and shape fits the other class
    back = convert_attention_weights(there, model.config, start)
    assert back.keys() == model.state_dict().keys()
    for name, value in model.state_dict().items():
        assert torch.equal(back[name], value), name


@pytest.mark.parametrize("position", ["learned", "rope"])
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_fast_attention_equals_per_head_attention(mode, position):
    heads_model = tiny_model(attention="heads", position=position)
    fast_model = tiny_model(seed=5, attention="fast", position=position)
    copy_heads_into_fused(heads_model, fast_model)
    for m in (heads_model, fast_model):
        m.train(mode == "train")
    idx, targets = random_tokens(3, 16), random_tokens(3, 16, seed=6)
    logits_h, loss_h = heads_model(idx, targets)
    logits_f, loss_f = fast_model(idx, targets)
    torch.testing.assert_close(logits_f, logits_h, rtol=1e-5, atol=1e-5)
    loss_h.backward()
    loss_f.backward()
    grads_h = dict(heads_model.named_parameters())
    for name, param in fast_model.named_parameters():
        if "qkv" in name:
            block = heads_model.blocks[int(name.split(".")[1])]
            expected = torch.cat([torch.cat([getattr(h, part).weight.grad for h in block.attn.heads])
                                  for part in ("query", "key", "value")])
        else:
            expected = grads_h[name].grad
        torch.testing.assert_close(param.grad, expected, rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# Generation


def test_generate_length_prefix_and_context_cropping():
    model = tiny_model().eval()
    prompt = random_tokens(2, 5)
    out = model.generate(prompt, 40, generator=torch.Generator().manual_seed(0))  # 45 > block_size 16
    assert out.shape == (2, 45)
    assert torch.equal(out[:, :5], prompt)
    assert out.max() < V and out.min() >= 0


def test_generate_is_deterministic_for_a_seed():
    model = tiny_model().eval()
    prompt = random_tokens(1, 3)
    a = model.generate(prompt, 30, generator=torch.Generator().manual_seed(7))
    b = model.generate(prompt, 30, generator=torch.Generator().manual_seed(7))
    c = model.generate(prompt, 30, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("position", ["learned", "rope"])
@pytest.mark.parametrize("new_tokens", [8, 40])  # before and after the context fills (block_size 16)
@pytest.mark.parametrize("top_k", [None, 5])
@pytest.mark.parametrize("prompt_length", [4, 20])  # a prompt longer than the context too
def test_kv_cache_generation_equals_recomputing_the_context(new_tokens, top_k, position, prompt_length):
    model = tiny_model(position=position).eval()
    prompt = random_tokens(2, prompt_length)
    cached = model.generate(prompt, new_tokens, top_k=top_k, generator=torch.Generator().manual_seed(9), use_cache=True)
    plain = model.generate(prompt, new_tokens, top_k=top_k, generator=torch.Generator().manual_seed(9), use_cache=False)
    assert torch.equal(cached, plain)


@pytest.mark.parametrize("position, length", [("learned", 12), ("rope", 40)])
def test_cached_logits_match_full_forward(position, length):
    """Rotary: past block_size the rolling cache equals a full forward with a sliding-window mask."""
    model = tiny_model(position=position).eval()
    from gpt_final_version import KVCache

    idx = random_tokens(1, length)
    full, _ = model(idx)
    cache = KVCache(model.config)
    model(idx[:, :5], cache=cache)
    for t in range(5, length):
        step, _ = model(idx[:, t:t + 1], cache=cache)
        torch.testing.assert_close(step[:, 0], full[:, t], rtol=1e-5, atol=1e-5)


def test_greedy_generation_with_temperature_zero_takes_the_argmax():
    model = tiny_model().eval()
    prompt = random_tokens(1, 4)
    out = model.generate(prompt, 1, temperature=0)
    logits, _ = model(prompt)
    assert out[0, -1].item() == logits[0, -1].argmax().item()


# ----------------------------------------------------------------------------------------------
# The CPU's training path with dropout: attention written out, masks drawn 16 bits at a time


def test_dropout_masks_keep_one_minus_p_and_fast_dropout_is_nn_dropouts_formula():
    import gpt_final_version as model_file
    torch.manual_seed(3)
    mask = model_file.dropout_mask((1000, 1000), 0.2, "cpu")
    assert abs(mask.float().mean().item() - 0.8) < 4 * math.sqrt(0.8 * 0.2 / 1e6)  # four standard errors
    dropout = model_file.FastDropout(0.2).train()
    x = torch.randn(64, 33)  # an odd count: the last 32-bit draw is split
    torch.manual_seed(5)
    expected = x * model_file.dropout_mask(x.shape, 0.2, "cpu") / 0.8
    torch.manual_seed(5)
    assert torch.allclose(dropout(x), expected)
    assert torch.equal(dropout.eval()(x), x)


@pytest.mark.parametrize("length", [8, 20])  # 20: past block_size 8, the sliding-window mask (rotary)
def test_attention_written_out_equals_the_fused_kernel_when_nothing_is_dropped(monkeypatch, length):
    """The path training takes on a CPU with dropout, given a mask that keeps everything, gives the
    fused kernel's outputs and gradients: the same arithmetic, only the mask drawn differently."""
    import gpt_final_version as model_file
    monkeypatch.setattr(model_file, "dropout_mask", lambda shape, p, device: torch.ones(shape, dtype=torch.bool))
    torch.manual_seed(0)
    fast = GPT(tiny_config(position="rope", dropout=0.2)).train()
    plain = GPT(tiny_config(position="rope", dropout=0.0)).train()
    plain.load_state_dict(fast.state_dict())
    idx, targets = random_tokens(2, length), random_tokens(2, length, seed=2)
    (fast_logits, fast_loss), (plain_logits, plain_loss) = fast(idx, targets), plain(idx, targets)
    assert not torch.allclose(fast_logits, plain_logits)  # kept everything, yet scaled by 1 / (1 - p): it ran
    for module in fast.modules():  # without the scaling, the two are the same function
        if isinstance(module, model_file.FastDropout):
            module.p = 1e-12
    fast_logits, fast_loss = fast(idx, targets)
    fast_loss.backward()
    plain_loss.backward()
    assert torch.allclose(fast_logits, plain_logits, atol=1e-5)
    for (name, a), b in zip(fast.named_parameters(), plain.parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-5), name
