"""Pixels -> encoder input, in one place: bands to RGB, scale to [0, 1], resize and crop, normalise.

- Bands: three or more -> the first three (NAIP's R, G, B; NIR and alpha dropped); one band
  -> repeated to RGB; two bands -> the first repeated. ``bands`` (three 0-based indices) picks
  others instead, e.g. ``(3, 0, 1)``: the colour-infrared composite (NIR, red, green) of
  R, G, B, NIR imagery; an image without those bands is an error.
- Scale: ``uint8`` / 255; other dtypes stretched per image between its 2nd and 98th percentile.
- Size: the shorter side resized to ``size`` (bilinear, antialiased), then the centre
  ``size`` x ``size`` crop (square chips are only resized).
- Normalise: ``(x - mean) / std`` per channel, with the encoder's mean and std.

Shapes:
    input: one ``(H, W, bands)`` array (any dtype); output ``(3, size, size)`` float32 tensor.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F


def parse_bands(text: str) -> tuple[int, int, int] | None:
    """``"1,2,3"`` (1-based, as GDAL counts) -> 0-based indices; the first three bands -> None."""
    try:
        picked = tuple(int(v) for v in str(text).split(","))
    except ValueError:
        picked = ()
    if len(picked) != 3 or min(picked) < 1:
        raise ValueError(f"bands must be three 1-based band numbers such as 1,2,3 or 4,1,2, got {text!r}")
    return None if picked == (1, 2, 3) else tuple(b - 1 for b in picked)  # type: ignore[return-value]


def to_unit_rgb(image: np.ndarray, bands: Sequence[int] | None = None) -> np.ndarray:
    """``(H, W, bands)`` any dtype -> ``(H, W, 3)`` float32 in [0, 1] (``bands``: see the module docstring)."""
    if image.ndim == 2:
        image = image[:, :, None]
    if bands is not None:
        if max(bands) >= image.shape[2]:
            raise ValueError(f"the image has {image.shape[2]} band(s); bands asks for band {max(bands) + 1}")
        rgb = image[:, :, list(bands)]
    else:
        rgb = image[:, :, :3] if image.shape[2] >= 3 else np.repeat(image[:, :, :1], 3, axis=2)
    if rgb.dtype == np.uint8:
        return rgb.astype(np.float32) / 255.0
    vals = rgb.astype(np.float32)
    lo, hi = np.percentile(vals, [2, 98]) if vals.size else (0.0, 1.0)
    return np.clip((vals - lo) / max(float(hi - lo), 1e-9), 0.0, 1.0).astype(np.float32)


def prepare(image: np.ndarray, size: int, mean: Sequence[float], std: Sequence[float],
            bands: Sequence[int] | None = None) -> torch.Tensor:
    """One ``(H, W, bands)`` image -> ``(3, size, size)`` normalised float32 tensor (see the module docstring)."""
    x = torch.from_numpy(np.ascontiguousarray(to_unit_rgb(image, bands))).permute(2, 0, 1)[None]
    h, w = x.shape[2], x.shape[3]
    if (h, w) != (size, size):
        scale = size / min(h, w)
        nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=nh < h or nw < w)
        top, left = (nh - size) // 2, (nw - size) // 2
        x = x[:, :, top:top + size, left:left + size]
    m = torch.tensor(mean, dtype=torch.float32)[None, :, None, None]
    s = torch.tensor(std, dtype=torch.float32)[None, :, None, None]
    return ((x - m) / s)[0].contiguous()


def prepare_batch(images: Sequence[np.ndarray], size: int, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Several images -> ``(N, 3, size, size)``."""
    return torch.stack([prepare(im, size, mean, std) for im in images])
