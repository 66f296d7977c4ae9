"""A character-level GPT, written to be read: Head -> MultiHeadAttention -> FeedForward -> Block -> GPT.

    python gpt_final_version.py                        # train with the preset for this machine
    python gpt_final_version.py --preset=lecture       # the lecture's model and hyperparameters
    python gpt_final_version.py --preset=tiny          # a toy run that finishes in seconds
    python gpt_final_version.py --max_iters=500 --n_layer=2 --dropout=0.1
    python gpt_final_version.py --resume=models/NAME.pt --max_iters=4000
    python gpt_final_version.py --help                 # every option and preset

Shapes in comments: B = batch, T = time (characters), C = channels (n_embd), H = heads,
hs = head size (C / H), V = vocabulary size.

Two attention classes compute the same function (tests/test_model.py proves it, and
convert_attention_weights() moves a trained model from one to the other):
  * MultiHeadAttention (--attention=heads): the lecture's version, one small Head module per head
    and a Python loop over them. Read this one first.
  * CausalSelfAttention (--attention=fast, the default): one matmul makes q, k, v for all heads and
    PyTorch's fused scaled_dot_product_attention does the rest. It also supports the KV cache used
    by generate(), so each new character costs one position instead of the whole context. Training
    on a CPU with dropout, where torch's kernel falls back to plain arithmetic anyway, it writes
    attention out itself (attend_with_dropout) so its dropout masks come from dropout_mask.

Dropout outside the lecture's Head uses FastDropout: nn.Dropout's function, with masks drawn two
elements per random number on a CPU (at the lecture's shape torch's own masks were a sixth of a step).

Generation feeds one new position at a time: GPT.forward_one (and the forward_one of Block and
CausalSelfAttention) is forward() for that case, over a ring of cached keys and values. It is the
step the streaming engine (gptlib/engine.py) runs, eager or under torch.compile; tests/test_engine.py
proves it gives forward()'s logits and generate()'s tokens.

GPT-2's published weights load into this same GPT (gptlib/pretrained.py maps them by name): GPTConfig's
qkv_bias, lm_head_bias, tie_embeddings and activation="gelu_tanh" switch on what GPT-2 has and our
character models do not; left at their defaults, nothing below changes.

This file imports only torch and the model's config: the training loop (gptlib/train.py) is loaded
by main() when you train, never when another program imports the model. The CPU speed tricks
(FastDropout's masks) sit in a closing section, after the model.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from config import GPTConfig
from gptlib.errors import run_cli

# ==============================================================================================
# Small functions the model is built from


def masked_cross_entropy(logits, targets):
    """Mean cross-entropy of logits (B, T, V) against targets (B, T). A target of -1 is not learned
    (a chat partner's words); the mean is over the rest, and a batch with nothing to learn gives 0,
    not the 0/0 = nan of a plain mean."""
    B, T, V = logits.shape
    summed = F.cross_entropy(logits.reshape(B * T, V), targets.reshape(B * T), ignore_index=-1, reduction="sum")
    return summed / (targets != -1).sum().clamp(min=1)


def rotary_frequencies(config: GPTConfig, device=None):
    """(hs/2,) turns per position: pair i of q and k turns by pos / rope_theta^(2i/hs). With Llama 3's
    scaling, pairs whose wavelength is long next to the original context turn `factor` times slower
    (so a longer context looks familiar), short ones are kept, and the band between is blended."""
    hs = config.head_size
    freq = 1.0 / config.rope_theta ** (torch.arange(0, hs, 2, device=device).float() / hs)
    if not config.rope_scaling_factor:
        return freq
    wavelength = 2 * math.pi / freq
    context, low, high = config.rope_original_context, config.rope_low_freq_factor, config.rope_high_freq_factor
    blend = ((context / wavelength - low) / (high - low)).clamp(0, 1)  # 0: long waves, 1: short ones
    return (1 - blend) * freq / config.rope_scaling_factor + blend * freq


def rotary_angles(pos, frequencies):
    """cos and sin of position x frequency, (T, hs/2), for positions pos (T,)."""
    angles = pos.float()[:, None] * frequencies[None, :].to(pos.device)
    return angles.cos(), angles.sin()


def apply_rotary(x, cos, sin):
    """Rotate the two halves of the last dimension of x (..., T, hs) as pairs of coordinates."""
    x1, x2 = x.float().chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).type_as(x)


def one_query_attention(q, k, v, cached_k, cached_v, seen):
    """scaled_dot_product_attention for one query per row (B, H, 1, hs), written out: the query
    attends to the cached keys it has `seen` (B, 1, 1, W) and to its own key k. Keys and values
    have Hkv heads, each shared by a group of H / Hkv query heads (H == Hkv without grouping)."""
    B, H, _, hs = q.shape
    q = q.view(B, k.size(1), H // k.size(1), hs)  # (B, Hkv, group, hs): a key head's queries side by side
    scale = hs ** -0.5
    earlier = ((q @ cached_k.transpose(-2, -1)) * scale).masked_fill(~seen, float("-inf"))  # (B, Hkv, group, W)
    own = (q * k).sum(-1, keepdim=True) * scale  # (B, Hkv, group, 1)
    weights = torch.softmax(torch.cat((earlier, own), dim=-1), dim=-1)
    out = weights[..., :-1] @ cached_v + weights[..., -1:] * v  # (B, Hkv, group, hs)
    return out.reshape(B, H, 1, hs)


def attend(q, k, v, mask=None, causal=False, dropout_p=0.0):
    """scaled_dot_product_attention, with grouped keys and values (fewer heads than q) shared out."""
    grouped = k.size(1) != q.size(1)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, dropout_p=dropout_p,
                                          enable_gqa=grouped)


def make_norm(config: GPTConfig, size: int) -> nn.Module:
    """LayerNorm (subtract the mean, divide by the spread, learned gain and bias) or RMSNorm (Llama:
    divide by the root mean square, learned gain only; cheaper, and trains as well)."""
    if config.norm == "rmsnorm":
        return nn.RMSNorm(size, eps=config.norm_eps)
    return nn.LayerNorm(size, eps=config.norm_eps, bias=config.bias)


def sliding_window_mask(T, window, device):
    """(T, T) bool, True where query i may attend to key j: j <= i and i - j < window.
    Only rotary models see more than block_size positions; each then looks back block_size of them."""
    i = torch.arange(T, device=device)[:, None]
    j = torch.arange(T, device=device)[None, :]
    return (j <= i) & (i - j < window)


# ==============================================================================================
# Attention, the lecture's way: one Head module per head


class Head(nn.Module):
    """One head of causal self-attention: each position mixes the values of earlier positions."""

    def __init__(self, config: GPTConfig, head_size: int):
        super().__init__()
        self.key = nn.Linear(config.n_embd, head_size, bias=config.qkv_bias)
        self.query = nn.Linear(config.n_embd, head_size, bias=config.qkv_bias)
        self.value = nn.Linear(config.n_embd, head_size, bias=config.qkv_bias)
        # the lower-triangular mask: position t may look at positions 0..t only
        self.register_buffer("tril", torch.tril(torch.ones(config.block_size, config.block_size)), persistent=False)
        self.block_size = config.block_size
        self.qk_norm = config.qk_norm
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x, rotary=None):
        B, T, C = x.shape
        k = self.key(x)  # (B, T, hs)
        q = self.query(x)  # (B, T, hs)
        if self.qk_norm:  # every query and key gets root-mean-square 1, so no affinity can blow up
            q, k = F.rms_norm(q, q.shape[-1:]), F.rms_norm(k, k.shape[-1:])
        if rotary is not None:  # rotary positions: turn q and k by angles that grow with position
            q, k = apply_rotary(q, *rotary), apply_rotary(k, *rotary)
        # affinities, scaled by 1/sqrt(hs) so the softmax stays soft at initialisation
        wei = q @ k.transpose(-2, -1) * k.shape[-1] ** -0.5  # (B, T, T)
        visible = self.tril[:T, :T] if T <= self.block_size else sliding_window_mask(T, self.block_size, x.device)
        wei = wei.masked_fill(visible == 0, float("-inf"))  # no peeking at the future
        wei = F.softmax(wei, dim=-1)
        wei = self.dropout(wei)
        v = self.value(x)  # (B, T, hs)
        return wei @ v  # (B, T, hs)


class MultiHeadAttention(nn.Module):
    """Several heads in parallel, concatenated, then projected back into the residual stream."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        head_size = config.n_embd // config.n_head
        self.heads = nn.ModuleList([Head(config, head_size) for _ in range(config.n_head)])
        self.proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x, cache=None, rotary=None):
        assert cache is None, "the lecture's attention keeps no KV cache; generate() recomputes the context"
        out = torch.cat([h(x, rotary) for h in self.heads], dim=-1)  # (B, T, C)
        return self.dropout(self.proj(out))


