"""DINOv2 from a local model folder (``save_pretrained`` layout) through ``transformers``, as a frozen encoder.

Nothing is downloaded: the folder must hold ``config.json`` with ``model_type`` ``dinov2`` (or
``dinov2_with_registers``) and the weights (``model.safetensors`` or ``pytorch_model.bin``).

Shapes:
    input: ``(N, 3, S, S)`` (``S = input_size``, default 224, a multiple of the patch size),
    ImageNet-normalised.
    output: pooled ``(N, hidden)``: the layer-normed CLS token; tokens ``(N, (S/patch)^2, hidden)``:
    the patch tokens (register tokens left out).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from urbanrepml.errors import UrbanReprError
from urbanrepml.models.encoders.base import ImageEncoder

MODEL_TYPES = ("dinov2", "dinov2_with_registers")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json", "pytorch_model.bin.index.json")


def check_model_folder(folder: Path) -> dict:
    """The folder's ``config.json`` when it is a DINOv2 model folder; else one clear error."""
    if not folder.is_dir():
        raise UrbanReprError(f"encoder dinov2: {folder} is not a folder; pass a DINOv2 model folder saved with save_pretrained")
    config_file = folder / "config.json"
    try:
        config = json.loads(config_file.read_text())
    except FileNotFoundError:
        raise UrbanReprError(f"encoder dinov2: {folder} is not a model folder (no config.json); "
                             "pass a DINOv2 folder saved with save_pretrained") from None
    except (ValueError, UnicodeDecodeError):
        raise UrbanReprError(f"encoder dinov2: {config_file} is not valid JSON; pass a DINOv2 model folder") from None
    if not isinstance(config, dict) or config.get("model_type") not in MODEL_TYPES:
        found = config.get("model_type") if isinstance(config, dict) else None
        raise UrbanReprError(f"encoder dinov2: {folder} holds a {found!r} model, not DINOv2 (model_type {' or '.join(MODEL_TYPES)})")
    if not any((folder / w).is_file() for w in WEIGHT_FILES):
        raise UrbanReprError(f"encoder dinov2: {folder} has a config but no weights ({' or '.join(WEIGHT_FILES[:2])})")
    return config


class DinoV2(ImageEncoder):
    """A DINOv2 backbone loaded from a local folder (see the module docstring).

    Args:
        weights: The model folder.
        input_size: Input side in pixels (None: 224); must be a multiple of the patch size.
    """

    name = "dinov2"

    def __init__(self, weights: str | None = None, input_size: int | None = None):
        super().__init__()
        if not weights:
            raise UrbanReprError("encoder dinov2 needs weights: the folder of a DINOv2 model saved with save_pretrained")
        folder = Path(weights).expanduser()
        config = check_model_folder(folder)
        try:
            import transformers
        except ImportError:
            raise UrbanReprError("encoder dinov2 needs the 'transformers' package; pip install transformers") from None
        patch = int(config.get("patch_size", 14))
        self.input_size = int(input_size or 224)
        if self.input_size % patch:
            raise UrbanReprError(f"encoder dinov2: input_size {self.input_size} is not a multiple of the patch size {patch}; "
                                 f"use e.g. {patch * (self.input_size // patch or 1)}")
        try:
            self.net = transformers.AutoModel.from_pretrained(str(folder), local_files_only=True)
        except Exception as exc:  # noqa: BLE001 - transformers raises many types
            raise UrbanReprError(f"encoder dinov2: cannot load the model in {folder} "
                                 f"({type(exc).__name__}: {str(exc).splitlines()[0][:160]})") from None
        self.embed_dim = self.token_dim = int(self.net.config.hidden_size)
        self.skip_tokens = 1 + int(getattr(self.net.config, "num_register_tokens", 0) or 0)
        self.freeze()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(N, 3, S, S)`` -> ``(pooled CLS (N, D), patch tokens (N, T, D))``."""
        out = self.net(pixel_values=x)
        return out.pooler_output, out.last_hidden_state[:, self.skip_tokens:]
