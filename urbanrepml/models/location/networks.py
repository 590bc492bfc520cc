"""The networks behind a positional encoding: SIREN (sine activations) and a ReLU MLP.

Both map (N, in_dim) -> (N, out_dim) through ``layers`` hidden layers of width ``hidden`` and
a final linear layer. SIREN (Sitzmann et al., 2020) follows SatCLIP's ``SirenNet``: the first
layer is scaled by ``w0_initial``, the others by ``w0``, with SIREN's uniform initialisation.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from urbanrepml.errors import UrbanReprError

NETWORKS = ("siren", "mlp")


class SineLayer(nn.Module):
    """``sin(w0 * (x W^T + b))`` with SIREN's initialisation.

    Shapes:
        ``x`` (N, in_dim) -> (N, out_dim).
    """

    def __init__(self, in_dim: int, out_dim: int, w0: float = 1.0, first: bool = False):
        super().__init__()
        self.w0 = float(w0)
        self.linear = nn.Linear(in_dim, out_dim)
        bound = 1.0 / in_dim if first else math.sqrt(6.0 / in_dim) / self.w0
        with torch.no_grad():
            self.linear.weight.uniform_(-bound, bound)
            self.linear.bias.uniform_(-bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        return torch.sin(self.w0 * self.linear(x))


class Siren(nn.Module):
    """SIREN: ``layers`` sine layers of width ``hidden`` then a linear output layer.

    Shapes:
        ``x`` (N, in_dim) -> (N, out_dim).
    """

    def __init__(self, in_dim: int, hidden: int, layers: int, out_dim: int, w0: float = 1.0, w0_initial: float = 30.0):
        super().__init__()
        _check(hidden, layers, out_dim)
        dims = [in_dim] + [hidden] * layers
        self.body = nn.ModuleList([SineLayer(dims[i], dims[i + 1], w0_initial if i == 0 else w0, first=i == 0)
                                   for i in range(layers)])
        self.head = nn.Linear(dims[-1], out_dim)

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.body:
            x = layer(x)
        return self.head(x)


class MLP(nn.Module):
    """``layers`` ReLU layers of width ``hidden`` then a linear output layer.

    Shapes:
        ``x`` (N, in_dim) -> (N, out_dim).
    """

    def __init__(self, in_dim: int, hidden: int, layers: int, out_dim: int):
        super().__init__()
        _check(hidden, layers, out_dim)
        dims = [in_dim] + [hidden] * layers
        self.body = nn.ModuleList([nn.Linear(dims[i], dims[i + 1]) for i in range(layers)])
        self.head = nn.Linear(dims[-1], out_dim)

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.body:
            x = torch.relu(layer(x))
        return self.head(x)


def _check(hidden: int, layers: int, out_dim: int) -> None:
    if int(hidden) < 1 or int(layers) < 0 or int(out_dim) < 1:
        raise UrbanReprError(f"hidden and out_dim must be >= 1 and layers >= 0, got {hidden}, {out_dim} and {layers}")


def make_network(kind: str, in_dim: int, hidden: int, layers: int, out_dim: int, w0_initial: float = 30.0) -> nn.Module:
    """``siren`` or ``mlp``."""
    if kind == "siren":
        return Siren(in_dim, hidden, layers, out_dim, w0_initial=w0_initial)
    if kind == "mlp":
        return MLP(in_dim, hidden, layers, out_dim)
    raise UrbanReprError(f"network must be one of {', '.join(NETWORKS)}, got {kind!r}")