# ==============================================================================================
# Attention, the fast way: the same function with one matmul for q, k, v and a fused kernel


class CausalSelfAttention(nn.Module):
    """MultiHeadAttention's function in a few large operations. The weights of all heads' queries,
    keys and values sit in one (3C, C) matrix: rows [q of head 0, q of head 1, ..., k of head 0, ...,
    v ...], so the Head modules' weights stacked in that order give the same outputs."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head, self.n_kv_head, self.head_size = config.n_head, config.kv_heads, config.head_size
        self.block_size = config.block_size
        self.dropout_p = config.dropout
        self.qk_norm = config.qk_norm
        # Grouped-query attention (Llama, Qwen): fewer key/value heads than query heads, so the
        # rows are [q: H x hs | k: Hkv x hs | v: Hkv x hs]; without grouping, (3C, C) as above.
        widths = [self.n_head * self.head_size] + 2 * [self.n_kv_head * self.head_size]
        self.widths = widths
        self.qkv = nn.Linear(config.n_embd, sum(widths), bias=config.qkv_bias)
        self.proj = nn.Linear(widths[0], config.n_embd, bias=config.bias)
        if config.qk_norm:  # the root mean square of each head's q and k set to 1; Qwen3 then applies a learned gain
            gain, eps = config.qk_norm_gain, config.norm_eps if config.qk_norm_gain else None
            self.q_norm = nn.RMSNorm(self.head_size, eps=eps, elementwise_affine=gain)
            self.k_norm = nn.RMSNorm(self.head_size, eps=eps, elementwise_affine=gain)
        self.attention_dropout = FastDropout(config.dropout)
        self.dropout = FastDropout(config.dropout)

    def split_heads(self, x):
        """The qkv projection of x (B, T, C) as q (B, H, T, hs) and k, v (B, Hkv, T, hs), q and k normed."""
        B, T, _ = x.shape
        q, k, v = self.qkv(x).split(self.widths, dim=2)
        q = q.view(B, T, self.n_head, self.head_size).transpose(1, 2)
        k, v = (t.view(B, T, self.n_kv_head, self.head_size).transpose(1, 2) for t in (k, v))
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        return q, k, v

    def forward(self, x, cache: LayerCache | None = None, rotary=None):
        B, T, C = x.shape
        q, k, v = self.split_heads(x)  # (B, H, T, hs), (B, Hkv, T, hs) twice
        if rotary is not None:
            q, k = apply_rotary(q, *rotary), apply_rotary(k, *rotary)
        mask, causal = None, True
        if T > self.block_size:  # (rotary only) each position sees the last block_size positions
            mask, causal = sliding_window_mask(T, self.block_size, x.device), False
        if cache is not None:
            assert T == 1 or cache.length == 0, "extend a non-empty cache one position at a time"
            k_all, v_all = cache.append(k, v)  # (B, H, cached, hs): the new position's keys included
            if T == 1:  # one new query may see every cached key; rotary keys need no order
                k, v, causal = k_all, v_all, False
        if self.training and self.dropout_p > 0 and x.device.type == "cpu":
            out = self.attend_with_dropout(q, k, v, mask)
        else:
            out = attend(q, k, v, mask, causal, self.dropout_p if self.training else 0.0)
        out = out.transpose(1, 2).contiguous().view(B, T, -1)  # heads side by side again
        return self.dropout(self.proj(out))

    def forward_one(self, x, cached_k, cached_v, ring: RingSlots, rotary=None):
        """forward() for one new position per row, x (B, 1, C), after earlier ones whose keys and
        values (B, H, W, hs) sit in a ring (`ring` says which slots each row sees and where its new
        position goes). Returns the output and the new k and v (B, H, 1, hs). Compiled, the ring is
        only read and attention is written out, which torch.compile fuses into a few loops; eager,
        k and v go into the ring at once and one call of the fused kernel reads it (cheaper than a
        dozen small operations)."""
        B = x.shape[0]
        q, k, v = self.split_heads(x)  # (B, H, 1, hs), (B, Hkv, 1, hs) twice
        if rotary is not None:
            q, k = apply_rotary(q, *rotary), apply_rotary(k, *rotary)
        if torch.compiler.is_compiling():
            out = one_query_attention(q, k, v, cached_k, cached_v, ring.earlier)
        elif ring.filled is not None:  # the keys forward() with a KVCache attends over: the same bits
            s = ring.first_slot
            cached_k[:, :, s:s + 1], cached_v[:, :, s:s + 1] = k, v
            out = attend(q, cached_k[:, :, :ring.filled], cached_v[:, :, :ring.filled])
        else:  # rows at different positions (continuous batching): each row's slot, then a mask
            slot = ring.slot.expand_as(k)  # (B, H, 1, hs)
            cached_k.scatter_(2, slot, k)
            cached_v.scatter_(2, slot, v)
            out = attend(q, cached_k, cached_v, ring.visible)
        return self.proj(out.transpose(1, 2).reshape(B, 1, -1)), k, v

    def attend_with_dropout(self, q, k, v, mask=None):
        """What scaled_dot_product_attention(dropout_p) computes in training, written out: on a CPU
        torch falls back to this same arithmetic with a slower dropout mask (tests/test_model.py
        proves the two equal for the same mask)."""
        T = q.size(-2)
        k, v = (t.repeat_interleave(q.size(1) // t.size(1), dim=1) for t in (k, v))  # grouped heads shared out
        allowed = mask if mask is not None else torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
        weights = (q * q.size(-1) ** -0.5) @ k.transpose(-2, -1)  # (B, H, T, T); scaled on the smaller side
        weights = weights.masked_fill_(~allowed, float("-inf")).softmax(dim=-1)
        return self.attention_dropout(weights) @ v  # (B, H, T, hs)


# ==============================================================================================
# Computation, and the block that joins the two


class ReLUSquared(nn.Module):
    """max(0, x)^2: a sharper ReLU that trains small models a little faster (Primer, So et al. 2021)."""

    def forward(self, x):
        return F.relu(x).square()


class FeedForward(nn.Module):
    """A per-position MLP: widen (4x, or ffn_hidden), non-linearity, project back. SwiGLU (Llama)
    widens twice: silu(gate(x)) decides, element by element, how much of up(x) passes."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        hidden = config.ffn_hidden or 4 * config.n_embd
        self.up = nn.Linear(config.n_embd, hidden, bias=config.bias)
        self.gate = nn.Linear(config.n_embd, hidden, bias=config.bias) if config.activation == "swiglu" else None
        self.activation = {"relu": nn.ReLU(), "gelu": nn.GELU(), "gelu_tanh": nn.GELU(approximate="tanh"),
                           "relu2": ReLUSquared(), "swiglu": nn.SiLU()}[config.activation]
        self.proj = nn.Linear(hidden, config.n_embd, bias=config.bias)
        self.dropout = FastDropout(config.dropout)  # nn.Dropout's function, cheaper masks on a CPU

    def forward(self, x):
        if self.gate is not None:
            return self.dropout(self.proj(self.activation(self.gate(x)) * self.up(x)))
        return self.dropout(self.proj(self.activation(self.up(x))))


