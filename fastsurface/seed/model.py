"""The seed article's network, with the module names its code relies on."""

from __future__ import annotations

import torch
from torch import nn


class ANN(nn.Module):
    """``Linear(input_size, N) -> Tanh -> Linear(N, output_size)``, no biases.

    The layers live in ``self.net`` (an ``nn.Sequential``) as ``Layer_1``, ``Tanh``
    and ``Layer_2``, as in the article. With ``N = 1`` the model has two weights,
    ``w1 = net.Layer_1.weight[0, 0]`` and ``w2 = net.Layer_2.weight[0, 0]``, and
    predicts ``w2 * tanh(w1 * x)``.

    Input shape ``(B, input_size)``, output shape ``(B, output_size)``.

    >>> sum(p.numel() for p in ANN(1, 1, 1).parameters())
    2
    """

    def __init__(self, input_size: int, N: int, output_size: int) -> None:  # noqa: N803
        super().__init__()
        self.net = nn.Sequential()
        self.net.add_module("Layer_1", nn.Linear(input_size, N, bias=False))
        self.net.add_module("Tanh", nn.Tanh())
        self.net.add_module("Layer_2", nn.Linear(N, output_size, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
