"""Many small MLPs evaluated as one: weights stacked along a leading "scenario" axis.

Scenario ``c`` owns ``weights[l][c, :in_c, :out_c]``; everything outside that block is zero. With
zero-padded inputs, the padded units of every layer are exactly zero (leaky-ReLU(0) = 0), so they
neither change a scenario's outputs nor receive gradient: padding cannot leak between scenarios or
into the loss, and stacking C scenarios computes exactly what C separate MLPs compute.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def pad_stack(blocks: Sequence[torch.Tensor], shape: Sequence[int]) -> torch.Tensor:
    """Stack tensors of different sizes into ``(len(blocks), *shape)``, zero-padding each block."""
    out = blocks[0].new_zeros((len(blocks), *shape))
    for index, block in enumerate(blocks):
        out[(index, *(slice(0, n) for n in block.shape))] = block
    return out


def mlp_forward(
    inputs: torch.Tensor,
    weights: Sequence[torch.Tensor],
    biases: Sequence[torch.Tensor] | None,
    negative_slope: float,
) -> torch.Tensor:
    """``(C, N, in) -> (C, N, out)``: batched linear layers with leaky-ReLU between them."""
    hidden = inputs
    last = len(weights) - 1
    for index, weight in enumerate(weights):
        if biases is None:
            hidden = torch.bmm(hidden, weight)
        else:
            hidden = torch.baddbmm(biases[index], hidden, weight)
        if index < last:
            hidden = F.leaky_relu(hidden, negative_slope)
    return hidden
