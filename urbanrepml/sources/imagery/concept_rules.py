"""Concepts of aerial chips derived from their own bands by documented spectral rules.

For a 4-band chip (R, G, B, NIR; NAIP's order), per pixel (reflectance-like values in [0, 1]):

- NDVI = (NIR - R) / (NIR + R)  (vegetation), NDWI = (G - NIR) / (G + NIR)  (McFeeters' water index);
- a pixel is water when NDWI > :data:`WATER_NDWI` (0.2).

With ``w`` the chip's share of water pixels and ``v`` its mean NDVI, the first rule that holds names it:

=======================  ==============  ===========================================
meta concept             parent          rule
=======================  ==============  ===========================================
``open_water``           ``water``       w >= 0.5
``wetland_margin``       ``water``       0.1 <= w < 0.5
``dense_crop``           ``vegetation``  v >= 0.3
``sparse_vegetation``    ``vegetation``  0.1 <= v < 0.3
``bare_field``           ``bare``        otherwise (v < 0.1)
=======================  ==============  ===========================================

Nodata pixels (0 in every band) are ignored.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from urbanrepml.errors import UrbanReprError
from urbanrepml.images import parse_window

WATER_NDWI = 0.2
OPEN_WATER_SHARE = 0.5
WETLAND_SHARE = 0.1
DENSE_NDVI = 0.3
SPARSE_NDVI = 0.1
RULES = (
    ("open_water", "water", "w >= 0.5", "open water: most pixels have NDWI above 0.2"),
    ("wetland_margin", "water", "0.1 <= w < 0.5", "wetland margin: a prairie pothole shore, some standing water"),
    ("dense_crop", "vegetation", "v >= 0.3", "dense crop or grass: high NDVI, green and growing"),
    ("sparse_vegetation", "vegetation", "0.1 <= v < 0.3", "sparse vegetation: thin cover or senescent crop"),
    ("bare_field", "bare", "v < 0.1", "bare field: tilled soil or harvested stubble, low NDVI"),
)
PARENT = {m: p for m, p, _, _ in RULES}
NOTES = {m: n for m, _, _, n in RULES}


def spectral_indices(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(4, H, W)`` uint8 bands -> (NDVI, NDWI, valid mask)."""
    if pixels.shape[0] < 4:
        raise UrbanReprError(f"spectral concept rules need 4 bands (R, G, B, NIR), got {pixels.shape[0]}")
    r, g, _, n = (pixels[i].astype(np.float32) / 255.0 for i in range(4))
    valid = pixels[:4].max(axis=0) > 0
    ndvi = (n - r) / np.maximum(n + r, 1e-6)
    ndwi = (g - n) / np.maximum(g + n, 1e-6)
    return ndvi, ndwi, valid


def classify(water_share: np.ndarray, mean_ndvi: np.ndarray) -> np.ndarray:
    """Meta concept of each chip from its water share ``w`` and mean NDVI ``v`` (the table above)."""
    w, v = np.asarray(water_share), np.asarray(mean_ndvi)
    return np.select([w >= OPEN_WATER_SHARE, w >= WETLAND_SHARE, v >= DENSE_NDVI, v >= SPARSE_NDVI],
                     ["open_water", "wetland_margin", "dense_crop", "sparse_vegetation"], "bare_field").astype(object)


def chip_concepts(frame: pd.DataFrame, root=None) -> pd.DataFrame:
    """Per chip of an index frame (``path`` + ``window``): ``water_share``, ``mean_ndvi``, ``meta_concept``, ``parent_concept``.

    Each scene is read once.
    """
    import rasterio

    from urbanrepml.images import resolve_paths

    out = pd.DataFrame(index=frame.index, columns=["water_share", "mean_ndvi"], dtype=np.float64)
    paths = np.asarray(resolve_paths(frame["path"].tolist(), root), dtype=object)
    for path in pd.unique(paths):
        sel = np.flatnonzero(paths == path)
        with rasterio.open(path) as src:
            pixels = src.read()
        ndvi, ndwi, valid = spectral_indices(pixels)
        water = (ndwi > WATER_NDWI) & valid
        for i in sel:
            c, r, w, h = parse_window(frame["window"].iloc[i], where=str(frame.index[i]))
            s = (slice(r, r + h), slice(c, c + w))
            ok = valid[s]
            n = max(int(ok.sum()), 1)
            out.iloc[i] = (float(water[s].sum()) / n, float(ndvi[s][ok].mean()) if ok.any() else 0.0)
    out["meta_concept"] = classify(out["water_share"].to_numpy(), out["mean_ndvi"].to_numpy())
    out["parent_concept"] = out["meta_concept"].map(PARENT)
    return out