ATTENTION_CLASSES = {"heads": MultiHeadAttention, "fast": CausalSelfAttention}


class Block(nn.Module):
    """Communication (attention) then computation (feed-forward), each on a pre-norm residual branch."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln1 = make_norm(config, config.n_embd)
        self.attn = ATTENTION_CLASSES[config.attention](config)
        self.ln2 = make_norm(config, config.n_embd)
        self.ffwd = FeedForward(config)

    def forward(self, x, cache=None, rotary=None):
        x = x + self.attn(self.ln1(x), cache, rotary)  # (B, T, C)
        x = x + self.ffwd(self.ln2(x))
        return x

    def forward_one(self, x, cached_k, cached_v, ring: RingSlots, rotary=None):
        """forward() for one new position per row (CausalSelfAttention.forward_one): returns x and
        the position's new keys and values."""
        out, k, v = self.attn.forward_one(self.ln1(x), cached_k, cached_v, ring, rotary)
        x = x + out
        return x + self.ffwd(self.ln2(x)), k, v


# ==============================================================================================
# Pieces of generation: picking the next character, and the KV cache of the fast path


def sample_next(logits, temperature=1.0, top_k=None, generator=None):
    """Pick the next id for each row of logits (B, V). Sampling happens on the CPU: it is cheap,
    the same seed gives the same text on every device, and it avoids torch.multinomial on mps."""
    logits = logits.float().cpu()
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits / temperature
    if top_k:
        kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, [-1]]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = F.softmax(logits, dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator)


