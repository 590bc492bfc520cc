"""A small CNN trained from scratch (or fixed random weights), as a frozen encoder.

It is :class:`urbanrepml.models.cnn.BuiltinCNN` (four strided 3x3 conv blocks); the pooled vector
is its output (the mean of the last feature map) and the tokens are that feature map.

Shapes:
    input: ``(N, 3, S, S)`` (``S = input_size``, default 64).
    output: pooled ``(N, embed_dim)`` and tokens ``(N, ceil(S/16)^2, embed_dim)``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from urbanrepml.errors import UrbanReprError
from urbanrepml.models.cnn import builtin_cnn
from urbanrepml.models.encoders.base import ImageEncoder


class SmallCNN(ImageEncoder):
    """Frozen :class:`~urbanrepml.models.cnn.BuiltinCNN` (see the module docstring).

    Args:
        weights: A state-dict file of a ``BuiltinCNN`` (or of this encoder); None: random weights from ``seed``.
        input_size: Input side in pixels (None: 64).
        embed_dim: Channels of the last layer (the pooled size).
        seed: Seed of the random initialisation (the global RNG is left alone).
    """

    name = "small_cnn"

    def __init__(self, weights: str | None = None, input_size: int | None = None, embed_dim: int = 64, seed: int = 0):
        super().__init__()
        self.input_size = int(input_size or 64)
        self.embed_dim = self.token_dim = embed_dim
        self.cnn = builtin_cnn(embed_dim, seed)
        if weights:
            path = Path(weights).expanduser()
            if not path.is_file():
                raise UrbanReprError(f"encoder small_cnn: weights file {path} does not exist")
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
                state = {k.removeprefix("cnn."): v for k, v in state.items()}
                self.cnn.load_state_dict(state)
            except Exception as exc:  # noqa: BLE001 - torch raises many types
                raise UrbanReprError(f"encoder small_cnn: {path} is not a state dict of this CNN with embed_dim "
                                     f"{embed_dim} ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})") from None
        self.freeze()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(N, 3, S, S)`` -> ``(pooled (N, D), tokens (N, T, D))``."""
        fmap = self.cnn.features(x)
        return fmap.mean(dim=(2, 3)), fmap.flatten(2).transpose(1, 2)
