"""The ring of keys and values a decode step reads (GPT.forward_one): per layer and row, W slots,
position p in slot p % W. A reply's ring starts small and widens as it grows, up to block_size;
until a reply is that long nothing wraps, so a small ring holds what the full one would, slot for
slot (gptlib/engine.py's decoders keep them)."""
from __future__ import annotations

import torch

from gpt_final_version import KVCache


def cache_shape(config, rows: int, slots: int | None = None) -> tuple[int, ...]:
    """(L, rows, Hkv, W, hs): a ring of keys (or values) for `rows` rows, W slots each (block_size
    unless `slots` says fewer)."""
    return (config.n_layer, rows, config.kv_heads, slots or config.block_size, config.head_size)


RING_FIRST = 16  # the fewest slots a reply's ring starts with


def ring_slots(positions: int, config) -> int:
    """Slots for a ring that holds `positions` positions: a power of two from RING_FIRST, at most
    block_size. Until a reply is block_size long nothing wraps, so the smaller ring holds what the
    full one would, slot for slot, and a step reads less: a compiled step reads every slot (a
    2,048-slot ring of SmolLM2's 30 layers is 94 MB a token, as much as its int8 weights)."""
    slots = RING_FIRST
    while slots < positions:
        slots *= 2
    return min(slots, config.block_size)


def with_room(keys: torch.Tensor, values: torch.Tensor, position: int, config) -> tuple[torch.Tensor, torch.Tensor]:
    """The rings (L, rows, H, W, hs), widened (copied into the first W of twice the slots or more,
    at most block_size) where `position` would wrap them; else as they are."""
    slots = keys.shape[3]
    if position < slots or slots == config.block_size:
        return keys, values
    wider = ring_slots(position + 1, config)
    rings = [ring.new_zeros((*ring.shape[:3], wider, ring.shape[4])) for ring in (keys, values)]
    rings[0][:, :, :, :slots], rings[1][:, :, :, :slots] = keys, values
    return rings[0], rings[1]


def ring_from_cache(cache: KVCache, config, rows: int, slots: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A KVCache's keys and values as the ring a DecodeStep reads: (L, rows, H, W, hs) each."""
    first = cache.layers[0].k
    shape = cache_shape(config, rows, slots)
    keys, values = first.new_zeros(shape), first.new_zeros(shape)
    for i, layer in enumerate(cache.layers):
        filled = min(layer.length, shape[3])
        keys[i, :, :, :filled] = layer.k[:, :, :filled]
        values[i, :, :, :filled] = layer.v[:, :, :filled]
    return keys, values