class LayerCache:
    """Keys and values of one layer for the last block_size positions, in a preallocated ring:
    position p lives in slot p % block_size, so the oldest is overwritten once the ring is full."""

    def __init__(self, block_size):
        self.block_size = block_size
        self.k = self.v = None
        self.length = 0  # positions seen so far

    def append(self, k, v):
        """Store keys/values (B, H, T, hs) of the next T positions; return those a new query may see."""
        if self.k is None:  # allocate on first use, in the dtype the layer computes in
            B, H, _, hs = k.shape
            self.k = k.new_empty(B, H, self.block_size, hs)
            self.v = torch.empty_like(self.k)
        T, W = k.shape[2], self.block_size
        keep = min(T, W)  # a long prompt leaves only its last W positions in the ring
        slots = torch.arange(self.length + T - keep, self.length + T, device=k.device) % W
        self.k[:, :, slots] = k[:, :, -keep:]
        self.v[:, :, slots] = v[:, :, -keep:]
        self.length += T
        filled = min(self.length, W)
        return self.k[:, :, :filled], self.v[:, :, :filled]


class KVCache:
    """One LayerCache per Block, and how many positions they hold."""

    def __init__(self, config: GPTConfig):
        self.layers = [LayerCache(config.block_size) for _ in range(config.n_layer)]
        self.length = 0


