"""The frozen image encoder interface: a pooled vector and patch tokens per image, and a weights digest.

Shapes:
    input: ``(N, 3, S, S)`` float32, normalised with the encoder's ``mean`` / ``std``
    (:func:`urbanrepml.models.encoders.preprocess.prepare_batch` does it), ``S = input_size``.
    output: ``pooled (N, embed_dim)`` and ``tokens (N, T, token_dim)`` (``T`` patches or
    feature-map positions, row-major).
"""

from __future__ import annotations

import hashlib

import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def state_dict_digest(module: nn.Module) -> str:
    """SHA-256 of a module's state dict: every tensor's name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}|{t.dtype}|{tuple(tensor.shape)}\n".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


class ImageEncoder(nn.Module):
    """Base of the frozen encoders (see the module docstring for shapes).

    Attributes:
        name: Registry name (``efficientnet_lite0``).
        embed_dim: Size of the pooled vector.
        token_dim: Size of each token.
        input_size: Side in pixels of the square input.
        mean: Per-channel mean the input is normalised with (on [0, 1] RGB).
        std: Per-channel standard deviation.
    """

    name: str = ""
    embed_dim: int = 0
    token_dim: int = 0
    input_size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __init__(self) -> None:
        super().__init__()
        self._digest: str | None = None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # pragma: no cover - abstract
        """``(N, 3, S, S)`` -> ``(pooled (N, D), tokens (N, T, C))``."""
        raise NotImplementedError

    @property
    def weights_digest(self) -> str:
        """SHA-256 of the weights (:func:`state_dict_digest`), computed once."""
        if self._digest is None:
            self._digest = state_dict_digest(self)
        return self._digest

    def freeze(self) -> ImageEncoder:
        """Eval mode, no gradients; returns self."""
        self.eval()
        for p in self.parameters():
            p.requires_grad_(False)
        return self
