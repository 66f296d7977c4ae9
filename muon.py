"""Muon for the hidden matrices, AdamW for everything else: one torch optimizer (--optimizer=muon).

Muon (Keller Jordan et al., 2024; the optimizer of the modded-nanogpt speed records) keeps SGD
momentum for each weight matrix and, instead of stepping along the momentum itself, steps along
the nearest semi-orthogonal matrix to it: U V^T for momentum = U S V^T. Every direction the
gradient cares about then moves by the same amount, so rare but useful directions are not drowned
out by the few largest ones. U V^T is approximated by a few Newton-Schulz iterations, matrix
products only, so it runs wherever a matmul does.

Muon is for the 2-D weights inside the blocks. The token table, the output layer, biases and
LayerNorm gains are not matrices of that kind (an embedding row is looked up, not multiplied), and
they train with AdamW as before. Both kinds live in one optimizer, so the training loop, gradient
scaling, checkpoints and resuming treat it like torch.optim.AdamW.

    python gpt_final_version.py --optimizer=muon --muon_lr=0.02
"""
from __future__ import annotations

import torch

# Coefficients of the quintic iteration x -> a x + b x^3 + c x^5, chosen (Jordan, 2024) to push
# every singular value in (0, 1] towards 1 within five steps; they land near 1 (about 0.7 to 1.2),
# not exactly on it, which is all the update needs.
NEWTON_SCHULZ = (3.4445, -4.7750, 2.0315)


def orthogonalize(matrix: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """About U V^T for matrix = U S V^T: the same singular vectors, singular values near 1."""
    a, b, c = NEWTON_SCHULZ
    x = matrix / (matrix.norm() + 1e-7)  # singular values now at most 1, where the iteration works
    tall = x.size(0) > x.size(1)
    if tall:  # iterate on the wide side: the (rows x rows) products are then the small ones
        x = x.T
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if tall else x


class Muon(torch.optim.Optimizer):
    """Groups with muon=True step by orthogonalized Nesterov momentum; the others step by AdamW.

    A Muon update has every singular value near 1, whatever the gradient's size; it is scaled by
    sqrt(max(1, rows / cols)) so that tall and wide matrices change their outputs alike.
    """

    def __init__(self, groups, lr=2e-2, momentum=0.95, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.0):
        defaults = dict(lr=lr, momentum=momentum, betas=betas, eps=eps, weight_decay=weight_decay, muon=False)
        super().__init__(groups, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if group["muon"]:
                    self._muon_step(p, group)
                else:
                    self._adamw_step(p, group)
        return loss

    def _muon_step(self, p, group) -> None:
        state = self.state[p]
        if not state:
            state["momentum_buffer"] = torch.zeros_like(p)
        buffer = state["momentum_buffer"]
        buffer.mul_(group["momentum"]).add_(p.grad)
        nesterov = p.grad.add(buffer, alpha=group["momentum"])  # look one momentum step ahead
        update = orthogonalize(nesterov.view(p.size(0), -1)).view_as(p)
        p.mul_(1 - group["lr"] * group["weight_decay"])
        p.add_(update, alpha=-group["lr"] * max(1.0, p.size(0) / p[0].numel()) ** 0.5)

    def _adamw_step(self, p, group) -> None:
        """torch.optim.AdamW's arithmetic (tests/test_muon.py compares the two)."""
        state = self.state[p]
        if not state:
            state["step"] = torch.zeros(())
            state["exp_avg"] = torch.zeros_like(p)
            state["exp_avg_sq"] = torch.zeros_like(p)
        state["step"] += 1
        step, (beta1, beta2) = state["step"].item(), group["betas"]
        state["exp_avg"].lerp_(p.grad, 1 - beta1)
        state["exp_avg_sq"].mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
        p.mul_(1 - group["lr"] * group["weight_decay"])
        denominator = (state["exp_avg_sq"] / (1 - beta2 ** step)).sqrt_().add_(group["eps"])
        p.addcdiv_(state["exp_avg"], denominator, value=-group["lr"] / (1 - beta1 ** step))


def is_hidden_matrix(name: str, p: torch.Tensor) -> bool:
    """The weights Muon is for: 2-D and inside a block (not the token table or the output layer)."""
    return p.dim() == 2 and name.startswith("blocks.")