class RingSlots(NamedTuple):
    """Where one new position of each row goes in a ring of W slots (LayerCache's layout: position
    p in slot p % W), and what it sees there (GPT.forward_one). Rows all at one position (one
    reply, or the samples of one prompt) see the slots LayerCache.append gives forward(): the
    first `filled`, the new one at `first_slot`."""

    slot: torch.Tensor | None  # (B, 1, 1, 1) long: the slot each row's new position takes
    earlier: torch.Tensor | None  # (B, 1, 1, W) bool: the slots of earlier positions a row still sees
    visible: torch.Tensor | None  # (B, 1, 1, W) 0 where a row looks once its own slot is written, -inf elsewhere
    filled: int | None = None  # rows at one position: they see slots 0..filled-1
    first_slot: int | None = None  # rows at one position: their new slot

    @staticmethod
    def of(positions, W, dtype=torch.float32):
        if not torch.compiler.is_compiling():
            first = int(positions[0])
            if positions.numel() == 1 or bool((positions == first).all()):
                return RingSlots(None, None, None, min(first + 1, W), first % W)
        positions = positions.view(-1, 1, 1, 1)
        slot = positions % W
        slots = torch.arange(W, device=positions.device)
        earlier = (slots < positions) & (slots != slot)  # not the one the new position overwrites
        if torch.compiler.is_compiling():  # the graph reads only `earlier`
            return RingSlots(slot, earlier, None)
        visible = torch.zeros(earlier.shape, dtype=dtype, device=positions.device)
        return RingSlots(slot, earlier, visible.masked_fill_(~(earlier | (slots == slot)), float("-inf")))


# ==============================================================================================
# The model


