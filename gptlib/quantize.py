"""int8 weights for decoding on a CPU (`--dtype=int8` in model_handler.py and serve.py).

Decoding one token reads every weight once, so at batch 1 a 135M-parameter model is bound by
memory: 540 MB of float32 a token. bfloat16 halves the bytes, but PyTorch's one-row bfloat16
matmul on the CPU runs slower than float32 (docs/speed.md); its int8 weight-only matmul
(torch._weight_int8pack_mm, as gpt-fast and torchao use it) reads a quarter of the bytes and is
faster here: 2.8x for SmolLM2's 49,152 x 576 output layer at one row, 1.5x for its 1,536 x 576
layers, up to 2x slower than float32 for a 256-token prompt, which is read once.

Each linear layer's weight becomes int8 with one scale per output row (the row's largest |w| is
127), and the layer multiplies bfloat16 activations by it; everything else (embeddings, norms,
attention, the residual stream) stays float32. It is an approximation, as llama.cpp's Q8 files
are: tests/test_quantize.py bounds its loss against float32's. The checkpoint is not touched.
"""
from __future__ import annotations

import torch
from torch import nn

from gptlib.errors import UserError


class Int8Linear(nn.Module):
    """nn.Linear with its weight as int8 rows and a bfloat16 scale per row."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        weight = linear.weight.detach().float()
        scale = weight.abs().amax(dim=1).clamp(min=1e-12) / 127
        self.register_buffer("weight_int8", (weight / scale[:, None]).round().clamp(-127, 127).to(torch.int8))
        self.register_buffer("scale", scale.to(torch.bfloat16))
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().float(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1]).to(torch.bfloat16).contiguous()
        out = torch._weight_int8pack_mm(rows, self.weight_int8, self.scale).to(x.dtype)
        out = out.reshape(*x.shape[:-1], out.shape[-1])
        return out if self.bias is None else out + self.bias


def quantize_int8(model: nn.Module, device_type: str) -> int:
    """Replace every nn.Linear of `model` (in place) by an Int8Linear; the number replaced."""
    if device_type != "cpu":
        raise UserError(f"--dtype=int8 is for decoding on a CPU; on {device_type} use float32 or bfloat16.")
    model.float()
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear):
                setattr(parent, name, Int8Linear(child))
                replaced += 1
    return replaced


def is_quantized(model: nn.Module) -> bool:
    return any(isinstance(module, Int8Linear) for module in model.modules())