class GPT(nn.Module):
    """Token + position embeddings, n_layer Blocks, a final LayerNorm and a linear head to logits."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        config.validate()
        self.config = config
        self.token_embedding = nn.Embedding(config.vocab_size, config.n_embd)
        if config.position == "learned":  # one learned vector per position (the lecture's way)
            self.position_embedding = nn.Embedding(config.block_size, config.n_embd)
        self.drop = FastDropout(config.dropout)
        self.blocks = nn.ModuleList([Block(config) for _ in range(config.n_layer)])
        self.ln_f = make_norm(config, config.n_embd)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=config.lm_head_bias)
        if config.tie_embeddings:  # GPT-2: one (V, C) matrix reads tokens in and scores them out
            self.lm_head.weight = self.token_embedding.weight
        self.apply(self._init_weights)
        # GPT-2: the projections that write into the residual stream start smaller, so its variance
        # does not grow with depth (two such writes per block).
        for name, param in self.named_parameters():
            if name.endswith("proj.weight"):
                nn.init.normal_(param, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def _init_weights(self, module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, idx, targets=None, cache: KVCache | None = None):
        """idx (B, T) of token ids -> logits (B, T, V), and the mean cross-entropy if targets are given.

        A target of -1 is ignored (used to learn only some positions, e.g. one's own chat replies).
        """
        B, T = idx.shape
        start = 0 if cache is None else cache.length
        pos = torch.arange(start, start + T, device=idx.device)  # (T,)
        x = self.token_embedding(idx)  # (B, T, C)
        rotary = None
        if self.config.position == "learned":
            assert start + T <= self.config.block_size, f"context {start + T} exceeds block_size {self.config.block_size}"
            x = x + self.position_embedding(pos)
        else:  # rotary: positions enter attention as rotations of q and k, not as added vectors
            rotary = self.rotary_angles(pos)
        x = self.drop(x)
        for i, block in enumerate(self.blocks):
            x = block(x, None if cache is None else cache.layers[i], rotary)
        logits = self.lm_head(self.ln_f(x))  # (B, T, V)
        if cache is not None:
            cache.length += T
        loss = None if targets is None else masked_cross_entropy(logits, targets)
        return logits, loss

    def rotary_angles(self, pos):
        """cos, sin (T, hs/2) of the rotary turns at positions pos (T,)."""
        return rotary_angles(pos, rotary_frequencies(self.config, pos.device))

    # ------------------------------------------------------------------------------------------
    # Generation

    @torch.no_grad()
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, generator=None,
                 use_cache=True, stop_token=None):
        """Extend idx (B, T) by max_new_tokens sampled characters. Each position attends to at most
        block_size positions: with learned positions the context is cropped to the last block_size
        characters; with rotary positions every layer looks back block_size positions (a sliding
        window). With use_cache (fast path only) keys and values are kept between steps, which gives
        the same tokens as recomputing every step, only faster. `stop_token` ends generation once
        every row has produced it."""
        use_cache = use_cache and self.config.attention == "fast"
        cache, done = None, torch.zeros(idx.shape[0], dtype=torch.bool)
        for _ in range(max_new_tokens):
            if use_cache:
                logits, cache = self._next_logits_cached(idx, cache)
            else:
                context = idx if self.config.position == "rope" else idx[:, -self.config.block_size:]
                logits, _ = self(context)
                logits = logits[:, -1, :]  # (B, V): only the last position predicts the next char
            next_id = sample_next(logits, temperature, top_k, generator)  # (B, 1), on the CPU
            idx = torch.cat((idx, next_id.to(idx.device)), dim=1)
            if stop_token is not None:
                done |= next_id[:, 0] == stop_token
                if done.all():
                    break
        return idx

    def _next_logits_cached(self, idx, cache):
        """Feed only what the cache has not seen. With learned positions, once the context is longer
        than block_size the crop slides, every position changes and the window is recomputed
        (exact, but no faster). Rotary keys depend only on relative distance, so that cache rolls on."""
        if cache is None or self.window_slides(idx.shape[1]):
            cache = KVCache(self.config)
            learned = self.config.position == "learned"
            logits, _ = self(idx[:, -self.config.block_size:] if learned else idx, cache=cache)
        else:
            logits, _ = self(idx[:, -1:], cache=cache)
        return logits[:, -1, :], cache

    def window_slides(self, length: int) -> bool:
        """Whether a cache of `length` ids must be rebuilt from the last block_size: with learned
        positions the context is cropped to them, so past block_size every id changes position at
        each step. Rotary keys carry only relative distance: their cache rolls on."""
        return self.config.position == "learned" and length > self.config.block_size

    # ------------------------------------------------------------------------------------------
    # One position at a time: the step the streaming engine (gptlib/engine.py) runs and compiles

    def forward_one(self, tokens, positions, keys, values, rotary=None):
        """forward() for one new token per row, with the keys and values of earlier positions in a
        ring of W slots, position p in slot p % W (LayerCache's, W = block_size; fewer while no row is
        that long). tokens, positions: (B,); keys, values: (L, B, H, W, hs); rotary: cos, sin (B, 1, 1, hs/2) of the
        positions (rope models). Returns the next logits (B, V) and the new keys and values
        (L, B, H, 1, hs): the caller stores them in slot position % W (a compiled step that wrote
        into its input would copy the whole cache in and out each time; eager, each layer stores
        them itself before attending)."""
        ring = RingSlots.of(positions, keys.shape[3], keys.dtype)
        x = self.token_embedding(tokens[:, None])  # (B, 1, C)
        if self.config.position == "learned":
            x = x + self.position_embedding(positions[:, None])
        new_keys, new_values = [], []
        for i, block in enumerate(self.blocks):
            x, k, v = block.forward_one(x, keys[i], values[i], ring, rotary)
            new_keys.append(k)
            new_values.append(v)
        logits = self.lm_head(self.ln_f(x))[:, -1, :]  # (B, V)
        return logits, torch.stack(new_keys), torch.stack(new_values)


# ==============================================================================================
# Moving a trained model between the two attention classes


def convert_attention_weights(weights: dict, config: GPTConfig, to: str) -> dict:
    """The same model's tensors laid out for the other attention class ("heads" or "fast").

    Works on any dict keyed by parameter name whose tensors have the parameters' shapes: weights,
    and Adam's moment estimates too (concatenating and splitting rows is a permutation, so it
    commutes with Adam's elementwise arithmetic). Keys that are not attention weights pass through.
    """
    if to not in ATTENTION_CLASSES:
        raise ValueError(f"attention must be one of {', '.join(ATTENTION_CLASSES)}, got {to!r}")
    converted = dict(weights)
    C, H = config.n_embd, config.n_head
    for layer in range(config.n_layer):
        prefix = f"blocks.{layer}.attn."
        for kind in ("weight", "bias"):  # biases (GPT-2's qkv_bias) are stacked the same way as rows
            head_keys = [[f"{prefix}heads.{h}.{part}.{kind}" for h in range(H)] for part in ("query", "key", "value")]
            if to == "fast" and head_keys[0][0] in converted:
                # rows [q of every head, k of every head, v of every head]: (3C, C)
                converted[f"{prefix}qkv.{kind}"] = torch.cat([converted.pop(key) for part in head_keys for key in part])
            elif to == "heads" and f"{prefix}qkv.{kind}" in converted:
                rows = converted.pop(f"{prefix}qkv.{kind}").split(C // H)  # 3H pieces of (hs, C) or (hs,)
                for key, piece in zip((key for part in head_keys for key in part), rows):
                    converted[key] = piece.clone()
    return converted


# ==============================================================================================
# CPU speed tricks: the same functions as torch's, cheaper on a CPU (tests prove them equal)


def dropout_mask(shape, p, device):
    """A bool mask, True with probability 1 - p (to 1/65536), drawn two elements per 32-bit random
    number: torch's CPU dropout draws a whole float per element, and at the lecture's shape those
    draws (mostly the attention weights' B x H x T x T) are a sixth of a training step."""
    count = math.prod(shape)
    bits = torch.randint(-2**31, 2**31 - 1, ((count + 1) // 2,), dtype=torch.int32, device=device)
    halves = bits.view(torch.int16)[:count].view(shape)  # uniform over -32768 .. 32767
    return halves >= round(p * 65536) - 32768


class FastDropout(nn.Module):
    """nn.Dropout with dropout_mask on the CPU (the same keep probability, a quarter of the random
    draws); elsewhere, and outside training, exactly nn.Dropout."""

    def __init__(self, p):
        super().__init__()
        self.p = p

    def forward(self, x):
        if not self.training or self.p == 0:
            return x
        if x.device.type != "cpu":
            return F.dropout(x, self.p, self.training)
        return (x * dropout_mask(x.shape, self.p, x.device)).mul_(1.0 / (1.0 - self.p))


# ==============================================================================================
# Training entry point: python gpt_final_version.py [--name=value ...]


def main(argv=None):
    """Parse options, build (or resume) a GPT and train it; returns the training result."""
    from gptlib import classify, train  # here, not at the top: importing the model loads no training machinery

    if classify.asked_for(argv or []):  # --task=classify: a head that labels texts (docs/classify.md)
        return classify.train_from_command_line(argv, GPT, convert_attention_weights)
    return train.train_from_command_line(argv or [], model_class=GPT, kind="gpt",
                                         usage="usage: python gpt_final_version.py [--name=value ...]",
                                         convert_weights=convert_attention_weights)


if __name__ == "__main__":
    run_cli(main)
